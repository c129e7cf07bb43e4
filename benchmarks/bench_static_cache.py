"""Would a static KV cache, or a static cache with torch.compile, make notebook 05's cpu scoring faster?

    python benchmarks/bench_static_cache.py --model DIR/models/02_teacher [--prompts 32] [--repeats 3]

Greedy generation exactly as notebook 05 runs it (models.generate_ids: length-sorted, left-padded batches
of 16, BFCL v3 simple prompts in the json format with descriptions cut to 80 characters, 128 new tokens),
first with transformers' default dynamic cache, then `--repeats` times with each alternative: a static
cache, and a static cache whose forward transformers compiles (CompileConfig, which generate only honours
on CPU when told to). Prints seconds per call and how many completions are token-identical to the
dynamic-cache ones: a faster path that changes greedy answers would change the scores.
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="a saved model folder (default: the cpu policy)")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    args = ap.parse_args()

    from transformers import CompileConfig
    from helpers import data, evaluate, models, runtime
    rt = runtime.setup("cpu", verbose=False)
    tok = models.load_tokenizer(rt.models["policy"])
    model = models.load_causal_lm(args.model or rt.models["policy"], dtype=rt.dtype).eval()
    rows = evaluate.sample_rows(data.load_bfcl("simple"), args.prompts, seed=0)
    contexts = [tok(evaluate.bfcl_prompt(tok, r, "json", 80), add_special_tokens=False)["input_ids"] for r in rows]

    def run(extra):
        plain = model.generate
        if extra:
            model.generate = lambda **kw: plain(**kw, **extra)
        try:
            t0 = time.perf_counter()
            out = models.generate_ids(model, tok, contexts, max_new_tokens=args.max_new_tokens, batch_size=16)
            return out, time.perf_counter() - t0
        finally:
            model.generate = plain

    reference, seconds = run({})
    print(f"{len(contexts)} prompts; dynamic cache: {seconds:.1f} s", flush=True)
    compiled = CompileConfig(mode="default")
    compiled._compile_all_devices = True   # generate compiles on CPU only when asked to
    for name, extra in [("static cache", {"cache_implementation": "static"}),
                        ("static cache + torch.compile", {"cache_implementation": "static", "compile_config": compiled})]:
        for i in range(args.repeats):
            out, seconds = run(extra)
            same = sum(a == b for a, b in zip(reference, out))
            print(f"{name}, call {i + 1}: {seconds:.1f} s, {same}/{len(out)} completions identical", flush=True)


if __name__ == "__main__":
    main()
