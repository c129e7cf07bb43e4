"""The training stages as functions the notebooks call, and as a command line that ``accelerate launch``
runs on one GPU, on several, or as several CPU processes:

    python -m helpers.train sft --out runs/cpu --steps 150
    accelerate launch --config_file configs/multi_gpu.yaml -m helpers.train grpo --out runs/gpu --reward sim
    accelerate launch --config_file configs/cpu_2proc.yaml -m helpers.train sft --out runs/ddp --steps 4

One code path: notebook 02 adapts its teacher with ``sft_stage`` and trains its students with
``distill_stage`` on records from ``topk_records``; notebook 03 trains its policies with ``grpo_stage``
on prompts from ``grpo_candidates``. The command line builds the same inputs from the same knobs (the
notebooks' parameter names, lower case with dashes) and calls the same functions. What a notebook adds
around them (validation curves, scoring, figures) stays in the notebook.

Under several processes TRL's trainers shard each batch across the ranks (DDP, or DeepSpeed / FSDP as the
accelerate config says) and gather the logged metrics; ``distill.train_student`` splits its batches across
ranks and averages the gradients itself. Only the main process writes models; every rank resumes from
the same checkpoint. docs/scale-out.md has the recipes.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

# -----------------------------------------------------------------------------
# config
STAGES = ("sft", "distill", "grpo")
VLLM_MODES = ("colocate", "server")       # TRL's two ways of generating GRPO rollouts with vLLM
VLLM_INSTALL = 'pip install "trl[vllm]"'  # TRL's extra pins the vLLM it was tested with (a CUDA machine)
VLLM_GPU_MEMORY = 0.3                     # colocate: share of the GPU vLLM may take; training keeps the rest
TEACHER_NAME = "02_teacher"               # DIR/models/<name>: where notebook 02 saves its adapted teacher
TRACE_FILE = "trace_rank{rank}.jsonl"     # DIR/logs/<stage>/...: what each rank trained on (--trace)
# -----------------------------------------------------------------------------


class VLLMUnavailable(RuntimeError):
    """vLLM generation was asked for, but vllm is not installed."""


def world() -> tuple[int, int]:
    """(rank, number of processes): from torch.distributed once it is initialised, else from the variables
    ``accelerate launch`` / ``torchrun`` set, else (0, 1)."""
    try:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except ImportError:
        pass
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def is_main() -> bool:
    return world()[0] == 0


def vllm_settings(mode: str | None, *, server_base_url: str | None = None,
                  gpu_memory_utilization: float = VLLM_GPU_MEMORY) -> dict:
    """GRPOConfig settings for TRL's vLLM rollouts. ``colocate``: vLLM runs inside each training process
    and shares its GPU (one GPU is enough); ``server``: ``trl vllm-serve --model M`` runs on GPUs of its own
    and the trainer sends it prompts (and the new weights after every step). None or "off": TRL's own
    generation with transformers, which is what the cpu profile uses. Asking for vLLM without vllm
    installed is an error that names the install command, not a failure deep inside TRL."""
    if mode in (None, "", "off"):
        return {}
    if mode not in VLLM_MODES:
        raise ValueError(f"vllm mode {mode!r}: use one of {', '.join(VLLM_MODES)} or 'off'")
    if importlib.util.find_spec("vllm") is None:
        raise VLLMUnavailable(f"vLLM rollouts ({mode}) need the vllm package, which is not installed here. "
                              f"On a CUDA machine: {VLLM_INSTALL}. Without it, leave vllm off: TRL then "
                              "generates with transformers.")
    settings = {"use_vllm": True, "vllm_mode": mode}
    if mode == "colocate":
        settings["vllm_gpu_memory_utilization"] = gpu_memory_utilization
    elif server_base_url:
        settings["vllm_server_base_url"] = server_base_url
    return settings


# ----------------------------------------------------------------------------- tracing

def trace_collator(collate, path):
    """Wrap a trainer's data collator so that each call appends one line to ``path`` (this rank's file):
    the batch number, the row ids it holds (where the rows carry an "id") and its attention-mask tokens.
    It is how a multi-process run shows that the ranks saw different batches."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    calls = {"n": 0}

    def traced(features):
        batch = collate(features)
        ids = [f.get("id") for f in features if isinstance(f, dict) and "id" in f]
        mask = batch.get("attention_mask") if isinstance(batch, dict) else None
        line = {"batch": calls["n"], "ids": ids, "tokens": int(mask.sum()) if mask is not None else None,
                "fingerprint": _fingerprint(batch)}
        calls["n"] += 1
        with path.open("a") as f:
            f.write(json.dumps(line) + "\n")
        return batch

    return traced


