"""GRPO on TRL: the group arithmetic every lesson shares, and (later) the trainer wiring.

The group functions are pure Python, so notebook 01 can show what GRPO would do with a set of rewards
without a trainer, and the tests run in milliseconds. TRL is imported lazily by the trainer helpers.
"""

from __future__ import annotations

import math
from statistics import fmean, stdev

# -----------------------------------------------------------------------------
# config
ADV_EPS = 1e-4          # TRL adds this to the group std before dividing
ZERO_STD_TOL = 1e-6     # a group whose rewards differ by less than this teaches nothing
# STAR / DAPO dynamic filtering: keep a group only if its mean reward lies strictly inside this band.
FILTER_LOW, FILTER_HIGH = 0.01, 0.99
# -----------------------------------------------------------------------------


def groups_of(values: list, group_size: int) -> list[list]:
    """Split a prompt-major flat list (G completions of prompt 0, then prompt 1, ...) into groups."""
    if group_size <= 0 or len(values) % group_size:
        raise ValueError(f"{len(values)} values do not split into groups of {group_size}")
    return [list(values[i:i + group_size]) for i in range(0, len(values), group_size)]


def group_advantages(rewards: list[float], scale: bool = True, eps: float = ADV_EPS) -> list[float]:
    """GRPO's group-relative advantage (DeepSeekMath, eq. 3 with outcome supervision):

        A_i = (r_i - mean(r_1..r_G)) / (std(r_1..r_G) + eps)

    With scale=False only the mean is removed (Dr. GRPO). When every reward in the group is equal,
    every advantage is 0 and the group contributes no policy gradient: the reason reward variance
    inside a group matters. The std is the sample std (Bessel-corrected), as TRL computes it."""
    if not rewards:
        return []
    mu = fmean(rewards)
    sd = stdev(rewards) if scale and len(rewards) > 1 else 0.0
    return [(r - mu) / (sd + eps) if scale else r - mu for r in rewards]


def zero_std(rewards: list[float], tol: float = ZERO_STD_TOL) -> bool:
    return (max(rewards) - min(rewards)) <= tol if rewards else True


def frac_zero_std(groups: list[list[float]]) -> float:
    """Fraction of groups with no reward variance: TRL logs it as ``frac_reward_zero_std``."""
    return sum(zero_std(g) for g in groups) / len(groups) if groups else math.nan


def pass_rate(rewards: list[float], full: float = 1.0, tol: float = ZERO_STD_TOL) -> float:
    """Share of a prompt's samples that earned the full reward (for the binary reward: were exactly right)."""
    return sum(r >= full - tol for r in rewards) / len(rewards) if rewards else float("nan")


def learnable_band(groups: list[list[float]], tol: float = ZERO_STD_TOL) -> list[bool]:
    """Difficulty targeting: a prompt is in the *learnable band* when its probe samples from the starting
    policy do not all score the same. GRPO's advantage A_i = (r_i - mean r) / (std r + eps) is zero for
    every completion of a group with std r = 0, so a prompt the policy always or never gets right costs a
    step of sampling and teaches nothing; filtering on pass rate before training (as DAPO's dynamic
    sampling does during it) spends the steps where the gradient is. One flag per group, in order."""
    return [len(g) > 1 and not zero_std(g, tol) for g in groups]


def keep_group(rewards: list[float], low: float = FILTER_LOW, high: float = FILTER_HIGH) -> bool:
    """Dynamic filtering (DAPO; STAR keeps groups whose mean accuracy is in (0.01, 0.99)): drop a group
    whose mean reward is outside (low, high), i.e. one that every sample (nearly) fails or solves.
    For a 0/1 reward that is the same as dropping groups without variance; for a graded reward a group
    can sit mid-band with every sample equal (all 0 under Sim-RL, say), so zero-std groups are dropped
    too: they carry no gradient either way. The band assumes rewards in [0, 1]; rescale others first."""
    return low < fmean(rewards) < high and not zero_std(rewards)


