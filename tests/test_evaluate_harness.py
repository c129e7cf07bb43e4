"""The evaluation harness on a scripted model whose outputs are known: exact expected scores."""
import json

import pytest
import torch

from helpers import data, evaluate, models, rewards


@pytest.fixture
def scripted(monkeypatch):
    answers, calls = {}, []

    def fake_generate(model, tokenizer, prompts, **kwargs):
        calls.append(list(prompts))
        return [answers.get(p, "no idea") for p in prompts]

    monkeypatch.setattr(models, "generate", fake_generate)
    return answers, calls


# the cache keys on the weights, so the scripted model needs some: a real (tiny) torch module
TINY = torch.nn.Linear(2, 2)


class Tok:
    """Renders prompts as JSON so the scripted model can key on them (no real template needed)."""
    def apply_chat_template(self, messages, tools=None, tokenize=False, add_generation_prompt=True):
        return json.dumps({"m": messages[-1]["content"], "t": [t["function"]["name"] for t in tools or []]})


def test_bfcl_scores_and_cache(scripted, tmp_path):
    answers, calls = scripted
    rows = data.load_bfcl("simple", download=False)[:4]
    tok = Tok()
    # row 0 answered exactly, row 1 with a wrong value, rows 2-3 in prose
    for i, row in enumerate(rows[:2]):
        gt = evaluate.bfcl_ground_truth_calls(row["ground_truth"])
        if i == 1:
            key = next(iter(gt[0]["arguments"]))
            gt[0]["arguments"][key] = "definitely wrong"
        prompt = models.render_prompt(tok, models.build_messages(row["question"]), evaluate.bfcl_tools(row["functions"]))
        answers[prompt] = rewards.render_tool_calls(gt)
    cache = tmp_path / "gen.jsonl"
    records, summary = evaluate.evaluate_bfcl(TINY, tok, {"simple": rows}, cache_path=str(cache), model_tag="scripted")
    assert [r["valid"] for r in records] == [True, False, False, False]
    assert summary["simple_accuracy"] == 0.25 and summary["ast_mean"] == 0.25
    assert records[0]["sim"] == 1.0 and 0 <= records[1]["sim"] < 1 and records[2]["sim"] == 0.0
    assert records[2]["error_type"] == "simple_function_checker:wrong_count"  # prose decodes to no call at all
    assert len(calls) == 1
    # why they fail, per category: most frequent first, shares of the category's records
    breakdown = evaluate.error_breakdown(records)
    assert breakdown[0]["error_type"] == "simple_function_checker:wrong_count" and breakdown[0]["count"] == 2
    assert {b["error_type"]: b["count"] for b in breakdown}["correct"] == 1
    assert sum(b["share"] for b in breakdown) == pytest.approx(1.0) and breakdown[0]["meaning"]
    # a rerun only scores: nothing is generated again
    records2, summary2 = evaluate.evaluate_bfcl(TINY, tok, {"simple": rows}, cache_path=str(cache), model_tag="scripted")
    assert len(calls) == 1 and summary2 == summary
    # the tag is a label: the same weights under another tag (another notebook) are not generated again
    evaluate.evaluate_bfcl(TINY, tok, {"simple": rows}, cache_path=str(cache), model_tag="other")
    assert len(calls) == 1
    # other weights miss the cache, and so do other generation settings
    evaluate.evaluate_bfcl(torch.nn.Linear(2, 2), tok, {"simple": rows}, cache_path=str(cache), model_tag="scripted")
    assert len(calls) == 2
    evaluate.evaluate_bfcl(TINY, tok, {"simple": rows}, cache_path=str(cache), model_tag="scripted", max_new_tokens=7)
    assert len(calls) == 3


def test_error_breakdown_per_category():
    records = [{"category": "simple", "valid": True, "error_type": None},
               {"category": "simple", "valid": False, "error_type": "value_error:string"},
               {"category": "simple", "valid": False, "error_type": "value_error:string"},
               {"category": "irrelevance", "valid": False, "error_type": "irrelevance_error:decoder_success"},
               {"category": "simple", "valid": False, "error_type": "something_new"}]
    rows = evaluate.error_breakdown(records)
    assert [(r["category"], r["error_type"], r["count"]) for r in rows] == [
        ("simple", "value_error:string", 2), ("simple", "correct", 1), ("simple", "something_new", 1),
        ("irrelevance", "irrelevance_error:decoder_success", 1)]
    assert rows[0]["share"] == 0.5 and rows[-1]["share"] == 1.0
    assert rows[2]["meaning"] == "" and rows[0]["meaning"]
    assert evaluate.error_breakdown([]) == []


