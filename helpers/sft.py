"""Supervised fine-tuning on tool calls with TRL's SFTTrainer: the format lesson every later stage
builds on (teacher adaptation before distillation, the SFT baseline, the translation protocol).

Examples are plain-text prompt/completion pairs: the prompt is rendered with the same chat template
and tools the model sees at inference (``models.render_prompt``), the completion is the expected
``<tool_call>`` blocks. Text, not chat messages, because every xLAM row has different tool schemas
and argument types, which do not fit one Arrow schema; and rendering once guarantees that training and
inference see byte-identical prompts. The loss covers the completion only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from helpers import models, rewards

# -----------------------------------------------------------------------------
# config: defaults per profile, every one overridable from a notebook's parameters cell
SFT_DEFAULTS = {
    # cpu: full fine-tuning of 135M parameters beat LoRA r=16 at equal time in our measurements
    # (66% vs 51% format-valid after 7 minutes); prompts are long, so batches stay small.
    "cpu": {"lora": False, "learning_rate": 5e-5, "batch_size": 4, "grad_accum": 1, "max_length": 768},
    # gpu: 4-bit base + LoRA, as the policy is loaded for RL.
    "gpu": {"lora": True, "learning_rate": 2e-4, "batch_size": 8, "grad_accum": 2, "max_length": 1024},
}
TOOL_DESC_CHARS = {"cpu": 80, "gpu": None}   # see models.shorten_tools
# -----------------------------------------------------------------------------


def tool_call_example(row: dict, tokenizer, *, desc_chars: int | None = None, shots: list[dict] | None = None) -> dict:
    """One xLAM-style row as {"prompt": text, "completion": text}. The completion has no end-of-turn
    token: SFTTrainer appends the tokenizer's EOS (<|im_end|>), which is where generation must stop."""
    tools = models.shorten_tools(row["tools"], desc_chars)
    prompt = models.render_prompt(tokenizer, models.build_messages(row["messages"], shots=shots), tools)
    # a row that answers without calling (ground truth []) is trained on its reply text
    target = rewards.render_tool_calls(row["ground_truth"]) if row["ground_truth"] else (row.get("answer_text") or "")
    if not target:
        raise ValueError(f"row {row.get('id')!r} has neither calls nor a reply text to train on")
    return {"prompt": prompt, "completion": target, "id": row["id"]}


def fits(example: dict, tokenizer, max_length: int) -> bool:
    n = len(tokenizer(example["prompt"] + example["completion"], add_special_tokens=False)["input_ids"])
    return n + 1 <= max_length  # +1 for the EOS the trainer appends


def _fit_by_dropping(row: dict, tokenizer, *, max_length: int, desc_chars: int | None = None):
    """(row, example) for drop_distractors, so build_dataset need not render the kept row again."""
    example = tool_call_example(row, tokenizer, desc_chars=desc_chars)
    if fits(example, tokenizer, max_length):
        return row, example
    called = {c["name"] for c in row["ground_truth"]}
    tools = list(row["tools"])
    spare = sorted((t for t in tools if t.get("function", t).get("name") not in called),
                   key=lambda t: len(json.dumps(t)), reverse=True)
    for tool in spare:
        if len(tools) <= 1:
            break
        tools.remove(tool)
        shorter = dict(row, tools=list(tools))
        example = tool_call_example(shorter, tokenizer, desc_chars=desc_chars)
        if fits(example, tokenizer, max_length):
            return shorter, example
    return None, None


def drop_distractors(row: dict, tokenizer, *, max_length: int, desc_chars: int | None = None) -> dict | None:
    """``row`` with just enough of its uncalled tools removed that its example fits ``max_length``;
    the row itself when it fits already, None when even its called tools alone do not fit.

    Why: the rows that do not fit are mostly the ones with many tools (on cpu, 640 tokens: 3-8 tools in
    the rows left out, 1-2 in most rows kept), and choosing among several tools is what BFCL's
    "multiple" category asks. Cutting distractors keeps those questions and most of their choice.
    The longest uncalled tool goes first (fewest tools removed); called tools are never removed, nor a
    row's last tool (a no-call row keeps one to decline). Caveat: a shortened row has fewer distractors
    than it was written with, so it is a little easier than the original."""
    return _fit_by_dropping(row, tokenizer, max_length=max_length, desc_chars=desc_chars)[0]


