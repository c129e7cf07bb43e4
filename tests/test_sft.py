"""SFT on tool calls: the examples match the chat template exactly, and training resumes."""
import json

import pytest

from helpers import data, models, rewards, runtime, sft


@pytest.fixture(scope="module")
def tok(model_cache):
    return models.load_tokenizer(models.SMOLLM2_ID)


@pytest.fixture(scope="module")
def rows():
    return data.load_xlam(download=False)[:12]


def test_prompt_plus_completion_is_the_chat_template_rendering(tok, rows):
    """What SFT trains on must be exactly what the template renders for that conversation,
    or the model learns a format it never sees at inference."""
    for row in rows:
        ex = sft.tool_call_example(row, tok)
        conversation = models.build_messages(row["messages"]) + [models.tool_call_message(row["ground_truth"])]
        rendered = tok.apply_chat_template(conversation, tools=models.as_chat_tools(row["tools"]), tokenize=False)
        assert rendered == ex["prompt"] + ex["completion"] + tok.eos_token + "\n", row["id"]
        assert rewards.sim_reward(ex["completion"], row["ground_truth"], row["tools"]) == 1.0


def test_a_no_call_row_trains_on_its_reply(tok, rows):
    row = dict(rows[0], ground_truth=[], answer_text="Which city do you mean?")
    ex = sft.tool_call_example(row, tok)
    conversation = models.build_messages(row["messages"]) + [{"role": "assistant", "content": row["answer_text"]}]
    rendered = tok.apply_chat_template(conversation, tools=models.as_chat_tools(row["tools"]), tokenize=False)
    assert rendered == ex["prompt"] + ex["completion"] + tok.eos_token + "\n"
    assert rewards.binary_reward(ex["completion"], [], row["tools"]) == 1.0
    with pytest.raises(ValueError, match="neither calls nor a reply"):
        sft.tool_call_example(dict(row, answer_text=None), tok)


def test_shortened_tools_keep_what_scoring_needs(rows):
    for row in rows:
        short = models.shorten_tools(row["tools"], 20)
        assert rewards.tool_parameters(short) == rewards.tool_parameters(row["tools"])
        assert all(len(t["description"]) <= 20 for t in short)
        for t in short:
            for p in t["parameters"]["properties"].values():
                assert len(p.get("description", "")) <= 20
    assert models.shorten_tools(rows[0]["tools"], None) is rows[0]["tools"]


@pytest.mark.parametrize("max_chars", [0, 1, 3, 4])
def test_very_short_limits_are_respected(rows, max_chars):
    for t in models.shorten_tools(rows[0]["tools"], max_chars):
        assert len(t["description"]) <= max_chars
        assert all(len(p.get("description", "")) <= max_chars for p in t["parameters"]["properties"].values())
    with pytest.raises(ValueError):
        models.shorten_tools(rows[0]["tools"], -1)


def test_rows_that_do_not_fit_are_dropped_not_truncated(tok, rows):
    ds, dropped = sft.build_dataset(rows, tok, max_length=300, desc_chars=80)
    assert dropped > 0 and len(ds) + dropped == len(rows)
    for ex in ds:
        assert sft.fits(ex, tok, 300)


def _example_tokens(row, tok):
    ex = sft.tool_call_example(row, tok, desc_chars=80)
    return len(tok(ex["prompt"] + ex["completion"], add_special_tokens=False)["input_ids"])


def test_drop_distractors_removes_uncalled_tools_until_the_row_fits(tok):
    rows = [r for r in data.load_xlam(download=False)[:200] if len(r["tools"]) >= 3 and len(r["ground_truth"]) == 1][:8]
    assert rows
    for row in rows:
        called = {c["name"] for c in row["ground_truth"]}
        full = _example_tokens(row, tok)
        assert sft.drop_distractors(row, tok, max_length=full + 1, desc_chars=80) is row   # fits already: unchanged
        alone = _example_tokens(dict(row, tools=[t for t in row["tools"] if t["name"] in called]), tok)
        assert sft.drop_distractors(row, tok, max_length=alone, desc_chars=80) is None      # not even the called tool fits
        limit = (alone + full) // 2 + 1
        cut = sft.drop_distractors(row, tok, max_length=limit, desc_chars=80)
        assert cut is not None and _example_tokens(cut, tok) + 1 <= limit
        names = [t["name"] for t in cut["tools"]]
        assert called <= set(names) and len(names) < len(row["tools"])
        assert names == [t["name"] for t in row["tools"] if t["name"] in names]             # order kept
        assert cut["ground_truth"] == row["ground_truth"] and cut["messages"] == row["messages"]
        # longest uncalled tool first, and no more than needed: the last one removed, put back, breaks the limit
        size = lambda t: len(json.dumps(t))
        removed = [t for t in row["tools"] if t["name"] not in names]
        spare = [t for t in cut["tools"] if t["name"] not in called]
        assert min(map(size, removed)) >= max(map(size, spare), default=0)
        last = sorted((t for t in row["tools"] if t["name"] not in called), key=size, reverse=True)[len(removed) - 1]
        back = dict(row, tools=[t for t in row["tools"] if t["name"] in names or t is last])
        assert _example_tokens(back, tok) + 1 > limit


