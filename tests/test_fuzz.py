"""Property tests: parsers, rewards and the BFCL checker give a defined, in-range score for any
string (truncated JSON, nested tags, unicode, huge numbers, deep nesting, megabytes), a
completion rendered from the ground truth gets full marks, parallel calls are order-free, and
the translation rewards equal sacrebleu's own numbers.

10,000 generated strings plus 2,400 generated call lists; derandomised, so every run checks the
same inputs.
"""

import itertools
import math
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import evaluate as E
from helpers import rewards as R


def fuzz(n):
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


TOOLS = [
    {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {}, "unit": {}, "days": {}}}},
    {"name": "get_time", "parameters": {"city": {}}},
    {"name": "search", "parameters": {"type": "dict", "properties": {"query": {}, "filters": {}, "limit": {}}}},
]
PARAMS = R.tool_parameters(TOOLS)
GT = [{"name": "get_weather", "arguments": {"city": "New York", "unit": "celsius"}},
      {"name": "get_time", "arguments": {"city": "Paris"}}]
BFCL_FUNC = {"name": "geo.distance", "parameters": {"type": "dict", "required": ["origin"], "properties": {
    "origin": {"type": "string"}, "km": {"type": "float"}, "n": {"type": "integer"},
    "stops": {"type": "array", "items": {"type": "string"}}, "opts": {"type": "dict"}}}}
BFCL_ROW = {"functions": [BFCL_FUNC], "ground_truth": [{"geo.distance": {
    "origin": ["NYC"], "km": [2.0, ""], "n": [3, ""], "stops": [["a", "b"], ""], "opts": [{"x": [1]}, ""]}}]}

# pieces models actually emit, glued together in random order by `adversarial`
FRAGMENTS = [
    "<think>", "</think>", "<tool_call>", "</tool_call>", "<answer>", "</answer>", "<response>", "</response>",
    "\n", " ", "{", "}", "[", "]", "(", ")", ":", ",", '"', "'", "\\", '"name"', '"arguments"', '"parameters"',
    '"get_weather"', '"get_time"', '"city"', '"Paris"', "geo.distance", "origin=", "km=", "n=", "=",
    "1e999", "-0", "9" * 40, "1" * 5000, "NaN", "Infinity", "null", "true", "None", "2**99", "+5", "not ",
    "\u0000", "\ud7ff", "\u202e", "北京", "🙂", "é", "\t", "```", "lambda: 0", "__import__('os')",
]
fragments = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=8)), max_size=40).map("".join)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                         st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                                   st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                           max_leaves=6)


@st.composite
def tool_call_texts(draw):
    """Well-formed-looking completions, then damaged: truncated, duplicated tags, wrong keys."""
    calls = draw(st.lists(st.fixed_dictionaries({
        "name": st.sampled_from(["get_weather", "get_time", "search", "nope"]),
        "arguments": st.dictionaries(st.sampled_from(["city", "unit", "days", "query", "x"]), json_values, max_size=3),
    }), max_size=3))
    text = R.render_tool_calls(calls, think=draw(st.one_of(st.none(), st.text(max_size=10))),
                               style=draw(st.sampled_from(["qwen", "toolrl"])))
    damage = draw(st.sampled_from(["none", "truncate", "nest", "prefix", "swap_key"]))
    if damage == "truncate":
        text = text[: draw(st.integers(0, len(text)))]
    elif damage == "nest":
        text = text.replace("<tool_call>", "<tool_call><tool_call>", 1)
    elif damage == "prefix":
        text = draw(fragments) + text
    elif damage == "swap_key":
        text = text.replace('"arguments"', '"parameters"')
    return text


deep = st.integers(1, 3000).flatmap(lambda n: st.sampled_from([
    "<tool_call>" + "[" * n + "</tool_call>",
    '<tool_call>{"name": "get_time", "arguments": {"city": ' + "[" * n + "]" * n + "}}</tool_call>",
    "[f(a=" + "[" * n + "]" * n + ")]",
    "<think>" * n + "</think>" * n,
]))
huge_numbers = st.integers(1, 6000).map(lambda n: '<tool_call>{"name": "get_time", "arguments": {"city": 1' + "0" * n + "}}</tool_call>")
adversarial = st.one_of(st.text(), fragments, tool_call_texts(), deep, huge_numbers)