def build_dataset(rows: list[dict], tokenizer, *, max_length: int, desc_chars: int | None = None,
                  fit_tools: bool = False):
    """A datasets.Dataset of prompt/completion text and how many rows were left out. Rows that do not
    fit ``max_length`` are dropped rather than truncated: a truncated target teaches the model to stop
    mid-call. ``fit_tools``: first try to make a row fit by removing uncalled tools (drop_distractors)."""
    from datasets import Dataset
    if fit_tools:
        fitted = (_fit_by_dropping(r, tokenizer, max_length=max_length, desc_chars=desc_chars)[1] for r in rows)
        kept = [e for e in fitted if e is not None]
    else:
        examples = [tool_call_example(r, tokenizer, desc_chars=desc_chars) for r in rows]
        kept = [e for e in examples if fits(e, tokenizer, max_length)]
    return Dataset.from_list(kept), len(rows) - len(kept)


def sft_config(rt, output_dir, *, max_steps: int, learning_rate: float, batch_size: int, grad_accum: int = 1,
               max_length: int = 768, save_steps: int = 50, seed: int = 0, warmup: float = 0.1, **overrides):
    from trl import SFTConfig
    return SFTConfig(
        output_dir=str(output_dir), max_steps=max_steps, learning_rate=learning_rate,
        per_device_train_batch_size=batch_size, gradient_accumulation_steps=grad_accum,
        lr_scheduler_type="cosine", warmup_steps=warmup,  # a float < 1 is a fraction of max_steps
        max_length=max_length,
        completion_only_loss=True, packing=False,
        # Batches of similar lengths: xLAM prompts run from about 200 to 1,500 tokens, and a random batch
        # of 4 is padded to its longest; on CPU padded tokens cost as much as real ones.
        train_sampling_strategy="group_by_length",
        # TRL turns activation checkpointing on by default; on CPU it only costs time.
        activation_checkpointing=not rt.use_cpu,
        use_cpu=rt.use_cpu, bf16=rt.bf16, fp16=rt.fp16,
        logging_steps=1, save_steps=save_steps, save_total_limit=1, save_only_model=False,
        report_to="none", seed=seed, data_seed=seed, dataloader_num_workers=0,
        **overrides,
    )


def validation_curve(score, every: int, *, log=print):
    """A TrainerCallback that calls ``score(model) -> dict`` every ``every`` optimizer steps and at the
    last step, with the model in eval mode, and keeps {"step", "seconds" (of scoring), **scores} in
    ``.points``. This is how a lesson tunes honestly: it watches a validation split (xLAM rows held out
    from training), never the benchmark it reports. ``.eval_seconds`` sums the scoring time, so the
    caller can subtract it from the training time."""
    import time

    from transformers import TrainerCallback

    class ValidationCurve(TrainerCallback):
        def __init__(self):
            self.points: list[dict] = []
            self.eval_seconds = 0.0

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if every <= 0 or not (state.global_step % every == 0 or state.global_step == state.max_steps):
                return
            t0 = time.perf_counter()
            was_training = model.training
            model.eval()
            scores = score(model)
            model.train(was_training)
            seconds = time.perf_counter() - t0
            self.eval_seconds += seconds
            self.points.append({"step": state.global_step, "seconds": round(seconds, 1), **scores})
            if log is not None:
                log(f"step {state.global_step}: " + ", ".join(
                    f"{k} {v:.3f}" for k, v in scores.items() if isinstance(v, float)))

    return ValidationCurve()


def last_checkpoint(output_dir) -> str | None:
    """The newest *complete* checkpoint-N folder, so a rerun after an interruption resumes instead of
    restarting. The Trainer writes trainer_state.json last and not atomically, so a run killed mid-save
    leaves a checkpoint-N without it; resuming from that one would fail, so it is skipped."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    complete = [p for p in folder.glob("checkpoint-*")
                if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").is_file()]
    return str(max(complete, key=lambda p: int(p.name.split("-")[-1]))) if complete else None


def train(model, tokenizer, dataset, config, *, resume: bool = True, callbacks=None, wrap_collator=None):
    """Train with TRL's SFTTrainer; resumes from the newest checkpoint in ``config.output_dir``.
    ``wrap_collator(collator) -> collator`` replaces the trainer's data collator (train.trace_collator
    records what each rank trained on). Returns the trainer (its ``state.log_history`` holds the loss curve)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    models.score_labelled_positions_only()
    from trl import SFTTrainer
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer, callbacks=callbacks)
    if config.fp16:
        models.cast_trainable_to_fp32(trainer.model)  # fp16 GradScaler needs fp32 LoRA weights (see models)
    if wrap_collator is not None:
        trainer.data_collator = wrap_collator(trainer.data_collator)
    ckpt = last_checkpoint(config.output_dir) if resume else None
    trainer.train(resume_from_checkpoint=ckpt)
    return trainer

