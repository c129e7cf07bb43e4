"""How far GRPO moves the cpu SFT policy on xLAM validation as its steps grow: notebook 03's run, with a curve.

    OMP_NUM_THREADS=2 python benchmarks/grpo_curve.py --init DIR --reward sim --steps 40 --eval-every 10 \
        --seed 0 --save DIR_OUT --json runs/grpo_curve.json

Notebook 03 on the cpu profile gives each GRPO run 10 steps and scores it once, at the end. This script runs the
same configuration (grpo.grpo_settings, the 200 shortest answerable xLAM training prompts, LoRA at notebook 03's
cpu learning rate, one prompt group per step, dynamic filtering) for as many steps as asked, and scores greedy
format-valid / exact / Sim-RL on a fixed xLAM *validation* sample at step 0 and every ``--eval-every`` steps
(scoring time is not counted as training time). The learning rate is constant, so the first 10 steps of a longer
run train at the rate a 10-step run does. At the end it also prints how many steps' groups had any reward variance: only those
could train (the dynamic filter can drop some of them too). ``--save`` writes the merged policy (full weights), to score on BFCL once,
afterwards, with ``sft_curve.py --init DIR --steps 0``.
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# notebook 03's cpu settings: its "auto" values (grpo.TOOL_CALL_DEFAULTS) and parameters cell
N_TRAIN_PROMPTS = 200
BETA, EPSILON = 1e-3, 0.2


def main() -> None:
    from helpers import grpo   # cheap: TRL is imported only when a trainer is built

    defaults = grpo.TOOL_CALL_DEFAULTS["cpu"]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--init", required=True, help="the starting model (a saved SFT model: full weights)")
    ap.add_argument("--tokenizer", help="tokenizer folder or id (default: --init if it holds one, else the profile's policy)")
    ap.add_argument("--reward", choices=["sim", "binary"], default="sim")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--lr", type=float, default=defaults["learning_rate"])
    ap.add_argument("--num-generations", type=int, default=defaults["num_generations"])
    ap.add_argument("--n-val", type=int, default=48, help="xLAM validation rows per evaluation")
    ap.add_argument("--max-new-tokens", type=int, default=128, help="for scoring (notebooks 02, 03 and 05 use 128)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/grpo_curve"))
    ap.add_argument("--save", type=Path, help="save the merged policy and tokenizer here")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.steps < 1 or args.eval_every < 1:
        ap.error("--steps and --eval-every must be at least 1 (score a saved model with sft_curve.py --steps 0)")

    from helpers import data, evaluate, models, rewards, runtime, sft

    rt = runtime.setup("cpu", seed=args.seed)
    completion_length = defaults["max_completion_length"]
    desc_chars = sft.TOOL_DESC_CHARS[rt.profile]
    tokenizer_id = args.tokenizer or (args.init if (Path(args.init) / "tokenizer_config.json").is_file() else rt.models["policy"])
    tok = models.load_tokenizer(tokenizer_id)
    train_rows, val_rows = data.xlam_split(data.load_xlam(), seed=0)
    val = evaluate.sample_rows(val_rows, args.n_val, seed=0)
    answerable = grpo.answerable(train_rows, tok, completion_length)
    prompts = models.shortest_prompt_rows(answerable, tok, N_TRAIN_PROMPTS, desc_chars)   # notebook 03's cpu choice
    train_ds = grpo.tool_call_dataset(prompts, tok, desc_chars=desc_chars)
    print(f"{len(train_ds)} training prompts ({len(answerable)} of {len(train_rows)} answerable), {len(val)} validation rows",
          flush=True)

    gen = dict(max_new_tokens=args.max_new_tokens, batch_size=8)
    score = lambda m: evaluate.evaluate_tool_calls(m, tok, val, desc_chars=desc_chars, **gen)[1]
    runtime.seed_everything(args.seed)
    policy = models.load_causal_lm(args.init, dtype=rt.dtype, device=rt.device)
    t0 = time.perf_counter()
    curve = [{"step": 0, **score(policy.eval()), "seconds": round(time.perf_counter() - t0, 1)}]
    print(json.dumps(curve[0]), flush=True)

    policy = models.apply_lora(policy, four_bit=False, gradient_checkpointing=False)
    config = grpo.grpo_config(rt, args.out / f"checkpoints_{args.reward}_seed{args.seed}", max_steps=args.steps,
                              num_generations=args.num_generations, max_completion_length=completion_length,
                              beta=BETA, epsilon=EPSILON, learning_rate=args.lr, save_steps=10**9, seed=args.seed)
    points = sft.validation_curve(score, args.eval_every)
    csv_path = args.out / f"{args.reward}_seed{args.seed}.csv"
    csv_path.unlink(missing_ok=True)
    fn = {"sim": rewards.sim_reward, "binary": rewards.binary_reward}[args.reward]
    trainer = grpo.make_trainer(policy, tok, train_ds, config, [rewards.make_trl_reward(fn, args.reward)],
                                dynamic_filter=True, reward_range=rewards.REWARD_RANGES[args.reward],
                                callbacks=[points, grpo.CsvLogger(csv_path)])
    t0 = time.perf_counter()
    grpo.train(trainer, resume=False)
    train_seconds = time.perf_counter() - t0 - points.eval_seconds
    curve += points.points
    log = [h for h in trainer.state.log_history if "reward" in h]
    zero_std = [h.get("frac_reward_zero_std") for h in log if h.get("frac_reward_zero_std") is not None]
    warnings = grpo.warnings_for(trainer.state.log_history, completion_length)
    if args.save:
        merged = trainer.model.merge_and_unload().eval()
        merged.save_pretrained(args.save)
        tok.save_pretrained(args.save)

    result = {"init": args.init, "reward": args.reward, "steps": args.steps, "lr": args.lr, "seed": args.seed,
              "num_generations": args.num_generations, "n_val": len(val), "train_seconds": round(train_seconds, 1),
              "frac_reward_zero_std_mean": round(sum(zero_std) / len(zero_std), 3) if zero_std else None,
              "steps_with_variance": sum(1 for z in zero_std if z < 1.0), "warnings": warnings, "curve": curve}
    print(json.dumps({k: v for k, v in result.items() if k != "curve"}, indent=2))
    for p in curve:
        print(f"step {p['step']:>3}: format_valid {p['format_valid']:.3f}  exact {p['exact']:.3f}  sim {p['sim_mean']:.3f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