def test_a_no_call_row_keeps_one_tool(tok):
    row = dict(data.load_xlam(download=False)[0], ground_truth=[], answer_text="I cannot help with that.")
    assert len(row["tools"]) > 1
    assert sft.drop_distractors(row, tok, max_length=10, desc_chars=80) is None
    one = _example_tokens(dict(row, tools=[min(row["tools"], key=lambda t: len(json.dumps(t)))]), tok)
    cut = sft.drop_distractors(row, tok, max_length=one + 1, desc_chars=80)
    assert cut is not None and len(cut["tools"]) == 1


def test_build_dataset_with_fit_tools_keeps_more_rows(tok):
    rows = data.load_xlam(download=False)[:40]
    plain, dropped = sft.build_dataset(rows, tok, max_length=450, desc_chars=80)
    fitted, dropped_fit = sft.build_dataset(rows, tok, max_length=450, desc_chars=80, fit_tools=True)
    assert len(fitted) > len(plain) and dropped_fit < dropped
    assert len(fitted) + dropped_fit == len(rows)
    assert all(sft.fits(ex, tok, 450) for ex in fitted)
    assert set(plain["id"]) <= set(fitted["id"])


def _tiny_llama(tok):
    from transformers import LlamaConfig, LlamaForCausalLM
    return LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=1, pad_token_id=tok.pad_token_id))


def _count_dataset():
    from datasets import Dataset
    return Dataset.from_list([{"prompt": f"<|im_start|>user\nsay {i}<|im_end|>\n<|im_start|>assistant\n", "completion": f"{i}"}
                              for i in range(8)])


def test_last_checkpoint_skips_one_killed_mid_save(tmp_path):
    assert sft.last_checkpoint(tmp_path / "absent") is None
    assert sft.last_checkpoint(tmp_path) is None
    for step, complete in ((2, True), (10, True), (12, False)):   # 12: killed before trainer_state.json
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "model.safetensors").write_bytes(b"")
        if complete:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-x").mkdir()
    assert sft.last_checkpoint(tmp_path).endswith("checkpoint-10")   # 10 > 2 numerically, and 12 is incomplete


@pytest.mark.slow
def test_training_resumes_from_the_last_checkpoint(tmp_path, tok):
    rt = runtime.setup("cpu", verbose=False)
    tiny, ds = _tiny_llama(tok), _count_dataset()
    cfg = sft.sft_config(rt, tmp_path, max_steps=2, learning_rate=1e-3, batch_size=2, save_steps=1, max_length=64)
    sft.train(tiny, tok, ds, cfg)
    assert sft.last_checkpoint(tmp_path).endswith("checkpoint-2")
    cfg = sft.sft_config(rt, tmp_path, max_steps=4, learning_rate=1e-3, batch_size=2, save_steps=1, max_length=64)
    from transformers import TrainerCallback
    ran = []

    class Count(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            ran.append(state.global_step)

    trainer = sft.train(tiny, tok, ds, cfg, callbacks=[Count()])
    assert trainer.state.global_step == 4
    assert ran == [3, 4], "the second run must resume at step 3, not start over"


def test_lm_head_scores_labelled_positions_only_with_the_same_numbers(monkeypatch, tok):
    import torch
    from trl.trainer import utils as trl_utils
    torch.manual_seed(0)
    tiny = _tiny_llama(tok)
    trl_utils.add_fused_lm_head(tiny, outputs=("log_probs", "entropy", "is_top1"))
    ids = torch.randint(0, 200, (2, 12))
    labels = ids.clone()
    labels[:, :8] = -100            # a prompt of 8 tokens: only the last 4 carry a label

    def forward():
        tiny.zero_grad()
        out = tiny(input_ids=ids, labels=labels, fused_lm_head=True)
        out.loss.backward()
        return out.log_probs.detach(), out.loss.detach(), tiny.lm_head.weight.grad.clone()

    monkeypatch.setattr(trl_utils, "_use_triton", getattr(trl_utils._use_triton, "original", trl_utils._use_triton))
    assert not trl_utils._use_triton(torch.device("cpu"))   # TRL's own rule: every position projected on CPU
    before = forward()
    assert models.score_labelled_positions_only()
    assert trl_utils._use_triton(torch.device("cpu"))
    after = forward()
    for a, b in zip(before, after):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert (after[0][:, :7] == 0).all() and (after[0][:, 8:] != 0).all()


def test_validation_curve_scores_every_n_steps_in_eval_mode(tmp_path, tok):
    rt = runtime.setup("cpu", verbose=False)
    tiny, ds = _tiny_llama(tok), _count_dataset()
    seen = []

    def score(model):
        seen.append(model.training)
        return {"format_valid": 0.5}

    curve = sft.validation_curve(score, 2, log=None)
    cfg = sft.sft_config(rt, tmp_path, max_steps=3, learning_rate=1e-3, batch_size=2, save_steps=100, max_length=64)
    trainer = sft.train(tiny, tok, ds, cfg, callbacks=[curve])
    assert [p["step"] for p in curve.points] == [2, 3]            # every 2 steps, and the last one
    assert seen == [False, False] and trainer.model.training       # scored in eval mode, training mode restored
    assert curve.points[0]["format_valid"] == 0.5 and curve.eval_seconds >= 0
