"""Greedy or sampled? How much a run's GRPO models moved xLAM validation, read both ways, on the tuning rows.

    OMP_NUM_THREADS=2 python benchmarks/sampled_gain.py --run DIR --start 02_student_ckd \
        --models 03_sim_seed0,03_binary_seed0 --k 4 --json runs/sampled_gain.json

Notebook 03 scores its GRPO models greedily (the policy's favourite answer) and, since the sampled reading was
chosen with this script, also by sampling ``--k`` answers per question at the training temperature
(evaluate.sample_tool_calls: the expected reward GRPO's objective raises). This script reads the saved models of a
run folder (``DIR/models/<name>``: the start and the trained ones) and prints, for each trained model, both readings'
paired gains over the start with 95% bootstrap intervals over the questions (scoreboard.gain_rows). It trains nothing.

Which rows (``--rows``): by default the *tuning* rows, the xLAM validation rows outside notebook 03's 48-row held-out
sample, so a reading chosen here is not chosen on the rows the notebook reports ("eval" scores that sample, to
reproduce a notebook figure; never choose on it). Completions are cached in ``--cache`` (keyed on the weights).
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="a run folder holding models/<name> for --start and --models")
    ap.add_argument("--start", default="02_student_ckd", help="the model GRPO started from (a name under DIR/models)")
    ap.add_argument("--models", default="03_sim_seed0,03_binary_seed0", help="comma-separated trained models under DIR/models")
    ap.add_argument("--rows", choices=["tune", "eval"], default="tune",
                    help="tune: the validation rows outside notebook 03's held-out sample (default); eval: that sample")
    ap.add_argument("--n-eval", type=int, default=48, help="notebook 03's held-out sample size (N_EVAL)")
    ap.add_argument("--k", type=int, default=4, help="samples per question (notebook 03's SAMPLED_EVAL)")
    ap.add_argument("--temperature", type=float, default=1.0, help="notebook 03's TEMPERATURE")
    ap.add_argument("--max-new-tokens", type=int, default=128, help="as the greedy scoring of notebooks 02, 03 and 05")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=Path("runs/sampled_gain/generations.jsonl"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.k < 1:
        ap.error("--k must be at least 1")

    from helpers import data, evaluate, models, runtime, scoreboard, sft

    rt = runtime.setup("cpu", seed=args.seed)
    desc_chars = sft.TOOL_DESC_CHARS[rt.profile]
    tok = models.load_tokenizer(rt.models["policy"])
    _, val_rows = data.xlam_split(data.load_xlam(), seed=0)
    held_out, tuning = evaluate.held_out_split(val_rows, args.n_eval, seed=0)   # notebook 03's eval_rows, and the rest
    rows = held_out if args.rows == "eval" else tuning
    if not rows:
        ap.error(f"no {args.rows} rows: --n-eval {args.n_eval} takes all {len(val_rows)} validation rows")
    names = [args.start] + [n for n in args.models.split(",") if n]
    missing = [n for n in names if not (args.run / "models" / n).is_dir()]
    if missing:
        raise SystemExit(f"not in {args.run / 'models'}: {', '.join(missing)}")
    gen = dict(max_new_tokens=args.max_new_tokens, batch_size=8, cache_path=str(args.cache))

    scored, seconds = {}, {}
    for name in names:
        t0 = time.perf_counter()
        m = models.load_causal_lm(str(args.run / "models" / name), dtype=rt.dtype, device=rt.device).eval()
        greedy = evaluate.evaluate_tool_calls(m, tok, rows, desc_chars=desc_chars, model_tag=f"sampled_gain:{name}", **gen)[0]
        sampled = evaluate.sample_tool_calls(m, tok, rows, k=args.k, temperature=args.temperature, seed=args.seed,
                                             desc_chars=desc_chars, model_tag=f"sampled_gain:{name}", **gen)[0]
        scored[name], seconds[name] = {"greedy": greedy, "sampled": sampled}, round(time.perf_counter() - t0, 1)
        del m
        print(f"{name}: scored in {seconds[name]} s", flush=True)

    # arguments per call: the reference answers' against each model's, greedy and sampled (a policy that learnt to
    # leave arguments out shows it here first: exact match counts it only where the reference has more)
    texts = {"greedy": lambda recs: [r["completion"] for r in recs], "sampled": lambda recs: [t for r in recs for t in r["completions"]]}
    args_per_call = {"reference": evaluate.arguments_per_call([r["ground_truth"] for r in rows]),
                     **{n: {how: evaluate.completion_arguments_per_call(texts[how](recs))
                            for how, recs in s.items()} for n, s in scored.items()}}
    result = {"run": str(args.run), "rows": args.rows, "n_rows": len(rows), "k": args.k, "temperature": args.temperature,
              "max_new_tokens": args.max_new_tokens, "seed": args.seed, "seconds": seconds, "args_per_call": args_per_call,
              "means": {n: {how: evaluate.summarize_tool_calls(r) for how, r in s.items()} for n, s in scored.items()},
              "gains": [row for name in names[1:] for how in ("greedy", "sampled")
                        for row in scoreboard.gain_rows([scored[name][how]], [scored[args.start][how]], model=name, reading=how)]}
    for g in result["gains"]:
        print(f"{g['model']:>20} {g['reading']:>7} {g['metric']:>12}: {g['before']:.3f} -> {g['after']:.3f}  "
              f"gain {g['gain']:+.3f} {g['gain_95ci']}")
    print("arguments per call:", json.dumps({k: v if k == "reference" else {h: None if x is None else round(x, 3) for h, x in v.items()}
                                              for k, v in args_per_call.items()}))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
