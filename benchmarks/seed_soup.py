"""Does the weight average of several SFT seeds beat the seeds themselves? Scored on xLAM validation rows.

    python benchmarks/seed_soup.py DIR/models/02_teacher DIR/models/02_teacher_seed1 DIR/models/02_teacher_seed2

The models can also be checkpoints of one run (``sft_curve.py --save DIR --snapshots 100 125``): their
soup is an average along one trajectory instead of across seeds, and costs no extra training.

Loads each saved full fine-tune, scores it greedily on the xLAM *validation* split (all of it by default:
the 24 rows notebook 02 scores are a subset, and a soup's gain is a few rows), then builds the uniform
soup of all of them (models.load_soup) and scores that. BFCL is not looked at here: the choice to build
a soup is made on these numbers, and notebook 05 scores BFCL once, for every stage.
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="saved full fine-tunes of one start (two or more)")
    ap.add_argument("--n-val", type=int, default=None, help="xLAM validation rows (default: all)")
    ap.add_argument("--desc-chars", type=int, default=80, help="tool descriptions cut to this many characters, as in training")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--cache", default=None, help="a generation cache (JSON lines) to reuse across runs")
    ap.add_argument("--soup-only", action="store_true", help="score the soup alone, not each model in it")
    ap.add_argument("--save-soup", default=None, help="also save the soup here (weights and tokenizer), to score it elsewhere")
    args = ap.parse_args()
    if len(args.models) < 2:
        ap.error("a soup needs at least two models")

    from helpers import data, evaluate, models, runtime
    rt = runtime.setup("cpu", verbose=False)
    tok = models.load_tokenizer(rt.models["policy"])
    _, val = data.xlam_split(data.load_xlam(), seed=0)
    val = evaluate.sample_rows(val, args.n_val, seed=0)
    gen = dict(max_new_tokens=args.max_new_tokens, batch_size=8, cache_path=args.cache)
    keys = ("format_valid", "sim_mean", "exact")
    print(f"{len(val)} xLAM validation rows; {'model':<28} " + " ".join(f"{k:>12}" for k in keys) + "  seconds", flush=True)

    def score(name, model):
        t0 = time.perf_counter()
        _, s = evaluate.evaluate_tool_calls(model.eval(), tok, val, desc_chars=args.desc_chars, **gen)
        print(f"{name:<28} " + " ".join(f"{s[k]:>12.3f}" for k in keys) + f"  {time.perf_counter() - t0:.0f}", flush=True)
        return s

    if not args.soup_only:
        seeds = [score(Path(p).name, models.load_causal_lm(p, dtype=rt.dtype)) for p in args.models]
        print(f"{'mean of the models':<28} " + " ".join(f"{sum(s[k] for s in seeds) / len(seeds):>12.3f}" for k in keys))
    soup = models.load_soup(args.models, dtype=rt.dtype)
    score(f"uniform soup of {len(args.models)}", soup)
    if args.save_soup:
        soup.save_pretrained(args.save_soup)
        tok.save_pretrained(args.save_soup)


if __name__ == "__main__":
    main()