def assert_tool_scores_in_range(text):
    sim = R.sim_reward(text, GT, TOOLS)
    sim_think = R.sim_reward(text, GT, TOOLS, require_think=True)
    sim_reply = R.sim_reward(text, "It is sunny in Paris.", TOOLS)
    binary = R.binary_reward(text, GT, TOOLS)
    toolrl = R.toolrl_reward(text, GT, TOOLS)
    toolrl_reply = R.toolrl_reward(text, "It is sunny.", TOOLS)
    for value in (sim, sim_think, sim_reply, binary, toolrl, toolrl_reply):
        assert isinstance(value, float) and math.isfinite(value)
    assert -1.0 <= sim <= 1.0 and -1.0 <= sim_think <= 1.0 and -1.0 <= sim_reply <= 1.0
    assert binary in (0.0, 1.0)
    assert -3.0 <= toolrl <= 4.0 and 0.0 <= toolrl_reply <= 1.0


# -----------------------------------------------------------------------------
# any string gets a defined score


@fuzz(4000)
@given(adversarial)
def test_tool_rewards_defined_on_any_string(text):
    assert_tool_scores_in_range(text)
    calls = R.parse_tool_calls(text)
    assert calls is None or all(isinstance(c["name"], str) and isinstance(c["arguments"], dict) for c in calls)


@fuzz(3000)
@given(st.one_of(adversarial, st.builds(lambda a, b: f"[geo.distance(origin={a!r}, n={b})]", st.text(max_size=10), fragments)))
def test_bfcl_decoder_and_checker_defined_on_any_string(text):
    decoded = E.decode_python_calls(text)
    assert decoded is None or E.is_call_list(decoded)
    for category in ("simple", "multiple", "parallel", "parallel_multiple", "irrelevance"):
        for fmt in ("python", "json"):
            r = E.score_bfcl_output(text, BFCL_ROW, category, fmt=fmt)
            assert isinstance(r["valid"], bool) and (r["valid"] or isinstance(r["error_type"], str))


@fuzz(800)
@given(st.lists(st.dictionaries(st.one_of(st.text(max_size=5), st.none()), json_values, max_size=3), max_size=3),
       st.sampled_from(["simple", "multiple", "parallel", "irrelevance"]))
def test_ast_check_defined_on_any_decoded_calls(arg_dicts, category):
    calls = [{"geo.distance": args} for args in arg_dicts]
    r = E.ast_check([BFCL_FUNC], calls, BFCL_ROW["ground_truth"], category)
    assert isinstance(r["valid"], bool)


@fuzz(1500)
@given(st.one_of(st.text(), fragments), st.text(max_size=40))
def test_translation_rewards_equal_sacrebleu(hyp, ref):
    import sacrebleu

    text = f"<think>t</think><answer>{hyp}</answer>"
    bleu, chrf = R.bleu_reward(text, ref), R.chrf_reward(text, ref)
    assert 0.0 <= bleu <= 1.0 and 0.0 <= chrf <= 1.0
    answer = R.extract_answer(text)
    if answer and ref:
        assert bleu == min(1.0, sacrebleu.sentence_bleu(answer, [ref]).score / 100)
        assert chrf == min(1.0, sacrebleu.sentence_chrf(answer, [ref], word_order=2).score / 100)
    else:
        assert bleu == chrf == 0.0


@fuzz(1500)
@given(st.text(max_size=60), st.text(max_size=60))
def test_rouge_equals_rouge_score(a, b):
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    assert R.rouge_l_f1(a, b) == scorer.score(b, a)["rougeL"].fmeasure


# -----------------------------------------------------------------------------
# full marks for the ground truth; order does not matter

tool_calls = st.sampled_from(sorted(PARAMS)).flatmap(lambda name: st.fixed_dictionaries({
    "name": st.just(name),
    "arguments": st.dictionaries(st.sampled_from(sorted(PARAMS[name])), json_values, max_size=3),
}))