def filter_stats(groups: list[list[float]], low: float = FILTER_LOW, high: float = FILTER_HIGH) -> dict:
    kept = [keep_group(g, low, high) for g in groups]
    return {"groups": len(groups), "kept": sum(kept), "kept_fraction": sum(kept) / len(groups) if groups else math.nan}


def to_unit(reward: float, low: float, high: float) -> float:
    """Map a reward from [low, high] to [0, 1], for filtering rewards such as Sim-RL's [-1, 1]."""
    return (reward - low) / (high - low)


def keep_mask(scores: list[float], group_size: int, reward_range: tuple[float, float] = (0.0, 1.0),
              low: float = FILTER_LOW, high: float = FILTER_HIGH) -> list[bool]:
    """One keep/drop decision per group for a prompt-major list of rewards: each reward is mapped
    from ``reward_range`` to [0, 1] (to_unit), NaN rewards (unscorable completions) are left out,
    and the group is kept when keep_group says so. A group with no scorable reward is dropped."""
    lo, hi = reward_range
    out = []
    for group in groups_of(list(scores), group_size):
        unit = [to_unit(float(s), lo, hi) for s in group if not math.isnan(float(s))]
        out.append(bool(unit) and keep_group(unit, low, high))
    return out


# =============================================================================
# Trainer wiring on TRL 1.16: dataset, config, dynamic filtering, logging, resume.
# TRL, torch and datasets are imported inside the functions, so importing this module stays cheap.

# -----------------------------------------------------------------------------
# config
GRPO_LEARNING_RATE = 1e-5   # LoRA rate (TRL's default 1e-6 is a full fine-tuning rate; STAR's full run used 3e-7)
# Function-calling GRPO per profile: notebook 03's "auto" values, and what benchmarks/grpo_curve.py reproduces.
# gpu: STAR's group of 8, one prompt group per step. cpu: groups of 4 x 96 tokens, four prompt groups per step
# (one update averages 16 completions), 15 steps at 3e-4: about a minute a step on two cores. Chosen on the tuning
# rows (xLAM validation rows outside notebook 03's held-out sample), never on BFCL (docs/results.md, 6 December
# 2026): one group per step at 1e-4 for 10 steps (the previous default) left them where they started, greedy or
# sampled; four groups at 3e-4 for 15 steps raised their *sampled* Sim-RL score (+0.32 [+0.22, +0.42], Sim-RL
# reward, one seed) while the greedy answers barely moved; notebook 03 reads its held-out rows the same way (+0.22).
# Greedy BFCL, scored afterwards and never used to choose, fell (simple 23% -> 10-12%: docs/results.md, 7 December).
TOOL_CALL_DEFAULTS = {
    "gpu": {"num_generations": 8, "max_completion_length": 256, "learning_rate": GRPO_LEARNING_RATE,
            "prompts_per_step": 1, "steps": 30},
    "cpu": {"num_generations": 4, "max_completion_length": 96, "learning_rate": 3e-4,
            "prompts_per_step": 4, "steps": 15},
}
GRPO_SAVE_STEPS = 10        # a checkpoint every 10 steps: a disconnect costs at most 10 steps
KEPT_FRACTION_KEY = "filter/kept_fraction"   # our metric: fraction of groups the dynamic filter kept
KEPT_GROUPS_KEY = "filter/kept_groups"       # our metric: how many groups it kept (per generation batch)
# What CsvLogger writes, in this order (TRL 1.16's log keys), then one "rewards/<name>/mean" per reward.
CSV_FIELDS = ("step", "reward", "reward_std", "frac_reward_zero_std", KEPT_FRACTION_KEY, "kl",
              "completions/mean_length", "completions/clipped_ratio", "loss", "entropy", "grad_norm",
              "learning_rate", "step_time")
# warnings_for thresholds: "most" means more than half of the logged steps / groups
WARN_CLIPPED = 0.5
WARN_ZERO_STD = 0.5
WARN_ZERO_LOSS = 0.5
WARN_KEPT = 0.5
# -----------------------------------------------------------------------------


