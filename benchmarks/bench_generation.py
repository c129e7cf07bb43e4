"""Greedy generation speed on cpu, split into prompt (prefill) and per-token (decode) cost, and what
that makes the floor of notebook 05's scoring: the part of the cpu curriculum's hour that no training
knob changes.

    python benchmarks/bench_generation.py [--model PATH_OR_ID] [--prompts 16] [--batch-sizes 1 4 16]

Prompts are BFCL v3 simple questions rendered as notebook 05 renders them (json format, tool
descriptions cut to 80 characters). Decode steps are forced (min_new_tokens) so every row of a batch
runs the same number of steps.
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DECODE_STEPS = 32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="a saved model folder or id (default: the cpu policy)")
    parser.add_argument("--prompts", type=int, default=16, help="BFCL simple prompts per batch (at most)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--eval-prompts", type=int, default=248, help="prompts notebook 05 scores per model (cpu: 224 BFCL + 24 xLAM)")
    parser.add_argument("--mean-new-tokens", type=float, default=100.0,
                        help="steps an average batch of 16 runs in 05 (one looping row holds its batch to the cap of 128)")
    args = parser.parse_args()

    import torch
    from helpers import data, evaluate, models, runtime
    rt = runtime.setup("cpu", verbose=False)
    tok = models.load_tokenizer(rt.models["policy"])
    model = models.load_causal_lm(args.model or rt.models["policy"], dtype=rt.dtype).eval()
    t0 = time.perf_counter()
    models.weights_fingerprint(model)
    print(f"weights fingerprint (the generation cache key): {time.perf_counter() - t0:.2f} s")

    rows = evaluate.sample_rows(data.load_bfcl("simple"), args.prompts, seed=0)
    contexts = [tok(evaluate.bfcl_prompt(tok, r, "json", 80), add_special_tokens=False)["input_ids"] for r in rows]
    pad = tok.pad_token_id
    print(f"{len(contexts)} prompts, {sum(map(len, contexts)) / len(contexts):.0f} tokens on average; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'batch':>5} {'prefill s/prompt':>17} {'decode ms/step':>15} {'decode ms/token':>16}")
    per_step = {}
    for bs in args.batch_sizes:
        chunk = contexts[:bs]
        width = max(map(len, chunk))
        ids = torch.tensor([[pad] * (width - len(c)) + c for c in chunk])
        attn = (torch.arange(width)[None, :] >= torch.tensor([width - len(c) for c in chunk])[:, None]).long()
        kwargs = dict(input_ids=ids, attention_mask=attn, do_sample=False, pad_token_id=pad)
        with torch.no_grad(), runtime.autocast_for(torch.device("cpu")):
            model.generate(**kwargs, max_new_tokens=2)   # warm-up
            t0 = time.perf_counter()
            model.generate(**kwargs, max_new_tokens=1)
            prefill = time.perf_counter() - t0
            t0 = time.perf_counter()
            model.generate(**kwargs, max_new_tokens=DECODE_STEPS + 1, min_new_tokens=DECODE_STEPS + 1)
            decode = (time.perf_counter() - t0 - prefill) / DECODE_STEPS
        per_step[bs] = (prefill / len(chunk), decode)
        print(f"{len(chunk):>5} {prefill / len(chunk):>17.2f} {decode * 1000:>15.1f} {decode * 1000 / len(chunk):>16.1f}")
    bs = max(per_step)
    prefill, decode = per_step[bs]
    batches = -(-args.eval_prompts // bs)
    estimate = args.eval_prompts * prefill + batches * args.mean_new_tokens * decode
    print(f"notebook 05, one model: {args.eval_prompts} prompts in {batches} batches of {bs}, "
          f"~{args.mean_new_tokens:.0f} steps each -> about {estimate:.0f} s "
          f"({args.eval_prompts * prefill:.0f} s prompts, {batches * args.mean_new_tokens * decode:.0f} s decoding)")


if __name__ == "__main__":
    main()
