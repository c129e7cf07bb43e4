"""Student training step with a cached top-k teacher (STAR's CKD loss, a plain loop) against TRL's
GKDTrainer (beta=0, lmbda=0: full-vocabulary forward KL with the teacher run online), same models,
same batch, same tokens, same optimizer settings, measured in one run.

    python benchmarks/bench_distill.py                      # cpu profile: SmolLM2-135M -> every-other-layer student
    python benchmarks/bench_distill.py --steps 10 --arms cached,gkd,online --json out.json

Arms, each in its own child process so each peak-memory figure belongs to one arm alone:
    cache    load the teacher, write its top-k for the batch's completion tokens (done once, not timed as a step)
    cached   load the student only, read the cache, CKD steps (helpers.distill.ckd_step_cached)
    gkd      load teacher + student, GKDTrainer steps (TRL's own loop: Trainer, collator, full-vocab loss)
    online   the plain loop with the teacher online and TRL's loss (full-vocab forward KL): separates what
             the cache saves from what the Trainer costs (optional, --arms)

Step time: forward + backward + grad clipping + AdamW step, the window between Trainer's on_step_begin
and on_step_end for GKD. Peak memory: the arm process's peak RSS on CPU (tracemalloc does not see
torch's allocations), torch.cuda.max_memory_allocated on a GPU. Goal: the cached arm at least 2x faster.
Data: the first --batch xLAM rows, prompt rendered with the chat template and tools, the ground-truth
calls rendered as the completion, the oldest prompt tokens cut to fit --max-length.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

# -----------------------------------------------------------------------------
# config
BATCH, MAX_LENGTH = 4, 128
WARMUP, STEPS = 2, 5
K, M, LAM = 100, 100, 10.0        # STAR's CKD setting
LR, MAX_GRAD_NORM = 1e-5, 1.0     # the same for both loops (the Trainer clips at 1.0 by default)
ARMS = ("cached", "gkd")
# -----------------------------------------------------------------------------


def device_and_dtype(args):
    import torch
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = args.dtype or ("bfloat16" if device == "cuda" else "float32")
    return device, getattr(torch, dtype)


def load(model_id, device, dtype):
    from helpers import models
    model = models.load_causal_lm(model_id, dtype=dtype)
    return model.to(device)


def rss_bytes():
    import psutil
    return psutil.Process().memory_info().rss


class Memory:
    """Peak memory of this process from the moment the models are loaded."""

    def __init__(self, device):
        import torch
        self.device, self.torch = device, torch
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.after_load = torch.cuda.memory_allocated()
        else:
            self.after_load = rss_bytes()

    def sync(self):
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def report(self):
        if self.device == "cuda":
            peak = self.torch.cuda.max_memory_allocated()
            return {"memory": "cuda max_memory_allocated", "after_load": self.after_load, "peak": peak}
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
        return {"memory": "process peak RSS", "after_load": self.after_load, "peak": peak}


# ----------------------------------------------------------------------------- the batch

def prepare(args, work: Path) -> list[dict]:
    from helpers import data, models, rewards
    from helpers.distill import tokenize_pair
    tok = models.load_tokenizer(args.teacher)
    try:
        rows = data.load_xlam(download=False)[:args.batch]
    except data.DataMissingError as err:
        sys.exit(str(err))
    examples = []
    for row in rows:
        prompt = models.render_prompt(tok, models.build_messages(row["messages"]), row["tools"])
        completion = rewards.render_tool_calls(row["ground_truth"]) + tok.eos_token
        pair = tokenize_pair(tok, prompt, completion, args.max_length)
        examples.append({"id": row["id"], "prompt": prompt, **pair})
    (work / "batch.json").write_text(json.dumps({"examples": examples, "pad_id": tok.pad_token_id}))
    return examples


def examples_of(work: Path):
    blob = json.loads((work / "batch.json").read_text())
    return blob["examples"], blob["pad_id"]


def padded_batch(examples, pad_id, device):
    """Left-padded like TRL's ChatML collator, so both loops see the same tensors."""
    import torch
    width = max(len(e["input_ids"]) for e in examples)
    pad = [width - len(e["input_ids"]) for e in examples]
    return {
        "input_ids": torch.tensor([[pad_id] * p + e["input_ids"] for p, e in zip(pad, examples)], device=device),
        "attention_mask": torch.tensor([[0] * p + [1] * len(e["input_ids"]) for p, e in zip(pad, examples)], device=device),
        "completion_mask": torch.tensor([[0] * p + e["completion_mask"] for p, e in zip(pad, examples)], device=device),
        "ids": [e["id"] for e in examples],
    }


# ----------------------------------------------------------------------------- arms (child processes)

def arm_cache(args, work, device, dtype):
    from helpers.distill import build_topk_cache
    examples, pad_id = examples_of(work)
    teacher = load(args.teacher, device, dtype)
    t0 = time.perf_counter()
    manifest = build_topk_cache(teacher, [padded_batch(examples, pad_id, device)], K, work / "cache",
                                model_id=args.teacher)
    seconds = time.perf_counter() - t0
    disk = sum(f.stat().st_size for f in (work / "cache").iterdir())
    return {"seconds": seconds, "manifest": manifest, "disk_bytes": disk,
            "vocab_size": teacher.config.vocab_size}