def test_truncated_cache_line_is_regenerated(scripted, tmp_path):
    _, calls = scripted
    cache = tmp_path / "gen.jsonl"
    evaluate.generate_cached(TINY, None, ["a", "b"], cache_path=str(cache), model_tag="t")
    lines = cache.read_text().splitlines()
    cache.write_text(lines[0] + "\n" + lines[1][:10] + "\n")  # an interrupted write
    assert evaluate.generate_cached(TINY, None, ["a", "b"], cache_path=str(cache), model_tag="t") == ["no idea", "no idea"]
    assert calls[-1] == ["b"]


def test_sampled_completions_are_cached_per_prompt_and_seed(monkeypatch, tmp_path):
    calls = []

    def fake_generate(model, tokenizer, prompts, *, num_return_sequences=1, do_sample=False, **kwargs):
        calls.append((list(prompts), num_return_sequences, do_sample, kwargs.get("temperature")))
        return [f"{p}:{j}:{len(calls)}" for p in prompts for j in range(num_return_sequences)]

    monkeypatch.setattr(models, "generate", fake_generate)
    cache = str(tmp_path / "samples.jsonl")
    first = evaluate.sample_cached(TINY, None, ["a", "b"], k=3, temperature=0.7, cache_path=cache)
    assert first == [["a:0:1", "a:1:1", "a:2:1"], ["b:0:1", "b:1:1", "b:2:1"]]   # prompt-major k-lists
    assert calls == [(["a", "b"], 3, True, 0.7)]
    # a rerun reads them back; a new prompt alone is sampled
    again = evaluate.sample_cached(TINY, None, ["b", "c", "a"], k=3, temperature=0.7, cache_path=cache)
    assert again[0] == first[1] and again[2] == first[0] and calls[-1][0] == ["c"]
    # another seed, k or temperature is another sample
    evaluate.sample_cached(TINY, None, ["a"], k=3, temperature=0.7, seed=1, cache_path=cache)
    evaluate.sample_cached(TINY, None, ["a"], k=2, temperature=0.7, cache_path=cache)
    evaluate.sample_cached(TINY, None, ["a"], k=3, temperature=1.0, cache_path=cache)
    assert len(calls) == 5


def test_cache_misses_when_the_weights_change(scripted, tmp_path):
    """Same tag, new weights (a rerun with another learning rate into the same folder): generated again."""
    _, calls = scripted
    cache = tmp_path / "gen.jsonl"
    model = torch.nn.Linear(2, 2)
    evaluate.generate_cached(model, None, ["a"], cache_path=str(cache), model_tag="03:sim:0")
    evaluate.generate_cached(model, None, ["a"], cache_path=str(cache), model_tag="03:sim:0")
    assert len(calls) == 1
    with torch.no_grad():
        model.weight.add_(1e-3)   # in place, as an optimizer step
    evaluate.generate_cached(model, None, ["a"], cache_path=str(cache), model_tag="03:sim:0")
    assert len(calls) == 2
    fresh = torch.nn.Linear(2, 2)   # the same weights in another object (a reload) hit the cache
    fresh.load_state_dict(model.state_dict())
    evaluate.generate_cached(fresh, None, ["a"], cache_path=str(cache), model_tag="03:sim:0")
    assert len(calls) == 2


def test_weights_fingerprint():
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    assert models.weights_fingerprint(a) != models.weights_fingerprint(b)
    b.load_state_dict(a.state_dict())
    assert models.weights_fingerprint(a) == models.weights_fingerprint(b)
    assert models.weights_fingerprint(a.to(torch.bfloat16)) != models.weights_fingerprint(b)   # dtype counts


