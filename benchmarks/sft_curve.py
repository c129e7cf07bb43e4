"""How far supervised fine-tuning alone takes the cpu policy on function calling, and at what cost.

    OMP_NUM_THREADS=2 python benchmarks/sft_curve.py --steps 120 --eval-every 30 --json runs/sft_curve.json

Full fine-tune of SmolLM2-135M-Instruct (the cpu profile's policy) with TRL's SFTTrainer on the xLAM
training split, the prompt format every lesson uses (tools in the system message, <tool_call> JSON out).
Every ``--eval-every`` steps: greedy format-valid / exact / Sim-RL on a fixed xLAM *validation* sample
(the only numbers to tune on). At the end, once: BFCL v3 AST accuracy on a fixed sample per category
(never used to choose anything). Prints the curve with wall-clock seconds; this is the first stage of the
cpu curriculum, so its curve says how much of the time budget SFT needs and what is left for RL.
"""

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CATEGORIES = ("simple", "multiple", "parallel", "parallel_multiple", "irrelevance")


def _chars(s):
    """A description length on the command line: a number or 'none' (whole descriptions)."""
    return None if s == "none" else int(s)


def _eval_chars(s):
    """--eval-desc-chars: a description length, or 'same' (whatever training used)."""
    return s if s == "same" else _chars(s)


