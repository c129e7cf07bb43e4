"""How far GRPO moves the cpu SFT policy on xLAM validation as its steps grow: notebook 03's run, with a curve.

    OMP_NUM_THREADS=2 python benchmarks/grpo_curve.py --init DIR --reward sim --steps 30 --eval-every 10 \
        --prompts-per-step 2 --seed 0 --out runs/grpo_tune --json runs/grpo_tune/sim_p2.json

Notebook 03 on the cpu profile gives each GRPO run its default steps (grpo.TOOL_CALL_DEFAULTS) and scores it
once, at the end. This script runs the same configuration (grpo.grpo_settings, the 120 shortest answerable xLAM
training prompts, the difficulty probe and its learnable band as notebook 03 draws them, LoRA at notebook 03's cpu
learning rate and prompt groups per step, dynamic filtering) for as many steps as asked, with the knobs the lessons issue asks to choose (group size,
prompt groups per step, temperature, learning rate), and scores greedy format-valid / exact / Sim-RL at step 0
and every ``--eval-every`` steps (scoring time is not counted as training time).

Which rows it scores (``--rows``): by default the *tuning* rows, the xLAM validation rows that notebook 03's
48-row held-out sample does not contain, so that a setting chosen here is not chosen on the rows the notebook
reports ("eval" scores those, to reproduce a notebook figure; never choose on them). Generations are cached in
``--out`` (keyed on the weights), so configurations from the same ``--init`` share their step-0 score and probe.
Every later point carries its paired 95% bootstrap interval of the gain over step 0 (scoreboard.paired_difference).

The learning rate is constant, so the first steps of a longer run train as a shorter run's do. At the
end it also prints the training reward per step and how many steps' groups had any reward variance: only those
could train (the dynamic filter can drop some of them too). ``--save`` writes the merged policy (full weights), to
score on BFCL once, afterwards, with ``sft_curve.py --init DIR --steps 0``.
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# notebook 03's cpu settings: its "auto" values (grpo.TOOL_CALL_DEFAULTS) and parameters cell
N_TRAIN_PROMPTS = 120   # the sweep of 6 December (docs/results.md) ran with 200: --train-prompts 200
BETA, EPSILON = 1e-3, 0.2


def main() -> None:
    from helpers import grpo   # cheap: TRL is imported only when a trainer is built

    defaults = grpo.TOOL_CALL_DEFAULTS["cpu"]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--init", required=True, help="the starting model (a saved SFT model: full weights)")
    ap.add_argument("--tokenizer", help="tokenizer folder or id (default: --init if it holds one, else the profile's policy)")
    ap.add_argument("--reward", choices=["sim", "binary"], default="sim")
    ap.add_argument("--steps", type=int, default=defaults["steps"])
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--lr", type=float, default=defaults["learning_rate"])
    ap.add_argument("--num-generations", type=int, default=defaults["num_generations"])
    ap.add_argument("--rows", choices=["tune", "eval"], default="tune",
                    help="tune: the validation rows outside notebook 03's held-out sample (default); eval: that sample")
    ap.add_argument("--n-eval", type=int, default=48, help="notebook 03's held-out sample size (N_EVAL)")
    ap.add_argument("--train-prompts", type=int, default=N_TRAIN_PROMPTS, help="candidates probed (N_TRAIN_PROMPTS)")
    ap.add_argument("--candidates", choices=["auto", "shortest", "sample"], default="auto",
                    help="how the candidates are picked (notebook 03's CANDIDATES; auto: the shortest on cpu)")
    ap.add_argument("--prompts-per-step", type=int, default=defaults["prompts_per_step"], help="prompt groups per optimizer step")
    ap.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of the groups and the probe")
    ap.add_argument("--probe-samples", type=int, default=4,
                    help="probe samples per candidate (notebook 03's PROBE_SAMPLES); 0: no probe, train on all candidates")
    ap.add_argument("--select-by", choices=["binary", "sim"], default="binary", help="the reward whose variance defines the band")
    ap.add_argument("--max-new-tokens", type=int, default=128, help="for scoring (notebooks 02, 03 and 05 use 128)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/grpo_curve"))
    ap.add_argument("--save", type=Path, help="save the merged policy and tokenizer here")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if (args.steps < 1 or args.eval_every < 1 or args.prompts_per_step < 1 or args.train_prompts < 1
            or args.probe_samples < 0 or args.probe_samples == 1):
        ap.error("--steps, --eval-every, --train-prompts and --prompts-per-step must be at least 1 and --probe-samples 0 or at least 2 "
                 "(score a saved model with sft_curve.py --steps 0)")

    from helpers import data, evaluate, models, rewards, runtime, scoreboard, sft, train

    rt = runtime.setup("cpu", seed=args.seed)
    completion_length = defaults["max_completion_length"]
    desc_chars = sft.TOOL_DESC_CHARS[rt.profile]
    tokenizer_id = args.tokenizer or (args.init if (Path(args.init) / "tokenizer_config.json").is_file() else rt.models["policy"])
    tok = models.load_tokenizer(tokenizer_id)
    train_rows, val_rows = data.xlam_split(data.load_xlam(), seed=0)
    held_out, tuning = evaluate.held_out_split(val_rows, args.n_eval, seed=0)   # notebook 03's eval_rows, and the rest
    val = held_out if args.rows == "eval" else tuning
    if not val:
        ap.error(f"no {args.rows} rows: --n-eval {args.n_eval} takes all {len(val_rows)} validation rows")
    candidates = train.grpo_candidates(rt, train_rows, tok, args.train_prompts, max_completion_length=completion_length,
                                       desc_chars=desc_chars, seed=args.seed, pick=args.candidates)   # as notebook 03
    args.out.mkdir(parents=True, exist_ok=True)
    runtime.seed_everything(args.seed)
    policy = models.load_causal_lm(args.init, dtype=rt.dtype, device=rt.device)
    probe_info, prompts = {}, candidates
    if args.probe_samples:
        t0 = time.perf_counter()
        probe = train.difficulty_probe(policy, tok, candidates, k=args.probe_samples, temperature=args.temperature,
                                       seed=args.seed, max_new_tokens=completion_length, desc_chars=desc_chars,
                                       cache_path=args.out / "probe.jsonl", model_tag=f"probe:{args.init}")
        band = grpo.learnable_band(probe[args.select_by])
        prompts = [r for r, keep in zip(candidates, band) if keep]
        probe_info = {"probe_candidates": len(candidates), "probe_band": len(prompts),
                      "probe_seconds": round(time.perf_counter() - t0, 1),
                      **{f"probe_{name}_zero_std_all": round(grpo.frac_zero_std(g), 3) for name, g in probe.items()}}
        if not prompts:
            raise SystemExit(f"no candidate's {args.probe_samples} probe samples disagree under {args.select_by}: nothing to train on")
    # what the rewards pay for: the reference calls' arguments per call, candidates and the prompts kept
    probe_info["reference_args_per_call"] = {name: evaluate.arguments_per_call([r["ground_truth"] for r in rows])
                                             for name, rows in (("candidates", candidates), ("training_prompts", prompts))}
    train_ds = grpo.tool_call_dataset(prompts, tok, desc_chars=desc_chars)
    print(f"{len(train_ds)} training prompts of {len(candidates)} candidates, {len(val)} {args.rows} rows; {probe_info}",
          flush=True)

    gen = dict(max_new_tokens=args.max_new_tokens, batch_size=8, cache_path=str(args.out / "generations.jsonl"))
    scored = []   # every curve point's per-question records, in order: the paired gains over step 0 come from them

    def score(m):
        records, summary = evaluate.evaluate_tool_calls(m, tok, val, desc_chars=desc_chars, model_tag="grpo_curve", **gen)
        scored.append(records)
        return summary
    t0 = time.perf_counter()
    curve = [{"step": 0, **score(policy.eval()), "seconds": round(time.perf_counter() - t0, 1)}]
    print(json.dumps(curve[0]), flush=True)

    # seed again: whether the probe was sampled or read from the cache must not change the run's samples
    runtime.seed_everything(args.seed)
    policy = models.apply_lora(policy, four_bit=False, gradient_checkpointing=False)
    name = (f"{args.reward}_g{args.num_generations}_p{args.prompts_per_step}_lr{args.lr:g}_t{args.temperature:g}_seed{args.seed}"
            + ("" if args.candidates == "auto" else f"_{args.candidates}"))
    config = grpo.grpo_config(rt, args.out / f"checkpoints_{name}", max_steps=args.steps,
                              num_generations=args.num_generations, max_completion_length=completion_length,
                              per_device_train_batch_size=args.num_generations * args.prompts_per_step,
                              temperature=args.temperature, beta=BETA, epsilon=EPSILON, learning_rate=args.lr,
                              save_steps=10**9, seed=args.seed)
    points = sft.validation_curve(score, args.eval_every)
    csv_path = args.out / f"{name}.csv"
    csv_path.unlink(missing_ok=True)
    fn = {"sim": rewards.sim_reward, "binary": rewards.binary_reward}[args.reward]
    trainer = grpo.make_trainer(policy, tok, train_ds, config, [rewards.make_trl_reward(fn, args.reward)],
                                dynamic_filter=True, reward_range=rewards.REWARD_RANGES[args.reward],
                                callbacks=[points, grpo.CsvLogger(csv_path)])
    t0 = time.perf_counter()
    grpo.train(trainer, resume=False)
    train_seconds = time.perf_counter() - t0 - points.eval_seconds
    curve += points.points
    for point, records in zip(curve[1:], scored[1:]):   # paired 95% bootstrap over the rows, against step 0
        for metric in ("sim", "exact", "format_valid"):
            d = scoreboard.paired_difference([records], [scored[0]], metric)
            point[f"{metric}_gain"] = [round(d["mean"], 4), round(d["low"], 4), round(d["high"], 4)]
    log = [h for h in trainer.state.log_history if "reward" in h]
    zero_std = [h.get("frac_reward_zero_std") for h in log if h.get("frac_reward_zero_std") is not None]
    warnings = grpo.warnings_for(trainer.state.log_history, completion_length)
    if args.save:
        merged = trainer.model.merge_and_unload().eval()
        merged.save_pretrained(args.save)
        tok.save_pretrained(args.save)

    result = {"init": args.init, "reward": args.reward, "steps": args.steps, "lr": args.lr, "seed": args.seed,
              "num_generations": args.num_generations, "prompts_per_step": args.prompts_per_step, "candidates": args.candidates,
              "temperature": args.temperature, "rows": args.rows, "n_val": len(val), **probe_info,
              "train_seconds": round(train_seconds, 1),
              "reward_curve": [round(h["reward"], 4) for h in log],
              "effective_updates": grpo.effective_updates(log),
              "frac_reward_zero_std_mean": round(sum(zero_std) / len(zero_std), 3) if zero_std else None,
              "steps_with_variance": sum(1 for z in zero_std if z < 1.0), "warnings": warnings, "curve": curve}
    print(json.dumps({k: v for k, v in result.items() if k != "curve"}, indent=2))
    for p in curve:
        gains = "".join(f"  {m} gain {g[0]:+.3f} [{g[1]:+.3f}, {g[2]:+.3f}]" for m in ("sim", "exact")
                        for g in [p.get(f"{m}_gain")] if g)
        print(f"step {p['step']:>3}: format_valid {p['format_valid']:.3f}  exact {p['exact']:.3f}  sim {p['sim_mean']:.3f}{gains}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