@pytest.mark.parametrize("fused", [False, True])
def test_weights_fingerprint_follows_optimizer_steps(fused):
    # fused AdamW (the Trainer's default) writes parameters without bumping their version counters:
    # a fingerprint memoised on those counters kept the untrained model's key after training
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, fused=fused)
    before = models.weights_fingerprint(model)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    assert models.weights_fingerprint(model) != before


def test_tool_call_records_on_xlam(scripted):
    answers, _ = scripted
    rows = data.load_xlam(download=False)[:3]
    tok = Tok()
    p0 = models.render_prompt(tok, models.build_messages(rows[0]["messages"]), rows[0]["tools"])
    answers[p0] = rewards.render_tool_calls(rows[0]["ground_truth"])
    records, summary = evaluate.evaluate_tool_calls(None, tok, rows)
    assert [r["exact"] for r in records] == [1.0, 0.0, 0.0]
    assert summary == {"n": 3, "format_valid": 1 / 3, "sim_mean": 1 / 3, "sim_pos_mean": 1 / 3, "exact": 1 / 3}


def test_sampled_tool_call_records_average_each_questions_samples(monkeypatch, tmp_path):
    rows = data.load_xlam(download=False)[:2]
    tok = Tok()
    right = rewards.render_tool_calls(rows[0]["ground_truth"])
    scripts = {0: [right, "prose", right, "<tool_call>{broken}</tool_call>"], 1: ["prose"] * 4}
    prompts = [models.render_prompt(tok, models.build_messages(r["messages"]), r["tools"]) for r in rows]
    seen = []

    def fake_generate(model, tokenizer, ps, *, num_return_sequences=1, do_sample=False, **kwargs):
        seen.append((len(ps), num_return_sequences, do_sample))
        return [t for p in ps for t in scripts[prompts.index(p)][:num_return_sequences]]

    monkeypatch.setattr(models, "generate", fake_generate)
    cache = str(tmp_path / "s.jsonl")
    records, summary = evaluate.sample_tool_calls(TINY, tok, rows, k=4, cache_path=cache)
    assert seen == [(2, 4, True)]
    assert records[0]["exact"] == 0.5 and records[0]["format_valid"] == 0.5 and records[0]["samples"] == 4
    assert records[0]["sim"] == pytest.approx((1 + 0 + 1 - 1) / 4)   # the broken call pays the format gate's -1
    assert records[1] == {"id": rows[1]["id"], "samples": 4, "completions": scripts[1][:4], "format_valid": 0.0,
                          "sim": 0.0, "exact": 0.0}
    assert summary["exact"] == 0.25 and summary["n"] == 2
    # a rerun reads the samples back; the records feed the same paired gain as greedy ones
    again, _ = evaluate.sample_tool_calls(TINY, tok, rows, k=4, cache_path=cache)
    assert again == records and len(seen) == 1
    from helpers import scoreboard
    gain = {g["metric"]: g["gain"] for g in scoreboard.gain_rows([records], [[dict(r, exact=0.0) for r in records]])}
    assert gain["exact"] == 0.25 and gain["sim"] == 0.0
    with pytest.raises(ValueError, match="k must be"):
        evaluate.sample_tool_calls(TINY, tok, rows, k=0)


def test_bfcl_helpers():
    gt = [{"f": {"a": [1, 2], "b": ["", "x"], "c": ["y"]}}]
    assert evaluate.bfcl_ground_truth_calls(gt) == [{"name": "f", "arguments": {"a": 1, "c": "y"}}]
    tools = evaluate.bfcl_tools([{"name": "f", "parameters": {"type": "dict", "properties": {"x": {"type": "float"},
                                                                                             "d": {"type": "dict", "properties": {"y": {"type": "tuple"}}}}}}])
    assert tools[0]["parameters"]["type"] == "object"
    assert tools[0]["parameters"]["properties"]["x"]["type"] == "number"
    assert tools[0]["parameters"]["properties"]["d"]["properties"]["y"]["type"] == "array"
    rows = list(range(100))
    assert evaluate.sample_rows(rows, 10, seed=1) == evaluate.sample_rows(rows, 10, seed=1)
    assert evaluate.sample_rows(rows, 10, seed=1) == sorted(evaluate.sample_rows(rows, 10, seed=1))
    assert evaluate.sample_rows(rows, None) == rows
    keyed = [{"id": i} for i in range(20)]
    held, tuning = evaluate.held_out_split(keyed, 8, seed=0)
    assert held == evaluate.sample_rows(keyed, 8, seed=0) and len(tuning) == 12
    assert sorted(r["id"] for r in held + tuning) == list(range(20))   # disjoint, and nothing lost


