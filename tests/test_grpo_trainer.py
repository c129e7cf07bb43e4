"""GRPO trainer wiring on TRL: config, prompt dataset, dynamic filtering, CSV log, warnings, resume.

Training tests use a tiny random Llama (hidden 32, 2 layers) with LoRA, the SmolLM2 tokenizer and short
prompts: a few seconds per run. What they check is plumbing, not learning."""
import csv
import dataclasses
import inspect
import json
from types import SimpleNamespace

import pytest
import torch

from helpers import data, grpo, models, rewards, runtime, sft

G = 4          # generations per prompt
LENGTH = 8     # max completion tokens


@pytest.fixture(scope="module")
def tok(model_cache):
    return models.load_tokenizer(models.SMOLLM2_ID)


@pytest.fixture(scope="module")
def rt():
    return runtime.setup("cpu", verbose=False)


def tiny_policy(tok, lora=True):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=1, pad_token_id=tok.pad_token_id))
    return models.apply_lora(model, gradient_checkpointing=False, r=4, alpha=8) if lora else model


def short_prompts(n=8):
    """Short prompts keep the tiny runs fast: on CPU, TRL 1.16 scores every prompt position over the
    whole vocabulary."""
    from datasets import Dataset
    return Dataset.from_list([{"prompt": f"<|im_start|>user\nsay {i}<|im_end|>\n<|im_start|>assistant\n",
                               "ground_truth": "[]", "tools": "[]", "id": f"p{i}"} for i in range(n)])


def constant_reward(completions, **kwargs):
    return [0.5] * len(completions)


def alternating_reward(completions, **kwargs):
    return [float(i % 2) for i in range(len(completions))]


def near_perfect_then_alternating(completions, **kwargs):
    """Group 0 nearly solved ([1, 1, 1, 0.97]: mean 0.9925, outside (0.01, 0.99) though it has variance,
    so TRL alone would train on it); group 1 alternating 0/1 (mean 0.5: kept)."""
    return [(0.97 if i == G - 1 else 1.0) if i < G else float(i % 2) for i in range(len(completions))]


def step_counter():
    """A callback that records the global step at the end of every step this run executes."""
    from transformers import TrainerCallback

    class StepCounter(TrainerCallback):
        def __init__(self):
            self.steps = []

        def on_step_end(self, args, state, control, **kwargs):
            self.steps.append(state.global_step)
    return StepCounter()


def record_batches(trainer):
    """Keep every batch FilteredGRPOTrainer hands to the loss (before TRL shuffles it)."""
    batches = []
    original = trainer._generate_and_score_completions

    def wrapped(inputs):
        out = original(inputs)
        batches.append({k: v.detach().clone() if torch.is_tensor(v) else v for k, v in out.items()})
        return out
    trainer._generate_and_score_completions = wrapped
    return batches


# ----------------------------------------------------------------------------- config + TRL hooks

def test_config_sets_what_we_rely_on_and_every_field_exists(rt, tmp_path):
    from trl import GRPOConfig, GRPOTrainer
    settings = grpo.grpo_settings(rt, tmp_path, max_steps=3, num_generations=G, max_completion_length=LENGTH, save_steps=1)
    fields = {f.name for f in dataclasses.fields(GRPOConfig)}
    assert set(settings) <= fields, f"GRPOConfig lost fields: {sorted(set(settings) - fields)}"
    cfg = grpo.grpo_config(rt, tmp_path, max_steps=3, num_generations=G, max_completion_length=LENGTH, save_steps=1)
    expected = dict(beta=1e-3, epsilon=0.2, epsilon_high=0.2, loss_type="dapo", scale_rewards="group",
                    num_generations=G, max_completion_length=LENGTH, per_device_train_batch_size=G,
                    num_iterations=1, temperature=1.0, mask_truncated_completions=False,
                    use_cpu=True, bf16=False, fp16=False, activation_checkpointing=False, gradient_checkpointing=False,
                    logging_steps=1, save_steps=1, save_total_limit=1, save_only_model=False, log_completions=False)
    assert {k: getattr(cfg, k) for k in expected} == expected
    assert cfg.report_to in ("none", [], ["none"]) and cfg.seed == 0
    # one prompt per step unless asked; overrides win
    assert grpo.grpo_config(rt, tmp_path, max_steps=1, num_generations=G, per_device_train_batch_size=2 * G,
                            beta=0.0).per_device_train_batch_size == 2 * G
    # gpu profile (checked as settings: TRL refuses fp16 without a GPU)
    t4 = SimpleNamespace(use_cpu=False, bf16=False, fp16=True)
    gpu = grpo.grpo_settings(t4, tmp_path, max_steps=3)
    assert (gpu["use_cpu"], gpu["fp16"], gpu["bf16"], gpu["activation_checkpointing"]) == (False, True, False, True)
    assert (gpu["num_generations"], gpu["max_completion_length"], gpu["per_device_train_batch_size"]) == (8, 256, 8)
    # the TRL internals FilteredGRPOTrainer hooks into are still there and still honour the loss mask
    assert callable(GRPOTrainer._generate_and_score_completions) and callable(GRPOTrainer._calculate_rewards)
    loss_src = inspect.getsource(GRPOTrainer._compute_loss)
    assert 'inputs["tool_mask"]' in loss_src and 'inputs["num_items_in_batch"]' in loss_src


