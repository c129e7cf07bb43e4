"""CPU step time of our GRPO configuration against a plain TRL GRPOTrainer with identical settings.

    python benchmarks/bench_grpo_overhead.py                 # SmolLM2-135M-Instruct + LoRA r=16 (the cpu profile)
    python benchmarks/bench_grpo_overhead.py --tiny          # a tiny random model: checks the script, not the figure
    python benchmarks/bench_grpo_overhead.py --rounds 3 --steps 3 --json out.json

ours   helpers.grpo.make_trainer: FilteredGRPOTrainer (dynamic filtering of groups) + CsvLogger
plain  trl.GRPOTrainer, the same GRPOConfig (helpers.grpo.grpo_config), no callbacks

Both use the same reward (Sim-RL through rewards.make_trl_reward), the same model (built afresh with
the same seed for every segment: same weights, same LoRA initialisation), the same prompts (the shortest
xLAM rows rendered as in grpo.tool_call_dataset) and the same seed, so both sample the same completions
and do the same work apart from our additions (the filter does not touch the random number generator;
the script checks that both arms logged the same rewards). One untimed plain step warms up; then the
arms alternate, ours-plain in odd rounds and plain-ours in even ones, to cancel drift on a shared machine.
Step time: the wall time between Trainer's on_step_begin and on_step_end (generation, rewards, forward,
backward, optimizer). Checkpointing is off in both arms.

Two figures: the ratio of mean step times (the goal: ours at most 1.05 x plain), which on a busy machine
carries the machine's noise, and the time spent inside our additions measured directly (the filter's
share of _generate_and_score_completions, CsvLogger.on_log), which does not.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

# -----------------------------------------------------------------------------
# config
PROMPTS = 16                 # the shortest xLAM prompts (the cpu profile trains on short ones too)
DESC_CHARS = 80              # tool descriptions cut as in the cpu profile (see models.shorten_tools)
GENERATIONS, LENGTH = 4, 32  # one prompt x 4 completions x 32 tokens per step (the cpu profile's size)
STEPS, ROUNDS = 3, 2         # timed steps per segment; rounds of (ours, plain)
GOAL = 1.05
# -----------------------------------------------------------------------------


def build_model(tiny: bool, seed: int):
    """A fresh policy for every segment (TRL adds a 'ref' adapter to the model it is given, so a model
    object serves one trainer); the seed makes every copy identical, LoRA initialisation included."""
    import torch

    from helpers import models
    tok = models.load_tokenizer(models.SMOLLM2_ID)
    torch.manual_seed(seed)
    if tiny:
        from transformers import LlamaConfig, LlamaForCausalLM
        model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                             pad_token_id=tok.pad_token_id))
        model = models.apply_lora(model, gradient_checkpointing=False, r=4, alpha=8)
    else:
        model = models.load_causal_lm(models.SMOLLM2_ID)
        model = models.apply_lora(model, gradient_checkpointing=False)
    return model, tok


def shortest_prompts(tok, n: int, desc_chars: int):
    from helpers import data, grpo
    ds = grpo.tool_call_dataset(data.load_xlam(download=False), tok, desc_chars=desc_chars)
    lengths = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in ds["prompt"]]
    order = sorted(range(len(ds)), key=lambda i: (lengths[i], ds[i]["id"]))[:n]
    return ds.select(order), [lengths[i] for i in order]


class OwnTime:
    """Wall time spent in our additions, measured directly (free of the machine's noise): the filter
    (FilteredGRPOTrainer's _generate_and_score_completions minus the TRL method it wraps) and
    CsvLogger.on_log. The TRL method is wrapped on the class, so both arms pay the same wrapper."""

    def __init__(self):
        self.seconds = 0.0
        self._inner: list[float] = []

    def install_parent_timer(self):
        from trl import GRPOTrainer
        parent = GRPOTrainer._generate_and_score_completions
        if getattr(parent, "_bench_wrapped", False):
            return
        inner = self._inner

        def timed(trainer, inputs):
            t0 = time.perf_counter()
            try:
                return parent(trainer, inputs)
            finally:
                inner.append(time.perf_counter() - t0)
        timed._bench_wrapped = True
        GRPOTrainer._generate_and_score_completions = timed

    def watch(self, trainer, csv_logger):
        filtered = trainer._generate_and_score_completions

        def total(inputs):
            self._inner.clear()
            t0 = time.perf_counter()
            out = filtered(inputs)
            self.seconds += time.perf_counter() - t0 - sum(self._inner)
            return out
        trainer._generate_and_score_completions = total
        on_log = csv_logger.on_log

        def timed_log(*a, **k):
            t0 = time.perf_counter()
            try:
                return on_log(*a, **k)
            finally:
                self.seconds += time.perf_counter() - t0
        csv_logger.on_log = timed_log


def run_segment(arm, tok, dataset, reward, args, out_root, own):
    """A fresh model and trainer of one arm, same starting weights and seed; returns step times and logs."""
    from transformers import PrinterCallback, ProgressCallback, TrainerCallback
    from trl import GRPOTrainer

    from helpers import grpo, runtime

    model, _ = build_model(args.tiny, args.seed)
    runtime.seed_everything(args.seed)

    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t0)

    out = Path(tempfile.mkdtemp(dir=out_root))
    rt = runtime.describe("cpu", seed=args.seed)
    cfg = grpo.grpo_config(rt, out, max_steps=args.steps, num_generations=args.generations,
                           max_completion_length=args.length, save_strategy="no", seed=args.seed)
    if arm == "ours":
        csv_logger = grpo.CsvLogger(out / "log.csv")
        trainer = grpo.make_trainer(model, tok, dataset, cfg, [reward], reward_range=(-1.0, 1.0), callbacks=[csv_logger])
        own.watch(trainer, csv_logger)
    else:
        trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=cfg, train_dataset=dataset, processing_class=tok)
    trainer.add_callback(Timer())
    for printer in (PrinterCallback, ProgressCallback):  # per-step log lines: the same cost in both arms, noise here
        trainer.remove_callback(printer)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "reward" in h]
    return times, logs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny random model instead of SmolLM2-135M (a quick check)")
    ap.add_argument("--steps", type=int, default=STEPS, help="timed steps per segment")
    ap.add_argument("--rounds", type=int, default=ROUNDS, help="rounds of (ours, plain)")
    ap.add_argument("--generations", type=int, default=GENERATIONS)
    ap.add_argument("--length", type=int, default=LENGTH, help="max completion tokens")
    ap.add_argument("--prompts", type=int, default=PROMPTS)
    ap.add_argument("--desc-chars", type=int, default=DESC_CHARS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from helpers import rewards, runtime
    runtime.quiet_libraries()
    import torch

    from helpers import models
    tok = models.load_tokenizer(models.SMOLLM2_ID)
    dataset, lengths = shortest_prompts(tok, args.prompts, args.desc_chars)
    reward = rewards.make_trl_reward(rewards.sim_reward, "sim")

    times = {"ours": [], "plain": []}
    logs = {"ours": [], "plain": []}
    round_ratios = []
    own = OwnTime()
    own.install_parent_timer()
    with tempfile.TemporaryDirectory() as out_root:
        warm_args = argparse.Namespace(**{**vars(args), "steps": 1})
        run_segment("plain", tok, dataset, reward, warm_args, out_root, own)
        for r in range(args.rounds):
            seg = {}
            for arm in ("ours", "plain") if r % 2 == 0 else ("plain", "ours"):
                t, log = run_segment(arm, tok, dataset, reward, args, out_root, own)
                seg[arm] = t
                times[arm] += t
                logs[arm].append([h.get("reward") for h in log])
                print(f"round {r + 1} {arm:>5}: " + ", ".join(f"{x:.2f}" for x in t) + " s", flush=True)
            round_ratios.append(statistics.fmean(seg["ours"]) / statistics.fmean(seg["plain"]))

    mean = {arm: statistics.fmean(t) for arm, t in times.items()}
    median = {arm: statistics.median(t) for arm, t in times.items()}
    ratio = mean["ours"] / mean["plain"]
    own_per_step = own.seconds / len(times["ours"])
    same_work = logs["ours"] == logs["plain"]
    result = {
        "model": "tiny random Llama (hidden 32, 2 layers) + LoRA r=4" if args.tiny else "SmolLM2-135M-Instruct + LoRA r=16",
        "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "prompts": len(dataset), "prompt_tokens": [min(lengths), max(lengths)],
        "generations": args.generations, "completion_length": args.length,
        "steps_per_segment": args.steps, "rounds": args.rounds,
        "order": "round 1: ours then plain, round 2: plain then ours, and so on",
        "step_seconds": {arm: [round(x, 3) for x in t] for arm, t in times.items()},
        "mean_step_seconds": {arm: round(m, 3) for arm, m in mean.items()},
        "median_step_seconds": {arm: round(m, 3) for arm, m in median.items()},
        "ratio_ours_over_plain": round(ratio, 4),
        "ratio_of_medians": round(median["ours"] / median["plain"], 4),
        "ratio_per_round": [round(x, 4) for x in round_ratios],
        "own_code_seconds_per_step": round(own_per_step, 5),
        "own_code_share_of_plain_step": round(own_per_step / mean["plain"], 6),
        "goal": GOAL, "same_rewards_in_both_arms": same_work,
        "versions": runtime.package_versions(("torch", "transformers", "trl", "peft")),
    }
    print(json.dumps(result, indent=2))
    print(f"ours {mean['ours']:.3f} s/step, plain {mean['plain']:.3f} s/step, ratio {ratio:.3f} "
          f"(goal <= {GOAL}: {'ok' if ratio <= GOAL else 'MISSED'}); time inside our additions "
          f"{own_per_step * 1000:.2f} ms/step = {own_per_step / mean['plain']:.3%} of a plain step"
          + ("" if same_work else "; WARNING: the arms logged different rewards, so they did not do the same work"))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