def test_bootstrap_ci_brackets_the_mean_and_narrows_with_data():
    import math
    small = [0, 1] * 10
    big = [0, 1] * 500
    lo_s, hi_s = evaluate.bootstrap_ci(small, n=400, seed=1)
    lo_b, hi_b = evaluate.bootstrap_ci(big, n=400, seed=1)
    assert lo_s < 0.5 < hi_s and lo_b < 0.5 < hi_b
    assert hi_b - lo_b < (hi_s - lo_s) / 3            # 50x the data: about 7x narrower
    assert evaluate.bootstrap_ci(small, n=400, seed=1) == (lo_s, hi_s)   # seeded
    assert evaluate.bootstrap_ci([1, 1, 1], n=100) == (1.0, 1.0)
    assert all(math.isnan(x) for x in evaluate.bootstrap_ci([1.0], n=100))
    assert evaluate.bootstrap_ci(["a", "b", "b", "b"], lambda xs: xs.count("b") / len(xs), n=200)[1] <= 1.0


def test_bfcl_python_format_scores_python_lists(scripted, tmp_path):
    answers, calls = scripted
    rows = data.load_bfcl("simple", download=False)[:3]
    tok = Tok()
    gt0 = evaluate.bfcl_ground_truth_calls(rows[0]["ground_truth"])
    p0, p1 = (evaluate.bfcl_prompt(tok, r, "python") for r in rows[:2])
    answers[p0] = evaluate.render_python_calls([{c["name"]: c["arguments"]} for c in gt0])
    answers[p1] = rewards.render_tool_calls(evaluate.bfcl_ground_truth_calls(rows[1]["ground_truth"]))  # JSON, wrong format
    records, summary = evaluate.evaluate_bfcl(TINY, tok, {"simple": rows}, fmt="python", cache_path=str(tmp_path / "g.jsonl"))
    assert [r["valid"] for r in records] == [True, False, False]
    assert records[1]["error_type"] == "decoder_failed"
    assert records[0]["sim"] == 1.0 and records[1]["sim"] == -1.0 and summary["simple_accuracy"] == pytest.approx(1 / 3)
    # the same rows in the json format are different prompts (the cache tells them apart)
    evaluate.evaluate_bfcl(TINY, tok, {"simple": rows}, fmt="json", cache_path=str(tmp_path / "g.jsonl"))
    assert len(calls) == 2
    with pytest.raises(ValueError, match="fmt"):
        evaluate.evaluate_bfcl(None, tok, {"simple": rows}, fmt="xml")


def test_bfcl_python_messages():
    row = data.load_bfcl("simple", download=False)[0]
    msgs = evaluate.bfcl_python_messages(row["question"], row["functions"])
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert "[func_name1(params_name1=params_value1" in msgs[0]["content"]
    assert json.dumps([dict(f, description=f["description"] + evaluate.BFCL_PYTHON_HINT) for f in row["functions"]],
                      indent=4) in msgs[0]["content"]
    own = [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]]
    merged = evaluate.bfcl_python_messages(own, row["functions"])
    assert len(merged) == 2 and merged[0]["content"].endswith("\n\nBe brief.")
    short = evaluate.bfcl_python_messages(row["question"], row["functions"], desc_chars=20)
    assert len(short[0]["content"]) < len(msgs[0]["content"])


def test_sample_sizes_per_category():
    from helpers import evaluate
    sizes = {"simple": 100, "default": 25}
    assert evaluate.per_category(sizes, "simple") == 100 and evaluate.per_category(sizes, "parallel") == 25
    assert evaluate.per_category({"simple": 3}, "parallel") is None          # unnamed, no default: all
    assert evaluate.per_category(7, "simple") == 7 and evaluate.per_category(None, "simple") is None