def answerable(rows: list[dict], tokenizer, max_completion_length: int) -> list[dict]:
    """The rows whose reference answer (rewards.answer_tokens) fits ``max_completion_length`` new tokens.
    A prompt whose right answer is longer can only ever be answered cut short, which every tool-call
    reward scores as a broken call: its groups teach the policy nothing but spend a whole step of sampling (on cpu, 96 new tokens,
    30 of the 200 shortest xLAM training prompts are such prompts)."""
    from helpers import rewards
    return [r for r in rows if rewards.answer_tokens(r["ground_truth"], tokenizer) <= max_completion_length]


def tool_call_dataset(rows: list[dict], tokenizer, desc_chars: int | None = None):
    """xLAM rows ({"id", "messages", "tools", "ground_truth"}) as a datasets.Dataset in TRL's standard
    (text) prompt form: "prompt" is the chat-template rendering with the tools in the system turn, ending
    with the assistant header, so GRPOTrainer samples exactly what the model sees at evaluation.
    "ground_truth" and "tools" are JSON strings (every row has its own schema, Arrow wants one per
    column); rewards.make_trl_reward decodes both. "id" is kept for tracing."""
    import json

    from datasets import Dataset

    from helpers import evaluate
    prompts = evaluate.tool_call_prompts(tokenizer, rows, desc_chars)   # the very prompts evaluation renders
    return Dataset.from_list([{"prompt": prompt,
                               "ground_truth": json.dumps(row["ground_truth"], ensure_ascii=False),
                               "tools": json.dumps(row["tools"], ensure_ascii=False),
                               "id": row["id"]} for row, prompt in zip(rows, prompts)])


def grpo_settings(rt, output_dir, *, max_steps: int, num_generations: int = 8, max_completion_length: int = 256,
                  beta: float = 1e-3, epsilon: float = 0.2, learning_rate: float = GRPO_LEARNING_RATE,
                  per_device_train_batch_size: int | None = None, temperature: float = 1.0,
                  save_steps: int = GRPO_SAVE_STEPS, seed: int = 0, **overrides) -> dict:
    """GRPOConfig keyword arguments with every setting the lessons rely on written out, because TRL's
    defaults moved between releases and differ from STAR's (OpenRLHF) run:

    - beta 1e-3 (TRL 1.16: 0.0, i.e. no KL term). The reference is the starting checkpoint: for a LoRA
      policy TRL 1.16 adds a frozen copy of the adapter as given (adapter "ref"; for a fresh adapter that
      is the base model). TRL's KL term is the k3 estimator; STAR used k2.
    - epsilon 0.2, symmetric clip (epsilon_high = epsilon); one policy update per generation batch.
    - loss_type "dapo": token-level mean over all completion tokens of the batch, no length bias;
      scale_rewards "group": (r - mean) / (std + 1e-4) inside each group, STAR's group_norm.
    - max_completion_length 256 (TRL 1.16: 512); truncated completions stay in the loss.
    - per_device_train_batch_size = num_generations: one prompt (one group) per step by default.
    - activation checkpointing off on CPU (TRL turns it on by default; on CPU it only costs time), on
      on a GPU. use_cpu=True goes with bf16=False (TRL otherwise defaults bf16 on and refuses on CPU);
      on a GPU fp16/bf16 follow the runtime (a T4 has no bf16).
    - constant learning rate, logging every step, a checkpoint every ``save_steps`` with optimizer state
      (save_total_limit=1), no reporting service, no completion tables unless log_completions=True.
    ``overrides`` go straight to GRPOConfig and win over the above. Returns the keyword arguments;
    grpo_config builds the GRPOConfig from them."""
    settings = dict(
        output_dir=str(output_dir), max_steps=max_steps, learning_rate=learning_rate, lr_scheduler_type="constant",
        per_device_train_batch_size=per_device_train_batch_size or num_generations, gradient_accumulation_steps=1,
        num_generations=num_generations, max_completion_length=max_completion_length,
        temperature=temperature, top_p=1.0, top_k=0,
        beta=beta, epsilon=epsilon, epsilon_high=epsilon, num_iterations=1,
        loss_type="dapo", scale_rewards="group", importance_sampling_level="token",
        mask_truncated_completions=False,
        activation_checkpointing=not rt.use_cpu,
        use_cpu=rt.use_cpu, bf16=rt.bf16, fp16=rt.fp16,
        logging_steps=1, save_strategy="steps", save_steps=save_steps, save_total_limit=1, save_only_model=False,
        report_to="none", log_completions=False,
        seed=seed, data_seed=seed, dataloader_num_workers=0,
    )
    settings.update(overrides)
    return settings