def timed_loop(step, optimizer, params, mem, n):
    import torch
    times, losses = [], []
    for _ in range(n):
        mem.sync()
        t0 = time.perf_counter()
        loss = step()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        mem.sync()
        times.append(time.perf_counter() - t0)
        losses.append(loss.item())
    return times, losses


def arm_cached(args, work, device, dtype):
    import torch
    from helpers.distill import ckd_step_cached, collate_cached, load_topk_cache
    _, pad_id = examples_of(work)
    student = load(args.student, device, dtype).train()
    mem = Memory(device)
    records, manifest = load_topk_cache(work / "cache")
    batch = {k: v.to(device) for k, v in collate_cached(records, pad_id).items()}
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=0.0)
    times, losses = timed_loop(lambda: ckd_step_cached(student, batch, m=M, lam=LAM), opt, params, mem,
                               args.warmup + args.steps)
    return {"times": times, "losses": losses, "counted_tokens": int(batch["loss_mask"].sum()), **mem.report()}


def arm_online(args, work, device, dtype):
    import torch
    from helpers.distill import ckd_step_online
    examples, pad_id = examples_of(work)
    teacher, student = load(args.teacher, device, dtype), load(args.student, device, dtype).train()
    mem = Memory(device)
    batch = padded_batch(examples, pad_id, device)
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=0.0)
    times, losses = timed_loop(lambda: ckd_step_online(student, teacher, batch, loss="fkl"), opt, params, mem,
                               args.warmup + args.steps)
    return {"times": times, "losses": losses, **mem.report()}


def arm_gkd(args, work, device, dtype):
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl.experimental.gkd import GKDConfig, GKDTrainer
    from helpers import models

    examples, pad_id = examples_of(work)
    tok = models.load_tokenizer(args.teacher)
    teacher, student = load(args.teacher, device, dtype), load(args.student, device, dtype)
    mem = Memory(device)
    # Pre-tokenised rows: TRL's ChatML collator then uses input_ids as they are and takes the prompt
    # boundary from completion_mask; it still reads "prompt" (for on-policy generation, which lmbda=0 skips).
    dataset = Dataset.from_list([{"prompt": e["prompt"], "input_ids": e["input_ids"],
                                  "attention_mask": [1] * len(e["input_ids"]),
                                  "completion_mask": e["completion_mask"]} for e in examples])
    config = GKDConfig(
        output_dir=str(work / "gkd"), per_device_train_batch_size=len(examples), max_steps=args.warmup + args.steps,
        learning_rate=LR, lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=MAX_GRAD_NORM,
        optim="adamw_torch", beta=0.0, lmbda=0.0, seq_kd=False, max_length=args.max_length,
        use_cpu=device == "cpu", bf16=False, fp16=False, activation_checkpointing=False,
        logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True, seed=0,
        dataloader_num_workers=0,
    )

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times, self.t0 = [], None

        def on_step_begin(self, *a, **kw):
            mem.sync()
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **kw):
            mem.sync()
            self.times.append(time.perf_counter() - self.t0)

    timer = StepTimer()
    trainer = GKDTrainer(model=student, teacher_model=teacher, args=config, train_dataset=dataset,
                         processing_class=tok, callbacks=[timer])
    # The same batch as the other arms: same tokens, same counted positions.
    collated = trainer.data_collator([dataset[i] for i in range(len(dataset))])
    ours = padded_batch(examples, pad_id, "cpu")
    same = bool((collated["input_ids"] == ours["input_ids"]).all()
                and ((collated["labels"][:, 1:] != -100) == ours["completion_mask"][:, 1:].bool()).all())
    t0 = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - t0
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"times": timer.times, "losses": losses, "same_batch": same, "train_seconds": train_seconds,
            "gradient_checkpointing": bool(getattr(trainer.model, "is_gradient_checkpointing", False)),
            **mem.report()}


ARM_FUNCS = {"cache": arm_cache, "cached": arm_cached, "gkd": arm_gkd, "online": arm_online}


def run_arm(name, args, work):
    """Run one arm in a fresh interpreter; it writes its result as JSON."""
    out = work / f"{name}.json"
    cmd = [sys.executable, __file__, "--arm", name, "--work", str(work), "--teacher", args.teacher,
           "--student", args.student, "--batch", str(args.batch), "--max-length", str(args.max_length),
           "--warmup", str(args.warmup), "--steps", str(args.steps), "--device", args.device]
    if args.dtype:
        cmd += ["--dtype", args.dtype]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not out.is_file():
        tail = (proc.stdout + proc.stderr)[-4000:]
        return {"error": f"arm {name} failed (exit {proc.returncode}):\n{tail}"}
    result = json.loads(out.read_text())
    result["process_seconds"] = time.perf_counter() - t0
    return result