def test_tool_call_dataset_columns_decode_for_the_rewards(tok):
    rows = data.load_xlam(download=False)[:3]
    ds = grpo.tool_call_dataset(rows, tok, desc_chars=40)
    assert set(ds.column_names) == {"prompt", "ground_truth", "tools", "id"}
    sim = rewards.make_trl_reward(rewards.sim_reward, "sim")
    for row, ex in zip(rows, ds):
        tools = models.shorten_tools(row["tools"], 40)
        assert ex["prompt"] == models.render_prompt(tok, models.build_messages(row["messages"]), tools)
        assert ex["prompt"].endswith("<|im_start|>assistant\n") and "<tools>" in ex["prompt"]
        assert json.loads(ex["ground_truth"]) == row["ground_truth"] and json.loads(ex["tools"]) == row["tools"]
        # the JSON-string columns reach sim_reward decoded: the right answer scores 1, a wrong one less
        right, wrong = rewards.render_tool_calls(row["ground_truth"]), "no call"
        scores = sim(prompts=[ex["prompt"]] * 2, completions=[right, wrong],
                     ground_truth=[ex["ground_truth"]] * 2, tools=[ex["tools"]] * 2)
        assert scores[0] == 1.0 and scores[1] < 1.0


def test_answerable_keeps_exactly_the_rows_whose_answer_fits(tok):
    rows = data.load_xlam(download=False)[:40]
    lengths = [rewards.answer_tokens(r["ground_truth"], tok) for r in rows]
    # the count is the rendered answer's tokens plus the end-of-turn token
    r0 = rows[0]
    assert lengths[0] == len(tok(rewards.render_tool_calls(r0["ground_truth"]), add_special_tokens=False)["input_ids"]) + 1
    budget = sorted(lengths)[len(lengths) // 2]
    kept = grpo.answerable(rows, tok, budget)
    assert 0 < len(kept) < len(rows)
    assert [r["id"] for r in kept] == [r["id"] for r, n in zip(rows, lengths) if n <= budget]
    assert grpo.answerable(rows, tok, max(lengths)) == rows and grpo.answerable(rows, tok, 1) == []


def test_grpo_candidates_pick_the_shortest_on_cpu_a_seeded_sample_on_request(tok, rt):
    from helpers import evaluate, train
    rows = data.load_xlam(download=False)[:60]
    usable = grpo.answerable(rows, tok, 96)
    kw = dict(max_completion_length=96, desc_chars=80, seed=3)
    shortest = train.grpo_candidates(rt, rows, tok, 10, **kw)   # cpu "auto"
    assert shortest == models.shortest_prompt_rows(usable, tok, 10, 80)
    sampled = train.grpo_candidates(rt, rows, tok, 10, pick="sample", **kw)
    assert sampled == evaluate.sample_rows(usable, 10, seed=3) and sampled != shortest
    assert all(r in usable for r in sampled)
    with pytest.raises(ValueError, match="pick"):
        train.grpo_candidates(rt, rows, tok, 10, pick="longest", **kw)


def test_shortest_prompt_rows_are_the_n_shortest_rendered_prompts_in_order(tok):
    rows = data.load_xlam(download=False)[:40]
    length = lambda r, chars: len(tok(models.render_prompt(tok, models.build_messages(r["messages"]),
                                                           models.shorten_tools(r["tools"], chars)))["input_ids"])
    picked = models.shortest_prompt_rows(rows, tok, 10, desc_chars=80)
    lengths = [length(r, 80) for r in picked]
    assert len(picked) == 10 and lengths == sorted(lengths)
    assert max(lengths) <= min(length(r, 80) for r in rows if r not in picked)
    a, b = dict(rows[0], id="first"), dict(rows[0], id="second")   # equal lengths keep their order
    assert [r["id"] for r in models.shortest_prompt_rows([a, b], tok, 2)] == ["first", "second"]
    assert [r["id"] for r in models.shortest_prompt_rows([b, a], tok, 2)] == ["second", "first"]
    assert models.shortest_prompt_rows(rows, tok, 100) == sorted(rows, key=lambda r: length(r, 80))
    # desc_chars=None measures prompts with whole descriptions
    assert [length(r, None) for r in models.shortest_prompt_rows(rows, tok, 40, None)] == sorted(length(r, None) for r in rows)


# ----------------------------------------------------------------------------- the filter

def test_keep_mask_scales_the_reward_and_drops_flat_or_saturated_groups():
    sim = (-1.0, 1.0)
    assert grpo.keep_mask([-1, -1, -1, -1, -1, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0], 4, sim) == [False, True, False, False]
    # [1, 1, 1, 0.97] on [0, 1]: mean 0.9925 is above 0.99, dropped although it has variance
    assert grpo.keep_mask([1, 1, 1, 0.97, 1, 1, 0.9, 0.9], 4, (0, 1)) == [False, True]
    nan = float("nan")
    assert grpo.keep_mask([nan, nan, nan, nan, nan, 0, 1, nan], 4, (0, 1)) == [False, True]
    with pytest.raises(ValueError):
        grpo.keep_mask([0, 1, 0], 2)


def test_constant_reward_filters_every_group_and_trains_nothing(tok, rt, tmp_path):
    cfg = grpo.grpo_config(rt, tmp_path, max_steps=2, num_generations=G, max_completion_length=LENGTH, save_strategy="no")
    trainer = grpo.make_trainer(tiny_policy(tok), tok, short_prompts(), cfg, [constant_reward], reward_range=(0, 1))
    assert type(trainer).__name__ == "FilteredGRPOTrainer"
    batches = record_batches(trainer)
    grpo.train(trainer, resume=False)
    assert len(batches) == 2
    for b in batches:
        assert torch.all(b["advantages"] == 0) and torch.all(b["tool_mask"] == 0) and int(b["num_items_in_batch"]) == 0
    steps = [h for h in trainer.state.log_history if "loss" in h]
    assert [h[grpo.KEPT_FRACTION_KEY] for h in steps] == [0.0, 0.0]
    assert [h[grpo.KEPT_GROUPS_KEY] for h in steps] == [0.0, 0.0]
    assert all(h["loss"] == 0.0 and h["grad_norm"] == 0.0 and h["frac_reward_zero_std"] == 1.0 for h in steps)
    found = " ".join(grpo.warnings_for(trainer.state.log_history))
    assert "same reward" in found and "exactly 0" in found and "kept only 0%" in found


def test_filter_drops_saturated_groups_that_trl_would_train_on(tok, rt, tmp_path):
    """Two groups per step: group 0 nearly solved (dropped), group 1 mixed (kept). TRL's own
    advantages for group 0 are not zero; after the filter they are, its tokens leave the loss mask and
    the token count that normalises the loss. The counters reach log_history and the CSV."""
    cfg = grpo.grpo_config(rt, tmp_path, max_steps=2, num_generations=G, max_completion_length=LENGTH,
                           per_device_train_batch_size=2 * G, save_strategy="no")
    log = tmp_path / "log.csv"
    trainer = grpo.make_trainer(tiny_policy(tok), tok, short_prompts(), cfg, [near_perfect_then_alternating],
                                reward_range=(0, 1), callbacks=[grpo.CsvLogger(log)])
    batches = record_batches(trainer)
    grpo.train(trainer, resume=False)
    for b in batches:
        assert torch.all(b["advantages"][:G] == 0) and torch.all(b["advantages"][G:] != 0)
        assert torch.all(b["tool_mask"][:G] == 0) and torch.all(b["tool_mask"][G:] == 1)
        assert int(b["num_items_in_batch"]) == int(b["completion_mask"][G:].sum()) > 0
    logged = list(trainer._logs["advantages"])[-2 * G:]  # the completions table shows the filtered advantages
    assert logged[:G] == [0.0] * G and all(a != 0 for a in logged[G:])
    steps = [h for h in trainer.state.log_history if "loss" in h]
    assert [h[grpo.KEPT_FRACTION_KEY] for h in steps] == [0.5, 0.5]
    assert all(h["frac_reward_zero_std"] == 0.0 and h["grad_norm"] > 0 for h in steps)  # TRL saw variance in both

    with log.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == ["1", "2"]
    header = list(rows[0])
    assert header[:len(grpo.CSV_FIELDS)] == list(grpo.CSV_FIELDS)
    assert "rewards/near_perfect_then_alternating/mean" in header
    assert float(rows[0][grpo.KEPT_FRACTION_KEY]) == 0.5 and float(rows[0]["completions/clipped_ratio"]) >= 0
    assert rows[0]["kl"] != "" and rows[0]["reward"] != ""


def test_plain_trainer_when_the_filter_is_off(tok, rt, tmp_path):
    from trl import GRPOTrainer
    cfg = grpo.grpo_config(rt, tmp_path, max_steps=1, num_generations=G, max_completion_length=LENGTH)
    trainer = grpo.make_trainer(tiny_policy(tok), tok, short_prompts(), cfg, [alternating_reward], dynamic_filter=False)
    assert type(trainer) is GRPOTrainer
    with pytest.raises(ValueError, match="filter_reward"):
        grpo.make_trainer(tiny_policy(tok), tok, short_prompts(), cfg, [alternating_reward], filter_reward="nope")


def test_kl_reference_problems_are_caught_before_trl(tok, rt, tmp_path):
    cfg = grpo.grpo_config(rt, tmp_path, max_steps=1, num_generations=G, max_completion_length=LENGTH)
    with pytest.raises(ValueError, match="KL reference"):  # full fine-tune of a model TRL cannot reload
        grpo.make_trainer(tiny_policy(tok, lora=False), tok, short_prompts(), cfg, [alternating_reward])
    policy = tiny_policy(tok)
    grpo.make_trainer(policy, tok, short_prompts(), cfg, [alternating_reward])
    assert "ref" in policy.peft_config  # TRL's frozen copy of the starting adapter
    with pytest.raises(ValueError, match="Load the policy again"):  # the same object a second time
        grpo.make_trainer(policy, tok, short_prompts(), cfg, [alternating_reward])


# ----------------------------------------------------------------------------- fp16 fix

def test_fp16_fix_casts_trainable_parameters_only_under_fp16():
    def fake(fp16):
        model = torch.nn.Linear(2, 2).to(torch.bfloat16)
        return SimpleNamespace(args=SimpleNamespace(fp16=fp16), model=model)
    t = fake(True)
    assert grpo.fix_fp16_dtypes(t) == 2 and {p.dtype for p in t.model.parameters()} == {torch.float32}
    t = fake(False)
    assert grpo.fix_fp16_dtypes(t) == 0 and {p.dtype for p in t.model.parameters()} == {torch.bfloat16}


def test_make_trainer_applies_the_fp16_fix(tok, rt, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(grpo, "fix_fp16_dtypes", lambda trainer: seen.append(trainer) or 0)
    cfg = grpo.grpo_config(rt, tmp_path, max_steps=1, num_generations=G, max_completion_length=LENGTH)
    trainer = grpo.make_trainer(tiny_policy(tok), tok, short_prompts(), cfg, [alternating_reward])
    assert seen == [trainer]


# ----------------------------------------------------------------------------- warnings

HEALTHY = {"loss": 0.0, "reward": 0.4, "reward_std": 0.3, "frac_reward_zero_std": 0.25,
           "completions/clipped_ratio": 0.1, grpo.KEPT_FRACTION_KEY: 0.75}


def test_warnings_fire_on_clipped_and_flat_runs_and_stay_quiet_on_healthy_ones():
    # a loss of exactly 0 with non-zero advantages is normal GRPO (ratio 1, advantages sum to 0): quiet
    assert grpo.warnings_for([dict(HEALTHY, step=s) for s in (1, 2, 3)] + [{"train_runtime": 1.0}]) == []
    assert grpo.warnings_for([]) == []
    clipped = grpo.warnings_for([dict(HEALTHY, **{"completions/clipped_ratio": 0.9})] * 3, max_completion_length=64)
    assert len(clipped) == 1 and "90% of completions were cut off" in clipped[0] and "64 tokens" in clipped[0]
    flat = grpo.warnings_for([dict(HEALTHY, frac_reward_zero_std=1.0, reward_std=0.0, **{grpo.KEPT_FRACTION_KEY: 0.0})] * 3)
    assert len(flat) == 3 and "same reward" in flat[0] and "exactly 0 on 3 of 3" in flat[1] and "kept only 0%" in flat[2]
    # a plain trainer (no filter counters), most groups flat but some KL: no zero-loss warning
    plain = [{"loss": 1e-6, "reward": -1.0, "frac_reward_zero_std": 0.8, "completions/clipped_ratio": 0.0}] * 2
    assert len(grpo.warnings_for(plain)) == 1


def test_csv_logger_drops_rows_after_the_resumed_checkpoint(tmp_path):
    from transformers import TrainerState
    log = tmp_path / "log.csv"
    logger = grpo.CsvLogger(log)
    state = TrainerState()
    logger.on_train_begin(None, state, None)
    for step in (1, 2, 3):
        state.global_step = step
        logger.on_log(None, state, None, logs={"loss": 0.1, "reward": 0.5, "rewards/sim/mean": 0.5})
    logger.on_log(None, state, None, logs={"train_runtime": 3.0})  # the end-of-training summary is no row
    state.global_step = 2  # resumed from checkpoint-2: step 3 will run again
    again = grpo.CsvLogger(log)
    again.on_train_begin(None, state, None)
    with log.open(newline="") as f:
        assert [r["step"] for r in csv.DictReader(f)] == ["1", "2"]
    state.global_step = 0  # a fresh run starts a fresh file
    grpo.CsvLogger(log).on_train_begin(None, state, None)
    with log.open(newline="") as f:
        assert list(csv.DictReader(f)) == []


# ----------------------------------------------------------------------------- resume

class Interrupted(Exception):
    pass


def test_an_interrupted_run_resumes_from_its_checkpoint(tok, rt, tmp_path):
    from transformers import TrainerCallback

    class KillBeforeStep3(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 2:
                raise Interrupted("the notebook's kernel died")

    out, log = tmp_path / "run", tmp_path / "run" / "log.csv"
    cfg = grpo.grpo_config(rt, out, max_steps=3, num_generations=G, max_completion_length=LENGTH, save_steps=1)
    first = step_counter()
    trainer = grpo.make_trainer(tiny_policy(tok), tok, short_prompts(), cfg, [alternating_reward], reward_range=(0, 1),
                                callbacks=[first, KillBeforeStep3(), grpo.CsvLogger(log)])
    with pytest.raises(Interrupted):
        grpo.train(trainer)
    assert first.steps == [1, 2] and sft.last_checkpoint(out).endswith("checkpoint-2")

    second = step_counter()  # the notebook re-run: same settings, a fresh model object
    trainer = grpo.make_trainer(tiny_policy(tok), tok, short_prompts(), cfg, [alternating_reward], reward_range=(0, 1),
                                callbacks=[second, grpo.CsvLogger(log)])
    grpo.train(trainer)
    assert second.steps == [3], "the second run must resume at step 3, not start over"
    assert trainer.state.global_step == 3
    with log.open(newline="") as f:
        assert [r["step"] for r in csv.DictReader(f)] == ["1", "2", "3"]