def grpo_config(rt, output_dir, *, max_steps: int, **kwargs):
    """GRPOConfig(**grpo_settings(...)): see grpo_settings for what is set and why."""
    from trl import GRPOConfig
    return GRPOConfig(**grpo_settings(rt, output_dir, max_steps=max_steps, **kwargs))


def _trainer_classes():
    """FilteredGRPOTrainer is defined on first use, so importing helpers.grpo does not import TRL."""
    if "FilteredGRPOTrainer" in _LAZY:
        return _LAZY["FilteredGRPOTrainer"]
    import torch
    from trl import GRPOTrainer

    class _FilteredGRPOTrainer(GRPOTrainer):
        """GRPOTrainer with STAR/DAPO dynamic filtering of groups, on TRL 1.16's extension points.

        After TRL has generated, scored and normalised a batch (``_generate_and_score_completions``),
        every group whose mean reward, mapped from ``reward_range`` to [0, 1], lies outside
        ``band`` = (0.01, 0.99), or whose rewards are all equal, is removed from the loss: its advantages
        are set to 0 and its completions' loss mask (TRL's ``tool_mask``, the mask a rollout's env_mask
        also feeds; ``completion_mask`` is left alone because it doubles as the attention mask) is set
        to 0, so those completions add neither policy gradient nor KL term, and the "dapo" token count
        that normalises the loss (``num_items_in_batch``) counts only the kept tokens.
        The rewards come from ``_calculate_rewards`` (overridden only to remember them).

        What this is not: DAPO (and STAR, through OpenRLHF) *over-sample*: they keep generating for new
        prompts until the batch holds B groups that pass, so every step trains on a full batch. Here the
        batch is generated once and the failing groups are dropped, so a step trains on fewer groups,
        and on none when every group fails: the loss is then exactly 0, yet the step still counts (the
        learning-rate schedule advances, and AdamW still moves the weights with the momentum of earlier
        steps). The cost per step does not grow; the number of useful samples per step does not stay fixed.

        ``filter_reward``: None filters on TRL's weighted sum of all reward functions (what advantages are
        computed from); an int or a reward function's name filters on that one reward. A reward function
        with weight 0 (GRPOConfig.reward_weights) can serve as a filter-only score, e.g. STAR's
        [0, 1] answer score next to the [-1, 1] training reward. ``reward_range`` is the range of that
        score. Filtering applies in training only; evaluation batches are left as TRL builds them.
        Logged per step: ``filter/kept_fraction`` and ``filter/kept_groups``."""

        def __init__(self, *args, reward_range=(-1.0, 1.0), filter_reward=None,
                     band=(FILTER_LOW, FILTER_HIGH), **kwargs):
            super().__init__(*args, **kwargs)
            lo, hi = float(reward_range[0]), float(reward_range[1])
            if not hi > lo:
                raise ValueError(f"reward_range must be (low, high) with high > low, got {reward_range}")
            self.filter_reward_range = (lo, hi)
            self.filter_band = (float(band[0]), float(band[1]))
            if filter_reward is None or isinstance(filter_reward, int):
                self.filter_index = filter_reward
            elif filter_reward in self.reward_func_names:
                self.filter_index = self.reward_func_names.index(filter_reward)
            else:
                raise ValueError(f"filter_reward {filter_reward!r} is not one of {self.reward_func_names}")
            if self.filter_index is not None and not 0 <= self.filter_index < len(self.reward_funcs):
                raise ValueError(f"filter_reward index {self.filter_index} out of range for {len(self.reward_funcs)} rewards")
            self._rewards_for_filter = None

        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            self._rewards_for_filter = rewards_per_func  # all processes' rewards, prompt-major
            return rewards_per_func

        def _filter_scores(self, rewards_per_func):
            if self.filter_index is not None:
                return rewards_per_func[:, self.filter_index]
            weights = self.reward_weights.to(rewards_per_func.device).unsqueeze(0)
            scores = (rewards_per_func * weights).nansum(dim=1)  # as TRL sums them
            scores[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
            return scores

        def _generate_and_score_completions(self, inputs):
            self._rewards_for_filter = None
            output = super()._generate_and_score_completions(inputs)
            rewards_per_func, self._rewards_for_filter = self._rewards_for_filter, None
            if not self.model.training or rewards_per_func is None:
                return output
            keep = keep_mask(self._filter_scores(rewards_per_func).tolist(), self.num_generations,
                             self.filter_reward_range, *self.filter_band)
            keep_all = torch.tensor(keep, dtype=torch.bool).repeat_interleave(self.num_generations)
            n_local = output["advantages"].shape[0]
            start = self.accelerator.process_index * n_local
            keep_local = keep_all[start:start + n_local].to(output["advantages"].device)

            adv = output["advantages"]
            output["advantages"] = adv * (keep_local if adv.dim() == 1 else keep_local.unsqueeze(1)).to(adv.dtype)
            completion_mask = output["completion_mask"]
            row_mask = keep_local.unsqueeze(1).to(completion_mask.dtype).expand_as(completion_mask)
            loss_mask = output.get("tool_mask")
            output["tool_mask"] = row_mask if loss_mask is None else loss_mask * row_mask
            output["num_items_in_batch"] = self.accelerator.gather((completion_mask * output["tool_mask"]).sum()).sum()

            logged = self._logs.get("advantages")  # the completions table shows what was trained on
            if logged is not None and len(logged) >= len(keep_all):
                offset = len(logged) - len(keep_all)
                for i, kept in enumerate(keep_all.tolist()):
                    if not kept:
                        logged[offset + i] = 0.0
            self._metrics["train"][KEPT_FRACTION_KEY].append(sum(keep) / len(keep))
            self._metrics["train"][KEPT_GROUPS_KEY].append(float(sum(keep)))
            return output

    _FilteredGRPOTrainer.__name__ = _FilteredGRPOTrainer.__qualname__ = "FilteredGRPOTrainer"
    _FilteredGRPOTrainer.__module__ = __name__
    _LAZY["FilteredGRPOTrainer"] = _FilteredGRPOTrainer
    return _FilteredGRPOTrainer


def fix_fp16_dtypes(trainer) -> int:
    """The T4 fix: with fp16, cast every trainable parameter of ``trainer.model`` to fp32 after the
    trainer is built (GRPOTrainer's init leaves LoRA weights in bf16, which fp16's GradScaler cannot
    unscale; see models.cast_trainable_to_fp32). Returns how many parameters were cast (0 without fp16)."""
    from helpers import models
    return models.cast_trainable_to_fp32(trainer.model) if getattr(trainer.args, "fp16", False) else 0


def _check_reference(model, config) -> None:
    """Where TRL 1.16 gets the KL reference, and the two ways that fails with our models, caught early
    with a clear message. A full fine-tune: TRL reloads model.config.name_or_path, which our embedded or
    freshly built models do not have (TRL would fail or try the network). A LoRA policy: TRL copies the
    adapter into a second adapter named "ref"; a model object that already went through a GRPOTrainer
    (a notebook cell run twice in one kernel) has one, and TRL stops with "Adapter 'ref' already exists"."""
    from helpers import models
    if config.beta == 0.0:
        return
    if hasattr(model, "peft_config"):
        if "ref" in model.peft_config:
            raise ValueError(
                "this LoRA policy already went through a GRPOTrainer (it holds TRL's frozen 'ref' adapter, the KL "
                "reference). Load the policy again (models.load_policy) before building a new trainer; training "
                "resumes from the checkpoint in output_dir anyway.")
        return
    name = getattr(model.config, "_name_or_path", "") or ""
    if not name or name.startswith(models.EMBEDDED_PREFIX):
        raise ValueError(
            f"beta={config.beta} needs a KL reference model, and TRL rebuilds it for a full fine-tune from "
            f"model.config.name_or_path ({name!r}), which cannot be loaded. Use a LoRA policy "
            "(models.apply_lora: the reference is the base without the adapter), load the model from a folder "
            "written with save_pretrained, or set beta=0."
        )


def make_trainer(model, tokenizer, dataset, config, reward_funcs, *, dynamic_filter: bool = True,
                 reward_range=(-1.0, 1.0), filter_reward=None, band=(FILTER_LOW, FILTER_HIGH), callbacks=None,
                 rollout_func=None):
    """A GRPOTrainer for ``dataset`` (see tool_call_dataset): FilteredGRPOTrainer when dynamic_filter
    (reward_range, filter_reward and band are its settings), TRL's plain GRPOTrainer otherwise.
    rollout_func replaces TRL's generation (multi-turn episodes, see translation.make_rollout_func).
    With fp16 the trainable parameters are cast to fp32 afterwards (fix_fp16_dtypes)."""
    import os
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from trl import GRPOTrainer

    from helpers import models
    _check_reference(model, config)
    models.score_labelled_positions_only()
    reward_funcs = list(reward_funcs) if isinstance(reward_funcs, (list, tuple)) else [reward_funcs]
    kwargs = dict(model=model, reward_funcs=reward_funcs, args=config, train_dataset=dataset,
                  processing_class=tokenizer, callbacks=callbacks)
    if rollout_func is not None:
        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # TRL warns that the hook is experimental
        kwargs["rollout_func"] = rollout_func
    if dynamic_filter:
        trainer = _trainer_classes()(reward_range=reward_range, filter_reward=filter_reward, band=band, **kwargs)
    else:
        trainer = GRPOTrainer(**kwargs)
    fix_fp16_dtypes(trainer)
    return trainer


def train(trainer, resume: bool = True):
    """Train; with resume=True continue from the newest checkpoint-N in the trainer's output_dir, so
    re-running a notebook after a disconnect picks up where it stopped. Returns the trainer."""
    from helpers import sft
    ckpt = sft.last_checkpoint(trainer.args.output_dir) if resume else None
    trainer.train(resume_from_checkpoint=ckpt)
    return trainer


def _make_csv_logger():
    if "CsvLogger" in _LAZY:
        return _LAZY["CsvLogger"]
    import csv
    from pathlib import Path

    from transformers import TrainerCallback

    class _CsvLogger(TrainerCallback):
        """Writes one CSV row per logged training step: CSV_FIELDS, then "rewards/<name>/mean" and
        "rewards/<name>/std" for each reward function. Empty cells where TRL did not log a value
        (e.g. kl with beta=0). On a resumed run the rows after the checkpoint's step are dropped
        first, so the file never holds a step twice."""

        def __init__(self, path):
            self.path = Path(path)
            self.rows: list[dict] = []

        def _read(self):
            if not self.path.is_file():
                return []
            with self.path.open(newline="") as f:
                return list(csv.DictReader(f))

        def _write(self):
            fields = list(CSV_FIELDS)
            extra = sorted({k for r in self.rows for k in r if k.startswith("rewards/") and k not in fields})
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            with tmp.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=fields + extra, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(self.rows)
            tmp.replace(self.path)

        def on_train_begin(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:
                return
            start = state.global_step
            self.rows = [r for r in self._read() if start and r.get("step") and int(float(r["step"])) <= start]
            self._write()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs or not ("loss" in logs or "reward" in logs):
                return
            row = {"step": state.global_step}
            row.update({k: v for k, v in logs.items()
                        if k in CSV_FIELDS or (k.startswith("rewards/") and k.endswith(("/mean", "/std")))})
            self.rows.append(row)
            self._write()

    _CsvLogger.__name__ = _CsvLogger.__qualname__ = "CsvLogger"
    _CsvLogger.__module__ = __name__
    _LAZY["CsvLogger"] = _CsvLogger
    return _CsvLogger


_LAZY: dict = {}
_LAZY_MAKERS = {"FilteredGRPOTrainer": _trainer_classes, "CsvLogger": _make_csv_logger}


def __getattr__(name):
    """``grpo.FilteredGRPOTrainer`` and ``grpo.CsvLogger`` subclass TRL / transformers classes; they are
    built on first access so that the pure functions above import without either library."""
    if name in _LAZY_MAKERS:
        return _LAZY_MAKERS[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _mean_of(logs: list[dict], key: str) -> float | None:
    values = [float(h[key]) for h in logs if h.get(key) is not None and not math.isnan(float(h[key]))]
    return fmean(values) if values else None


def _no_advantage(h: dict) -> bool:
    """Did this logged step have all-zero advantages? (every group without variance, or every group filtered)"""
    return h.get("frac_reward_zero_std") == 1.0 or h.get(KEPT_FRACTION_KEY) == 0.0


def effective_updates(log_rows: list[dict]) -> int:
    """How many logged training steps could move the policy: those with a non-zero advantage somewhere
    (some group with reward variance that the dynamic filter kept). A run of N steps with E effective
    updates trained for E steps, whatever N says."""
    return sum(1 for h in log_rows if ("reward" in h or "loss" in h) and not _no_advantage(h))


def warnings_for(log_history: list[dict], max_completion_length: int | None = None) -> list[str]:
    """Plain-language warnings about the silent ways a GRPO run fails, read from ``trainer.state.log_history``
    (or CsvLogger rows). Each fires when the problem holds on average over the logged training steps:
    most completions cut off at the length limit; most groups with no reward variance (their advantages
    are 0); a loss of exactly 0 on most steps *because* every advantage was 0; the dynamic filter
    dropping most groups. Returns [] for a healthy run.

    A loss of 0 alone is no alarm: on the first (and, with num_iterations=1, every) pass the probability
    ratio is 1, each group's advantages sum to 0, so with equal-length completions and no KL yet the
    loss value is exactly 0 while the gradient is not. Only a 0 loss with all-zero advantages warns."""
    steps = [h for h in log_history if "reward" in h or "loss" in h]
    if not steps:
        return []
    out = []
    limit = f" of {max_completion_length} tokens" if max_completion_length else ""
    clipped = _mean_of(steps, "completions/clipped_ratio")
    if clipped is not None and clipped > WARN_CLIPPED:
        out.append(
            f"{clipped:.0%} of completions were cut off at the length limit{limit}: the rewards mostly score "
            "unfinished text (an unclosed call or answer tag scores as no output at all). Raise max_completion_length, or teach "
            "the output format first (SFT / distillation) so the model stops on its own.")
    zero_std = _mean_of(steps, "frac_reward_zero_std")
    if zero_std is not None and zero_std > WARN_ZERO_STD:
        out.append(
            f"In {zero_std:.0%} of groups every completion got the same reward: those groups have zero advantage "
            "and teach the model nothing. Typical causes: every sample fails the format (all -1), or the task is "
            "too easy or too hard for this model; more generations, a higher temperature or a graded reward help.")
    with_loss = [h for h in steps if h.get("loss") is not None]
    dead = sum(float(h["loss"]) == 0.0 and _no_advantage(h) for h in with_loss)
    if with_loss and dead / len(with_loss) > WARN_ZERO_LOSS:
        out.append(
            f"The loss was exactly 0 on {dead} of {len(with_loss)} steps because every advantage was 0 (no reward "
            "variance in any group, or the dynamic filter dropped every group): those steps did not train the "
            "policy. A loss of 0 here is not a sign of convergence.")
    kept = _mean_of(steps, KEPT_FRACTION_KEY)
    if kept is not None and kept < WARN_KEPT:
        out.append(
            f"The dynamic filter kept only {kept:.0%} of groups (mean reward outside "
            f"({FILTER_LOW}, {FILTER_HIGH}) or no variance): most of each batch was generated and thrown away.")
    return out