# ----------------------------------------------------------------------------- report

def mib(n):
    return f"{n / 2**20:,.0f} MiB"


def summarize(results, args, examples, device):
    from helpers.distill import cache_bytes_per_token, full_logits_bytes_per_token
    lengths = [len(e["input_ids"]) for e in examples]
    counted = sum(sum(e["completion_mask"][1:]) for e in examples)
    print(f"\nbatch: {len(examples)} sequences, {sum(lengths)} tokens (lengths {lengths}), "
          f"{counted} completion tokens distilled; device {device}; {args.warmup} warm-up + {args.steps} timed steps")
    cache = results.get("cache", {})
    if "error" not in cache and cache:
        vocab = cache["vocab_size"]
        m = cache["manifest"]
        print(f"teacher top-{K} cache: built in {cache['seconds']:.2f} s, {m['n_target_tokens']} target tokens, "
              f"{cache['disk_bytes']:,} bytes on disk ({cache['disk_bytes'] / m['n_target_tokens']:,.0f} per target "
              f"token, input ids and shard headers included)")
        print(f"storage per token: top-{K} ids int32 + log-probs fp16 = {cache_bytes_per_token(K):,} bytes; "
              f"full logits fp32 = {full_logits_bytes_per_token(vocab):,} bytes (vocab {vocab:,}): "
              f"{full_logits_bytes_per_token(vocab) / cache_bytes_per_token(K):,.0f}x smaller")
    print(f"\n{'arm':<8} {'median s/step':>14} {'timed steps (s)':<34} {'peak':>10} {'after load':>11}  losses")
    medians = {}
    for name in [a for a in ("cached", "gkd", "online") if a in results]:
        r = results[name]
        if "error" in r:
            print(f"{name:<8} {r['error']}")
            continue
        timed = r["times"][args.warmup:]
        medians[name] = statistics.median(timed)
        steps = ", ".join(f"{t:.2f}" for t in timed)
        losses = ", ".join(f"{x:.3f}" for x in r["losses"][:3])
        print(f"{name:<8} {medians[name]:>14.3f} {steps:<34} {mib(r['peak']):>10} {mib(r['after_load']):>11}  {losses} ...")
    if "gkd" in results and "error" not in results["gkd"]:
        g = results["gkd"]
        print(f"\ngkd: same batch as the plain loops: {g['same_batch']}; gradient checkpointing: "
              f"{g['gradient_checkpointing']}; trainer.train() took {g['train_seconds']:.1f} s in all")
    if "cached" in medians and "gkd" in medians:
        speed = medians["gkd"] / medians["cached"]
        mem = results["gkd"]["peak"] / results["cached"]["peak"]
        print(f"\ncached top-{K} CKD vs TRL GKDTrainer: {speed:.2f}x faster per step (goal >= 2x: "
              f"{'met' if speed >= 2 else 'NOT met'}), peak memory {mem:.2f}x lower")
    if "online" in medians and "gkd" in medians:
        print(f"plain loop, online teacher, full-vocab FKL vs GKDTrainer: {medians['gkd'] / medians['online']:.2f}x "
              f"(Trainer overhead); cached vs online: {medians['online'] / medians.get('cached', float('nan')):.2f}x")


def main(argv=None):
    from helpers import models
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--teacher", default=models.SMOLLM2_ID)
    ap.add_argument("--student", default=models.SMOLLM2_ID + models.STUDENT_SUFFIX)
    ap.add_argument("--batch", type=int, default=BATCH)
    ap.add_argument("--max-length", type=int, default=MAX_LENGTH)
    ap.add_argument("--warmup", type=int, default=WARMUP)
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--arms", default=",".join(ARMS), help="comma list of cached, gkd, online")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--dtype", default=None, help="float32 (cpu default) or bfloat16 (cuda default)")
    ap.add_argument("--json", default=None, help="also write every figure to this JSON file")
    ap.add_argument("--arm", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--work", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.arm:  # child process: one arm
        import torch
        torch.manual_seed(0)
        device, dtype = device_and_dtype(args)
        result = ARM_FUNCS[args.arm](args, Path(args.work), device, dtype)
        Path(args.work, f"{args.arm}.json").write_text(json.dumps(result))
        return 0

    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = set(arms) - {"cached", "gkd", "online"}
    if unknown:
        ap.error(f"unknown arms {sorted(unknown)}")
    device, _ = device_and_dtype(args)
    with tempfile.TemporaryDirectory(prefix="bench-distill-") as tmp:
        work = Path(tmp)
        examples = prepare(args, work)
        results = {}
        for name in (["cache"] if "cached" in arms else []) + arms:
            if name == "cached" and "error" in results["cache"]:
                results[name] = {"error": "no teacher cache (see the cache arm's error above)"}
                continue
            print(f"running {name} ...", flush=True)
            results[name] = run_arm(name, args, work)
            if "error" in results[name]:
                print(results[name]["error"])
    summarize(results, args, examples, device)
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device, "args": vars(args), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