def test_every_bfcl_reference_answer_fits_its_budget(model_cache):
    """A budget shorter than the answer fails a question the model got right (at a flat 128 tokens half
    of BFCL v3 parallel could not be answered): every reference answer, written the way our models
    write calls, must fit its category's budget, and the budgets must be what the checks use."""
    tok = models.load_tokenizer(models.SMOLLM2_ID)
    for category in evaluate.AST_CATEGORIES:
        rows = data.load_bfcl(category, download=False)
        longest = max(rewards.answer_tokens(evaluate.bfcl_ground_truth_calls(r["ground_truth"]), tok) for r in rows)
        assert longest <= evaluate.bfcl_budget(category), (category, longest)
    assert evaluate.bfcl_budget("parallel") > 128 and evaluate.bfcl_budget("irrelevance") == 128
    assert evaluate.bfcl_budget("parallel", 32) == 32
    assert evaluate.bfcl_budget("parallel", {"simple": 9}) == evaluate.BFCL_MAX_NEW_TOKENS["parallel"]


def test_bfcl_budget_reaches_the_generator(scripted, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(models, "generate", lambda model, tok, prompts, **kw: seen.append(kw["max_new_tokens"]) or ["x"] * len(prompts))
    rows = {c: data.load_bfcl(c, download=False)[:1] for c in ("simple", "parallel")}
    evaluate.evaluate_bfcl(TINY, Tok(), rows)
    assert seen == [evaluate.BFCL_MAX_NEW_TOKENS["simple"], evaluate.BFCL_MAX_NEW_TOKENS["parallel"]]
    evaluate.evaluate_bfcl(TINY, Tok(), rows, max_new_tokens=16)
    assert seen[2:] == [16, 16]


def test_difficulty_probe_scores_every_sample_and_finds_the_band(monkeypatch, tmp_path):
    """notebook 03's probe: k samples per prompt, each scored by both rewards, prompt-major; the band is the
    prompts whose samples disagree. A scripted sampler gives row 0 a mix, row 1 all right, row 2 all wrong."""
    from helpers import grpo, train
    rows = [r for r in data.load_xlam(download=False) if r["ground_truth"]][:3]
    tok = Tok()
    prompts = grpo.tool_call_dataset(rows, tok)["prompt"]
    right = {p: rewards.render_tool_calls(r["ground_truth"]) for p, r in zip(prompts, rows)}
    script = {prompts[0]: [right[prompts[0]], "no idea", right[prompts[0]], "no idea"],
              prompts[1]: [right[prompts[1]]] * 4, prompts[2]: ["no idea"] * 4}

    def fake_generate(model, tokenizer, ps, *, num_return_sequences=1, do_sample=False, **kwargs):
        assert do_sample and num_return_sequences == 4
        return [t for p in ps for t in script[p]]

    monkeypatch.setattr(models, "generate", fake_generate)
    probe = train.difficulty_probe(TINY, tok, rows, k=4, temperature=1.0, max_new_tokens=96, desc_chars=None,
                                   cache_path=tmp_path / "probe.jsonl")
    assert probe["binary"] == [[1.0, 0.0, 1.0, 0.0], [1.0] * 4, [0.0] * 4]
    assert probe["sim"][1] == [1.0] * 4 and probe["sim"][0][0] == 1.0 and probe["sim"][0][1] < 1.0
    assert grpo.learnable_band(probe["binary"]) == [True, False, False]
    assert [grpo.pass_rate(g) for g in probe["binary"]] == [0.5, 1.0, 0.0]


def test_arguments_per_call_counts_over_calls_and_skips_unparsed_answers():
    from helpers import rewards
    one = [{"name": "f", "arguments": {"a": 1, "b": 2}}]
    two = [{"name": "f", "arguments": {"a": 1}}, {"name": "g", "arguments": {}}]
    assert evaluate.arguments_per_call([one, two, None, []]) == pytest.approx(3 / 3)
    assert evaluate.arguments_per_call([one]) == 2 and evaluate.arguments_per_call([None, []]) is None
    texts = ['<tool_call>{"name": "f", "arguments": {"a": 1, "b": 2, "c": 3}}</tool_call>', "no call", "<tool_call>{bad"]
    assert evaluate.arguments_per_call([rewards.parse_tool_calls(t, strict=True) for t in texts]) == 3
    assert evaluate.completion_arguments_per_call(texts) == 3 and evaluate.completion_arguments_per_call(["prose"]) is None