@fuzz(1000)
@given(st.lists(tool_calls, min_size=1, max_size=4), st.randoms(use_true_random=False))
def test_rendered_ground_truth_gets_full_marks_in_any_order(gt, rnd):
    shuffled = gt[:]
    rnd.shuffle(shuffled)
    for calls in (gt, shuffled):
        assert R.sim_reward(R.render_tool_calls(calls, think="t"), gt, TOOLS, require_think=True) == 1.0
        assert R.binary_reward(R.render_tool_calls(calls), gt, TOOLS) == 1.0
    assert R.toolrl_reward(R.render_tool_calls(gt, think="t", style="toolrl"), gt) == 4.0
    # ToolRL's matching is greedy: a permutation scores the maximum when the calls are distinct
    if len({R.canonical_call(c) for c in gt}) == len(gt):
        assert R.toolrl_reward(R.render_tool_calls(shuffled, think="t", style="toolrl"), gt) == 4.0


@fuzz(600)
@given(st.lists(tool_calls, max_size=3), st.lists(tool_calls, max_size=3), st.randoms(use_true_random=False))
def test_scores_do_not_depend_on_call_order_when_names_are_distinct(gt, pred, rnd):
    # with several same-name calls STAR's and ToolRL's greedy matchings can depend on order
    # (as in their code); with distinct names each call has one candidate, so order is irrelevant
    gt = list({c["name"]: c for c in gt}.values())
    pred = list({c["name"]: c for c in pred}.values())
    shuffled = pred[:]
    rnd.shuffle(shuffled)
    a, b = R.render_tool_calls(pred, think="t"), R.render_tool_calls(shuffled, think="t")
    assert R.sim_reward(a, gt, TOOLS) == pytest.approx(R.sim_reward(b, gt, TOOLS), abs=1e-12)
    assert R.binary_reward(a, gt, TOOLS) == R.binary_reward(b, gt, TOOLS)
    a, b = R.render_tool_calls(pred, think="t", style="toolrl"), R.render_tool_calls(shuffled, think="t", style="toolrl")
    assert R.toolrl_reward(a, gt) == pytest.approx(R.toolrl_reward(b, gt), abs=1e-12)


def test_bfcl_parallel_answers_pass_in_every_order():
    funcs = [BFCL_FUNC]
    answer = [{"geo.distance": {"origin": [o], "n": [n]}} for o, n in (("NYC", 1), ("LA", 2), ("SF", 3))]
    calls = [{"geo.distance": {"origin": o, "n": n}} for o, n in (("nyc", 1), ("L.A.", 2), ("sf", 3))]
    for perm in itertools.permutations(calls):
        assert E.ast_check(funcs, list(perm), answer, "parallel")["valid"]


# -----------------------------------------------------------------------------
# megabyte inputs: defined and fast (the caps at work)

MEGABYTE_INPUTS = [
    "a" * 1_000_000,
    "<tool_call>" * 100_000,
    "<think>" + "x" * 999_000 + "</think>",
    '<tool_call>{"name": "get_time", "arguments": {"city": "' + "Paris " * 170_000 + '"}}</tool_call>',
    "[f(a=" + "1, " * 333_000 + ")]",
    "<answer>" + "word " * 200_000 + "</answer>",
]


@pytest.mark.parametrize("text", MEGABYTE_INPUTS, ids=["plain", "tags", "think", "call", "python", "answer"])
def test_megabyte_inputs(text):
    t = time.perf_counter()
    assert_tool_scores_in_range(text)
    assert R.sim_reward(text, GT, TOOLS) == -1.0  # over MAX_COMPLETION_CHARS: a format failure
    assert R.parse_tool_calls(text) is None
    assert E.decode_python_calls(text) is None
    assert E.score_bfcl_output(text, BFCL_ROW, "simple")["error_type"] == "decoder_failed"
    assert R.bleu_reward(text, "word word") == R.chrf_reward(text, "word word") == 0.0
    assert R.embedding_reward(text, "x", embedder=object()) == 0.0  # never reaches the embedder
    assert time.perf_counter() - t < 2.0


def test_long_values_under_the_cap_are_scored_exactly_and_fast():
    # ~15k tokens each: ROUGE's Python LCS table would take minutes; the bit-parallel LCS is exact
    value = " ".join(f"w{i % 977}" for i in range(15_000))
    gt = [{"name": "get_time", "arguments": {"city": value}}]
    text = R.render_tool_calls([{"name": "get_time", "arguments": {"city": value + " extra"}}])
    t = time.perf_counter()
    score = R.sim_reward(text, gt, TOOLS)
    assert time.perf_counter() - t < 5.0
    assert score == pytest.approx(2 * 15_000 / (15_000 + 15_001), abs=1e-12)
