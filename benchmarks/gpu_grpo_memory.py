"""Peak GPU memory and step time of the gpu profile's GRPO step: 4-bit nf4 + LoRA, TRL's GRPOTrainer.

    python benchmarks/gpu_grpo_memory.py                                   # Qwen2.5-0.5B-Instruct from the hub
    python benchmarks/gpu_grpo_memory.py --random-shape --tokenizer DIR    # no hub: random weights, same shapes
    python benchmarks/gpu_grpo_memory.py --precision fp16 --no-dtype-fix   # reproduce the T4 failure

Goal: at most 6 GiB peak at 8 generations x 256 tokens, so a 16 GB T4 has room.
With ``--random-shape`` the model has Qwen2.5-0.5B's shapes (vocabulary 151,936) and random weights,
so the figures are memory and speed only: random models never stop early, every completion runs to the
full length (the worst case).
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Qwen2.5-0.5B-Instruct's architecture, from its published config.
QWEN25_05B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                  num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768,
                  rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True)
PROMPTS = [
    "What's the weather like in Paris today?", "Convert 100 US dollars to euros.",
    "Find Italian restaurants near Times Square.", "What is the factorial of 12?",
    "Book a table for two at 7pm tomorrow.", "How far is the Moon from the Earth?",
    "Translate 'good morning' into Spanish.", "List the prime numbers below 50.",
]


def build_random_qwen(folder: Path, tokenizer_dir: str) -> str:
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM
    config = Qwen2Config(**QWEN25_05B, dtype="bfloat16")  # real Qwen checkpoints declare bf16 too
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tok.save_pretrained(folder)
    return str(folder)


def length_reward(completions, **kwargs):
    """Any reward with variance inside a group will do: advantages are non-zero, so the backward
    pass and the fp16 GradScaler really run."""
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [len(t) / 1000.0 for t in texts]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="Qwen/Qwen2.5-0.5B-Instruct")
    ap.add_argument("--random-shape", action="store_true", help="random weights with Qwen2.5-0.5B's shapes")
    ap.add_argument("--tokenizer", help="tokenizer folder for --random-shape")
    ap.add_argument("--precision", choices=["auto", "fp16", "bf16"], default="auto")
    ap.add_argument("--generations", type=int, default=8)
    ap.add_argument("--prompts-per-step", type=int, default=1)
    ap.add_argument("--completion-length", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--no-dtype-fix", action="store_true", help="skip cast_trainable_to_fp32 (shows the failure)")
    ap.add_argument("--profile", default="gpu", help="cpu runs a tiny dense check of the wiring only")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()

    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from helpers import models, runtime

    rt = runtime.setup(args.profile, seed=0)
    on_gpu = rt.profile == "gpu"
    precision = args.precision if args.precision != "auto" else {"bfloat16": "bf16", "float16": "fp16"}.get(rt.dtype_name, "fp32")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]

    with tempfile.TemporaryDirectory() as tmp:
        model_id = args.model
        if args.random_shape:
            if not args.tokenizer:
                ap.error("--random-shape needs --tokenizer (any ChatML tokenizer folder)")
            model_id = build_random_qwen(Path(tmp) / "model", args.tokenizer)
        tok = models.load_tokenizer(model_id)
        model = models.load_causal_lm(model_id, dtype=dtype, four_bit=on_gpu, device=rt.device)
        model = models.apply_lora(model, four_bit=on_gpu, gradient_checkpointing=True)

        batch = args.prompts_per_step * args.generations
        ds = Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in PROMPTS * 4])
        cfg = GRPOConfig(
            output_dir=str(Path(tmp) / "out"), per_device_train_batch_size=batch, num_generations=args.generations,
            max_completion_length=args.completion_length, beta=1e-3, epsilon=0.2, learning_rate=1e-5,
            max_steps=args.steps, logging_steps=1, save_strategy="no", report_to="none", seed=0,
            fp16=precision == "fp16", bf16=precision == "bf16", use_cpu=not on_gpu,
            gradient_checkpointing=True, temperature=1.0,
        )
        trainer = GRPOTrainer(model=model, reward_funcs=[length_reward], args=cfg, train_dataset=ds, processing_class=tok)
        dtypes_before = sorted({str(p.dtype) for p in trainer.model.parameters() if p.requires_grad})
        cast = 0 if args.no_dtype_fix else models.cast_trainable_to_fp32(trainer.model)

        step_times: list[float] = []

        class Timer(TrainerCallback):
            def on_step_begin(self, *a, **k):
                if on_gpu:
                    torch.cuda.synchronize()
                self.t0 = time.perf_counter()

            def on_step_end(self, *a, **k):
                if on_gpu:
                    torch.cuda.synchronize()
                step_times.append(time.perf_counter() - self.t0)

        trainer.add_callback(Timer())
        if on_gpu:
            torch.cuda.reset_peak_memory_stats()
        error = None
        try:
            trainer.train()
        except Exception as err:  # noqa: BLE001 - the point of --no-dtype-fix is to show this error
            error = f"{type(err).__name__}: {err}"
        peak = torch.cuda.max_memory_allocated() / 2**30 if on_gpu else None
        reserved = torch.cuda.max_memory_reserved() / 2**30 if on_gpu else None
        logs = [h for h in trainer.state.log_history if "loss" in h]

    result = {
        "device": rt.gpu_name or "cpu", "model": "random weights, Qwen2.5-0.5B shapes" if args.random_shape else args.model,
        "precision": precision, "four_bit": on_gpu, "lora_r": models.LORA_R,
        "generations": args.generations, "prompts_per_step": args.prompts_per_step,
        "completion_length": args.completion_length, "steps_done": len(step_times),
        "trainable_dtypes_after_trainer_init": dtypes_before, "params_cast_to_fp32": cast,
        "step_seconds": [round(t, 2) for t in step_times],
        "peak_allocated_gib": round(peak, 2) if peak is not None else None,
        "peak_reserved_gib": round(reserved, 2) if reserved is not None else None,
        "clipped_ratio": [h.get("completions/clipped_ratio") for h in logs],
        "loss": [h.get("loss") for h in logs],
        "error": error,
    }
    print(json.dumps(result, indent=2))
    if peak is not None:
        print(f"peak {peak:.2f} GiB allocated ({reserved:.2f} reserved); goal <= 6 GiB: {'ok' if peak <= 6 else 'MISSED'}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    sys.exit(1 if error and not args.no_dtype_fix else 0)


if __name__ == "__main__":
    main()