def _snapshots(steps, save: Path):
    """A TrainerCallback that saves the model's weights (no optimizer state) at the given optimizer steps,
    next to ``save`` as <name>_step<N>: several points of one run, to average as a soup of checkpoints."""
    from transformers import TrainerCallback

    class Snapshots(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step in steps:
                model.save_pretrained(save.parent / f"{save.name}_step{state.global_step}")

    return Snapshots()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--eval-every", type=int, default=30)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=768)
    ap.add_argument("--desc-chars", type=_chars, default=80,
                    help="tool descriptions cut to this many characters in training and scoring ('none': whole)")
    ap.add_argument("--eval-desc-chars", type=_eval_chars, default="same",
                    help="descriptions for scoring only (default: --desc-chars); to score a model trained on "
                         "cut descriptions with whole ones")
    ap.add_argument("--n-val", type=int, default=32, help="xLAM validation rows per evaluation")
    ap.add_argument("--n-bfcl", type=int, default=100, help="BFCL v3 simple questions at the end (others: a quarter)")
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/sft_curve"))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--toolrl", action="store_true",
                    help="add ToolRL's single-turn SFT rows (85%%; 15%% held out) to the training data; they hold "
                         "two- to five-call answers and no-call replies, which xLAM's rows lack")
    ap.add_argument("--negatives", type=int, default=0,
                    help="add this many no-call negatives (a training question with another row's tools, "
                         "data.no_call_negatives) to the training data")
    ap.add_argument("--n-val-negatives", type=int, default=24,
                    help="no-call negatives built from validation rows, scored at the end of every run")
    ap.add_argument("--fit-tools", action="store_true",
                    help="make rows longer than --max-length fit by removing uncalled tools (sft.drop_distractors) "
                         "instead of leaving them out")
    ap.add_argument("--no-start-score", action="store_true", help="skip scoring the model before training")
    ap.add_argument("--no-held-out", action="store_true",
                    help="skip ToolRL's held-out rows and the validation negatives at the end")
    ap.add_argument("--save", type=Path, help="save the trained model and tokenizer here")
    ap.add_argument("--snapshots", type=int, nargs="*", default=[],
                    help="also save the weights at these optimizer steps, as SAVE_step<N> (needs --save): "
                         "checkpoints of one run to average (models.load_soup)")
    ap.add_argument("--init", help="start from this saved model instead of the base model")
    ap.add_argument("--tokenizer", help="load the tokenizer from here (default: --init, else the base model); "
                                        "a model folder a notebook saved has none: give the base model's id")
    args = ap.parse_args()
    if args.snapshots and not args.save:
        ap.error("--snapshots needs --save")

    from helpers import data, evaluate, models, rewards, runtime, sft
    eval_chars = args.desc_chars if args.eval_desc_chars == "same" else args.eval_desc_chars

    rt = runtime.setup("cpu", seed=args.seed)
    model, tok = models.load_policy(rt, model_id=args.init, lora=False, tokenizer_id=args.tokenizer)
    train_rows, val_rows = data.xlam_split(data.load_xlam(), seed=0)
    val = evaluate.sample_rows(val_rows, args.n_val, seed=0)
    # ToolRL's held-out rows are always scored at the end, so a run without --toolrl is the baseline
    toolrl_train, toolrl_val = data.toolrl_split()
    negatives = data.no_call_negatives(train_rows, args.negatives, seed=args.seed)
    val_negatives = data.no_call_negatives(val_rows, args.n_val_negatives, seed=0)   # validation questions and tools only
    ds, dropped = sft.build_dataset(train_rows + (toolrl_train if args.toolrl else []) + negatives, tok,
                                    max_length=args.max_length, desc_chars=args.desc_chars,
                                    fit_tools=args.fit_tools)
    print(f"{len(ds)} training examples ({dropped} longer than {args.max_length} tokens left out); "
          f"{len(val)} validation rows", flush=True)
    gen = dict(max_new_tokens=args.max_new_tokens, batch_size=8)
    score = lambda m: evaluate.evaluate_tool_calls(m, tok, val, desc_chars=eval_chars, **gen)[1]
    m0 = time.perf_counter()
    curve = [] if args.no_start_score else [{"step": 0, **score(model.eval()), "seconds": round(time.perf_counter() - m0, 1)}]
    if curve:
        print(json.dumps(curve[0]), flush=True)
    train_seconds = 0.0
    if args.steps > 0:
        model.train()
        points = sft.validation_curve(score, args.eval_every)
        cfg = sft.sft_config(rt, args.out / "checkpoints", max_steps=args.steps, learning_rate=args.lr,
                             batch_size=args.batch, max_length=args.max_length, save_steps=10**9, seed=args.seed)
        t0 = time.perf_counter()
        callbacks = [points] + ([_snapshots(args.snapshots, args.save)] if args.snapshots else [])
        trainer = sft.train(model, tok, ds, cfg, resume=False, callbacks=callbacks)
        train_seconds = time.perf_counter() - t0 - points.eval_seconds
        curve += points.points
        model = trainer.model.eval()
        if args.save:
            model.save_pretrained(args.save)
            tok.save_pretrained(args.save)

    toolrl, no_call_val = None, None
    if not args.no_held_out:
        # held-out ToolRL rows: exact on the rows that call (room for their longest answer), and on the
        # no-call rows the share answered without a call (binary_reward's rule for a [] ground truth)
        t0 = time.perf_counter()
        budget = max(rewards.answer_tokens(r["ground_truth"], tok) for r in toolrl_val if r["ground_truth"])
        recs, _ = evaluate.evaluate_tool_calls(model, tok, toolrl_val, desc_chars=eval_chars,
                                               max_new_tokens=budget, batch_size=8)
        kinds = {"call": [r for r, v in zip(recs, toolrl_val) if v["ground_truth"]],
                 "multi_call": [r for r, v in zip(recs, toolrl_val) if len(v["ground_truth"]) > 1],
                 "no_call": [r for r, v in zip(recs, toolrl_val) if not v["ground_truth"]]}
        toolrl = {f"{k}_exact": round(sum(r["exact"] for r in rs) / len(rs), 4) for k, rs in kinds.items() if rs}
        toolrl.update({f"{k}_n": len(rs) for k, rs in kinds.items()}, budget=budget,
                      seconds=round(time.perf_counter() - t0, 1))
        print("ToolRL held out:", json.dumps(toolrl), flush=True)
        # validation negatives: the share answered without a call
        _, neg = evaluate.evaluate_tool_calls(model, tok, val_negatives, desc_chars=eval_chars, **gen)
        no_call_val = {"no_call_exact": round(neg.get("exact", 0.0), 4), "n": neg["n"]}
        print("xLAM validation negatives:", json.dumps(no_call_val), flush=True)

    t0 = time.perf_counter()
    bfcl = {} if args.n_bfcl <= 0 else {c: evaluate.sample_rows(data.load_bfcl(c), args.n_bfcl if c == "simple" else max(1, args.n_bfcl // 4), seed=0)
            for c in CATEGORIES}
    # each category its own new-token budget (evaluate.BFCL_MAX_NEW_TOKENS): parallel answers run past 128 tokens
    records, summary = evaluate.evaluate_bfcl(model, tok, bfcl, desc_chars=eval_chars, fmt="json", model_tag="final",
                                        **dict(gen, max_new_tokens=None))
    result = {"steps": args.steps, "lr": args.lr, "batch": args.batch, "max_length": args.max_length,
              "desc_chars": args.desc_chars, "eval_desc_chars": eval_chars, "fit_tools": args.fit_tools, "toolrl": args.toolrl, "negatives": len(negatives), "init": args.init,
              "train_examples": len(ds), "curve": curve, "toolrl_val": toolrl, "no_call_val": no_call_val,
              "train_seconds": round(train_seconds, 1), "bfcl_seconds": round(time.perf_counter() - t0, 1),
              "bfcl_n": {c: len(r) for c, r in bfcl.items()}, "bfcl": summary,
              # what the failures are, per category: says whether more steps, more tokens or more data would help
              "bfcl_errors": {c: dict(Counter(r["error_type"] for r in records if r["category"] == c and not r["valid"]))
                              for c in bfcl}}
    print(json.dumps({k: v for k, v in result.items() if k != "curve"}, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        # every BFCL completion and its verdict, to read what the failures look like
        with open(args.json.with_suffix(".bfcl.jsonl"), "w") as f:
            for r in records:
                f.write(json.dumps(r, default=str) + "\n")


if __name__ == "__main__":
    main()