def _fingerprint(batch) -> list | None:
    """One number per row (the sum of its token ids): equal batches give equal lists, and two ranks that
    share a batch would show it."""
    ids = batch.get("input_ids") if isinstance(batch, dict) else None
    return None if ids is None else [int(row.sum()) for row in ids]


def trace_rewards(reward_fn, path):
    """Wrap a TRL reward function: each call appends this rank's rewards and completion lengths (tokens)
    to ``path`` before TRL gathers them, so the logged means can be checked against the ranks' own values."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def traced(*args, **kwargs):
        values = reward_fn(*args, **kwargs)
        with path.open("a") as f:
            f.write(json.dumps({"rewards": [None if v is None else float(v) for v in values],
                                "lengths": [len(c) for c in kwargs.get("completion_ids") or []]}) + "\n")
        return values

    traced.__name__ = getattr(reward_fn, "__name__", "reward")
    return traced


def read_trace(path) -> list[dict]:
    path = Path(path)
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


# ----------------------------------------------------------------------------- the stages

def _training_seconds(t0: float, callbacks) -> float:
    """Wall time since t0 less what callbacks spent scoring (sft.validation_curve keeps eval_seconds)."""
    return time.perf_counter() - t0 - sum(getattr(c, "eval_seconds", 0.0) for c in callbacks or [])


def sft_stage(model, tokenizer, dataset, config, save_path, *, callbacks=None, trace=None) -> dict:
    """Supervised fine-tuning (sft.train: TRL's SFTTrainer, resuming from ``config.output_dir``), then the
    model saved to ``save_path`` by the main process. Returns {"trainer", "seconds" (training only),
    "resumed_from" (the checkpoint it continued from, or None)}."""
    from helpers import sft
    resumed = sft.last_checkpoint(config.output_dir)
    t0 = time.perf_counter()
    trainer = sft.train(model, tokenizer, dataset, config, callbacks=callbacks,
                        wrap_collator=(lambda c: trace_collator(c, trace)) if trace else None)
    seconds = _training_seconds(t0, callbacks)
    trainer.save_model(str(save_path))   # the main process writes; every rank waits for it
    return {"trainer": trainer, "seconds": seconds, "resumed_from": resumed}


def grpo_stage(policy, tokenizer, dataset, config, save_path, *, reward_funcs, dynamic_filter: bool = True,
               reward_range=(-1.0, 1.0), callbacks=None, rollout_func=None, trace=None) -> dict:
    """GRPO (grpo.make_trainer: TRL's GRPOTrainer with the dynamic group filter; resumes from
    ``config.output_dir``; ``rollout_func`` replaces TRL's generation, as notebook 04's dictionary
    episodes do), then the policy (a LoRA adapter) saved to ``save_path`` by the main process.
    Returns {"trainer", "seconds", "resumed_from"}."""
    from helpers import grpo, sft
    funcs = list(reward_funcs)
    if trace:
        funcs = [trace_rewards(f, Path(trace).with_suffix(f".{getattr(f, '__name__', 'reward')}.rewards.jsonl")) for f in funcs]
    trainer = grpo.make_trainer(policy, tokenizer, dataset, config, funcs, dynamic_filter=dynamic_filter,
                                reward_range=reward_range, callbacks=callbacks, rollout_func=rollout_func)
    if trace:
        trainer.data_collator = trace_collator(trainer.data_collator, trace)
    resumed = sft.last_checkpoint(config.output_dir)
    t0 = time.perf_counter()
    grpo.train(trainer)
    seconds = _training_seconds(t0, callbacks)
    trainer.save_model(str(save_path))
    return {"trainer": trainer, "seconds": seconds, "resumed_from": resumed}


def distill_stage(student, records: list[dict], save_path=None, **train_kwargs) -> list[dict]:
    """Distillation on cached teacher top-k (distill.train_student: every loss of notebook 02, resumable,
    batches split across ranks under a multi-process launch); the student saved to ``save_path`` by the
    main process when given. Returns the step history."""
    from helpers import distill
    history = distill.train_student(student, records, **train_kwargs)
    if save_path is not None and is_main():
        student.save_pretrained(save_path)
    _barrier()
    return history


def _barrier() -> None:
    try:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
    except ImportError:
        pass


# ----------------------------------------------------------------------------- inputs shared with the notebooks

def grpo_candidates(rt, rows: list[dict], tokenizer, n: int, *, max_completion_length: int, desc_chars, seed: int = 0,
                    smoke: bool = False, pick: str = "auto") -> list[dict]:
    """The training prompts GRPO may use: rows whose reference answer fits the completion budget
    (grpo.answerable; a smoke run's few tokens fit none, so it keeps all), then ``n`` of them, by ``pick``:
    "sample", a seeded sample (the task's own mix of answers; "auto" on a GPU), or "shortest", the shortest
    rendered prompts ("auto" on cpu: on two cores prompt length is the cost of a step). Shortest has a price:
    on xLAM their reference calls carry fewer arguments (1.12 per call against 1.58 for the answerable rows),
    and a policy trained on them learns to write fewer (docs/results.md, 7 December 2026). "sample" on cpu has a
    price too: its prompts are about twice as long, and 4 groups x 4 completions on them outgrew 24 GiB."""
    from helpers import evaluate, grpo, models
    if pick == "auto":
        pick = "sample" if rt.profile == "gpu" else "shortest"
    if pick not in ("sample", "shortest"):
        raise ValueError(f"pick must be 'auto', 'sample' or 'shortest', got {pick!r}")
    usable = rows if smoke else grpo.answerable(rows, tokenizer, max_completion_length)
    if pick == "sample":
        return evaluate.sample_rows(usable, n, seed=seed)
    return models.shortest_prompt_rows(usable, tokenizer, n, desc_chars)


def difficulty_probe(policy, tokenizer, rows: list[dict], *, k: int, temperature: float, max_new_tokens: int,
                     desc_chars, seed: int = 0, cache_path=None, model_tag: str = "probe") -> dict:
    """Sample the starting policy ``k`` times per candidate prompt, as GRPO will (the same rendered prompt,
    temperature, no top-k), and score every sample with both tool-call rewards:
    {"binary": [[r_1..r_k] per row], "sim": [...]}. Cached (evaluate.sample_cached, keyed on the weights).
    ``grpo.learnable_band(probe[name])`` then keeps the prompts whose samples disagree under reward ``name``;
    ``grpo.pass_rate`` of the binary groups is the histogram notebook 03 draws."""
    from helpers import evaluate, rewards
    prompts = evaluate.tool_call_prompts(tokenizer, rows, desc_chars)   # what GRPO samples from (grpo.tool_call_dataset)
    samples = evaluate.sample_cached(policy, tokenizer, prompts, k=k, temperature=temperature, seed=seed,
                                     cache_path=None if cache_path is None else str(cache_path), model_tag=model_tag,
                                     max_new_tokens=max_new_tokens, batch_size=8)
    return {name: [[fn(t, r["ground_truth"], r["tools"]) for t in texts] for r, texts in zip(rows, samples)]
            for name, fn in (("binary", rewards.binary_reward), ("sim", rewards.sim_reward))}


def topk_records(teacher, tokenizer, examples: list[dict], cache_path, *, top_k: int, batch_size: int,
                 max_length: int, model_id: str) -> list[dict]:
    """The teacher's top-k log-probabilities on every completion token of ``examples`` ({"id", "prompt",
    "completion"}), computed once and cached at ``cache_path`` (distill.build_topk_cache), then loaded.
    Rollouts and gold answers go through the same function; only the completions differ."""
    from helpers import distill
    pairs = [distill.tokenize_pair(tokenizer, e["prompt"], e["completion"] + tokenizer.eos_token, max_length) for e in examples]
    if not pairs:
        raise ValueError("no examples to score with the teacher")
    distill.build_topk_cache(teacher, distill.pad_batches(pairs, batch_size, tokenizer.pad_token_id, [e["id"] for e in examples]),
                             top_k, cache_path, model_id=model_id)
    return distill.load_topk_cache(cache_path)[0]


def gold_examples(rows: list[dict], tokenizer, *, desc_chars, exclude_ids=()) -> list[dict]:
    """The reference answers to ``rows`` as distillation examples (the off-policy arm: no generation)."""
    from helpers import sft
    skip = set(exclude_ids)
    return [sft.tool_call_example(r, tokenizer, desc_chars=desc_chars) for r in rows if r["id"] not in skip]


# ----------------------------------------------------------------------------- command line

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m helpers.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="stage", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", required=True, help="run folder: models/, checkpoints/, cache/, logs/ (as the notebooks')")
    common.add_argument("--profile", default="auto", help="cpu, gpu or auto")
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--steps", type=int, help="optimizer steps (default: the notebook's cpu/gpu value)")
    common.add_argument("--learning-rate", type=float)
    common.add_argument("--save-steps", type=int, help="checkpoint every N steps; a relaunch resumes from the last")
    common.add_argument("--name", help="DIR/models/<name> for the result (default: the notebook's name)")
    common.add_argument("--tool-desc-chars", type=int, default=-1, help="cut tool descriptions (-1: the profile's value)")
    common.add_argument("--trace", action="store_true", help="write what each rank trained on to DIR/logs/<stage>/")
    common.add_argument("--dense", action="store_true", help="gpu: load full-precision weights, not 4-bit (ZeRO, FSDP)")

    s = sub.add_parser("sft", parents=[common], help="adapt a model to tool calls (notebook 02's teacher)")
    s.add_argument("--model", help="model id or folder (default: the profile's teacher)")
    s.add_argument("--n-train", type=int, help="xLAM training rows used (default: all)")
    s.add_argument("--max-length", type=int, help="tokens per example (default: 640 on cpu, 1024 on gpu)")
    s.add_argument("--batch-size", type=int, help="per device (default: the profile's)")

    d = sub.add_parser("distill", parents=[common], help="train a student on the teacher's cached top-k (notebook 02)")
    d.add_argument("--teacher", help=f"the teacher (default: DIR/models/{TEACHER_NAME})")
    d.add_argument("--student", help="model id or folder (default: the profile's student)")
    d.add_argument("--loss", default="ckd", help="ckd, topk_fkl, fkl, topk_rkl or sft")
    d.add_argument("--data", default="gold", choices=("gold", "rollouts"),
                   help="gold: the teacher's top-k on the gold answers (built here); rollouts: notebook 02's cache")
    d.add_argument("--n-prompts", type=int, default=400, help="training prompts for --data gold (the shortest)")
    d.add_argument("--top-k", type=int, default=100)
    d.add_argument("--batch-size", type=int, default=4, help="sequences per step, split across ranks")
    d.add_argument("--max-length", type=int, default=768)

    g = sub.add_parser("grpo", parents=[common], help="GRPO with a tool-call reward (notebook 03)")
    g.add_argument("--start", help=f"starting model (default: DIR/models/{TEACHER_NAME} if saved, else the profile's policy)")
    g.add_argument("--reward", default="sim", choices=("sim", "binary"))
    g.add_argument("--num-generations", type=int)
    g.add_argument("--prompts-per-step", type=int, help="prompt groups per optimizer step and process (default: the profile's)")
    g.add_argument("--max-completion-length", type=int)
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--beta", type=float, default=1e-3)
    g.add_argument("--epsilon", type=float, default=0.2)
    g.add_argument("--n-train-prompts", type=int, default=200)
    g.add_argument("--no-dynamic-filter", action="store_true")
    g.add_argument("--vllm", default="off", help="off, colocate or server (TRL's vLLM rollouts; needs vllm)")
    g.add_argument("--vllm-server-url", help="server mode: where `trl vllm-serve` listens (default: TRL's)")
    g.add_argument("--smoke", action="store_true", help="keep prompts whose answer does not fit the budget (tiny budgets)")
    return p


def _saved(path: Path) -> bool:
    return any((path / f).is_file() for f in ("config.json", "adapter_config.json"))


def _setup(args):
    """Runtime, the process group and the run folders. accelerate's PartialState joins the processes a
    launcher started (a no-op for one process); ``cpu`` makes it use gloo, which is how several CPU
    processes train together (the cpu profile, and the 2-process test)."""
    from accelerate import PartialState

    from helpers import runtime, sft
    profile = runtime.resolve_profile(args.profile)
    state = PartialState(cpu=profile == "cpu")
    rt = runtime.setup(profile, seed=args.seed, verbose=state.is_main_process)
    out = Path(args.out)
    desc_chars = sft.TOOL_DESC_CHARS[rt.profile] if args.tool_desc_chars == -1 else args.tool_desc_chars
    return rt, state, out, desc_chars


def _four_bit(rt, args) -> bool:
    return rt.profile == "gpu" and not args.dense


def _trace_path(args, out: Path, stage: str):
    return out / "logs" / stage / TRACE_FILE.format(rank=world()[0]) if args.trace else None


def _run_sft(args) -> dict:
    from helpers import data, models, sft
    rt, state, out, desc_chars = _setup(args)
    defaults = sft.SFT_DEFAULTS[rt.profile]
    name = args.name or TEACHER_NAME
    with state.main_process_first():   # the first load of the embedded model builds its cache once
        model, tokenizer = models.load_policy(rt, model_id=args.model or rt.models["teacher"], lora=defaults["lora"],
                                              four_bit=_four_bit(rt, args))
    xlam_train, _ = data.xlam_split(data.load_xlam(), seed=0)
    rows = xlam_train[: args.n_train] if args.n_train else xlam_train
    max_length = args.max_length or (640 if rt.profile == "cpu" else defaults["max_length"])
    dataset, dropped = sft.build_dataset(rows, tokenizer, max_length=max_length, desc_chars=desc_chars, fit_tools=True)
    config = sft.sft_config(rt, out / "checkpoints" / f"{name}_sft", max_steps=args.steps or (150 if rt.profile == "cpu" else 30),
                            learning_rate=args.learning_rate or 1e-4, batch_size=args.batch_size or defaults["batch_size"],
                            grad_accum=defaults["grad_accum"], max_length=max_length, save_steps=args.save_steps or 50,
                            seed=args.seed)
    result = sft_stage(model, tokenizer, dataset, config, out / "models" / name, trace=_trace_path(args, out, "sft"))
    return {"stage": "sft", "model": str(out / "models" / name), "examples": len(dataset), "dropped": dropped,
            "seconds": round(result["seconds"], 1), "steps": result["trainer"].state.global_step,
            "resumed_from": result["resumed_from"]}


def _run_grpo(args) -> dict:
    from helpers import data, grpo, models, rewards
    rt, state, out, desc_chars = _setup(args)
    defaults = grpo.TOOL_CALL_DEFAULTS[rt.profile]
    vllm = vllm_settings(args.vllm, server_base_url=args.vllm_server_url)   # fail before any loading
    start = args.start or (str(out / "models" / TEACHER_NAME) if _saved(out / "models" / TEACHER_NAME) else rt.models["policy"])
    with state.main_process_first():
        tokenizer = models.load_tokenizer(rt.models["policy"])
        policy = models.load_causal_lm(start, dtype=rt.dtype, four_bit=_four_bit(rt, args), device=rt.device)
    policy = models.apply_lora(policy, four_bit=_four_bit(rt, args), gradient_checkpointing=rt.profile == "gpu")
    n_gen = args.num_generations or defaults["num_generations"]
    max_len = args.max_completion_length or defaults["max_completion_length"]
    xlam_train, _ = data.xlam_split(data.load_xlam(), seed=0)
    rows = grpo_candidates(rt, xlam_train, tokenizer, args.n_train_prompts, max_completion_length=max_len,
                           desc_chars=desc_chars, seed=args.seed, smoke=args.smoke)
    dataset = grpo.tool_call_dataset(rows, tokenizer, desc_chars=desc_chars)
    name = args.name or f"03_{args.reward}_seed{args.seed}"
    config = grpo.grpo_config(rt, out / "checkpoints" / name, max_steps=args.steps or defaults["steps"],
                              num_generations=n_gen, max_completion_length=max_len, beta=args.beta, epsilon=args.epsilon,
                              per_device_train_batch_size=n_gen * (args.prompts_per_step or defaults["prompts_per_step"]),
                              learning_rate=args.learning_rate or defaults["learning_rate"], temperature=args.temperature,
                              save_steps=args.save_steps or grpo.GRPO_SAVE_STEPS, seed=args.seed, **vllm)
    reward_fn = rewards.make_trl_reward({"sim": rewards.sim_reward, "binary": rewards.binary_reward}[args.reward], args.reward)
    result = grpo_stage(policy, tokenizer, dataset, config, out / "models" / name, reward_funcs=[reward_fn],
                        dynamic_filter=not args.no_dynamic_filter, reward_range=rewards.REWARD_RANGES[args.reward],
                        callbacks=[grpo.CsvLogger(out / "logs" / f"{name}.csv")], trace=_trace_path(args, out, "grpo"))
    return {"stage": "grpo", "model": str(out / "models" / name), "start": start, "prompts": len(dataset),
            "seconds": round(result["seconds"], 1), "steps": result["trainer"].state.global_step,
            "resumed_from": result["resumed_from"], "effective_updates": grpo.effective_updates([h for h in result["trainer"].state.log_history if "loss" in h])}


def _run_distill(args) -> dict:
    from helpers import data, distill, models, runtime
    rt, state, out, desc_chars = _setup(args)
    teacher_path = Path(args.teacher) if args.teacher else out / "models" / TEACHER_NAME
    cache = out / "cache" / ("02_teacher_topk_gold" if args.data == "gold" else "02_teacher_topk")
    tokenizer = models.load_tokenizer(rt.models["teacher"])
    if args.data == "rollouts" and not (cache / distill.MANIFEST_NAME).is_file():
        raise FileNotFoundError(f"{cache} holds no top-k cache: run notebook 02 into {out} first (it writes the "
                                "teacher's rollouts and their top-k), or use --data gold")
    with state.main_process_first():   # one process scores the gold answers and writes the cache; the rest read it
        if args.data == "gold" and not (cache / distill.MANIFEST_NAME).is_file():
            if not _saved(teacher_path) and not args.teacher:
                raise FileNotFoundError(f"no teacher in {teacher_path}: run `python -m helpers.train sft --out {out}` "
                                        "first, or name one with --teacher")
            teacher = models.load_causal_lm(str(teacher_path), dtype=rt.dtype, device=rt.device).eval()
            xlam_train, _ = data.xlam_split(data.load_xlam(), seed=0)
            rows = models.shortest_prompt_rows(xlam_train, tokenizer, args.n_prompts, desc_chars)
            topk_records(teacher, tokenizer, gold_examples(rows, tokenizer, desc_chars=desc_chars), cache, top_k=args.top_k,
                         batch_size=args.batch_size, max_length=args.max_length, model_id=str(teacher_path))
            del teacher
        records = distill.load_topk_cache(cache)[0]
        student = models.load_causal_lm(args.student or rt.models["student"], dtype=rt.dtype,
                                        four_bit=_four_bit(rt, args), device=rt.device)
    if rt.profile == "gpu":
        student = models.apply_lora(student, four_bit=_four_bit(rt, args))
    if args.loss == "fkl":
        raise ValueError("loss 'fkl' needs the teacher's full distribution online: run it from notebook 02")
    runtime.seed_everything(args.seed)
    arm = args.loss if args.data == "rollouts" else f"{args.loss}_gold"
    name = args.name or f"02_student_{arm}_seed{args.seed}"
    history = distill_stage(student, records, out / "models" / name, loss=args.loss, steps=args.steps or 40,
                            lr=args.learning_rate or 1e-4, batch_size=args.batch_size, seed=args.seed,
                            pad_id=tokenizer.pad_token_id, checkpoint=out / "checkpoints" / f"{name}.pt",
                            save_every=args.save_steps or 20, trace=_trace_path(args, out, "distill"))
    trained = [h for h in history if h["step"] > 0]
    return {"stage": "distill", "model": str(out / "models" / name), "records": len(records), "steps": len(trained),
            "seconds": round(sum(h["seconds"] for h in trained), 1), "last_loss": trained[-1]["loss"] if trained else None}


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        result = {"sft": _run_sft, "grpo": _run_grpo, "distill": _run_distill}[args.stage](args)
    except (VLLMUnavailable, FileNotFoundError, ValueError) as e:
        print(f"helpers.train {args.stage}: {e}", file=sys.stderr)
        return 2
    if is_main():
        print(json.dumps({**result, "processes": world()[1]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
