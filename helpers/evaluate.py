"""Evaluation: BFCL's AST checker, re-implemented torch-free, plus the decoders that turn model
text into the form it checks.

BFCL (the Berkeley Function Calling Leaderboard, Patil et al., ICML 2025) does not execute the
calls a model writes; it parses them and compares each argument with a list of acceptable values.
This module mirrors the official checker (bfcl-eval, `eval_checker/ast_eval/ast_checker.py`) for
the single-turn Python categories, quirks included, because a score is only comparable with the
leaderboard if it fails and passes the same cases. tests/test_bfcl_checker.py checks that claim
case by case against the official package on a corpus of several thousand outputs.

Shapes (BFCL's own):
    functions        [{"name", "description", "parameters": {"type": "dict", "properties", "required"}}]
    calls            [{func_name: {arg: value}}]                  (what a decoder returns)
    possible_answer  [{func_name: {arg: [acceptable values]}}]    ("" in a list = may be omitted)

Everything here takes model output and never raises on it: a decoder returns None when it cannot
decode, and the checker returns {"valid": False, "error_type": ...}.
"""

import ast
import collections
import json
import os
import random
import operator
import re
import warnings

# -----------------------------------------------------------------------------
# config

# Model text longer than this is not decoded (counts as a decoder failure). Real BFCL outputs are
# a few hundred characters; the cap keeps ast.parse's time and memory bounded on garbage.
MAX_DECODE_CHARS = 100_000
# BFCL evaluates arithmetic in arguments (`f(x=2*3)`). We evaluate it ourselves on literals only,
# and refuse results bigger than these caps (so `2**10**10` cannot hang or exhaust memory).
# 14,000 bits (~4,200 decimal digits) also keeps every int printable under Python's 4,300-digit
# int-to-str limit.
MAX_INT_BITS = 14_000
MAX_SEQ_LEN = 1_000_000

# BFCL maps the JSON-schema-ish type names of its function docs onto Python types. "tuple" is a
# list because the answers went through json.dump/json.load; "any" is checked as a string.
PYTHON_TYPES = {
    "string": str,
    "integer": int,
    "float": float,
    "boolean": bool,
    "array": list,
    "tuple": list,
    "dict": dict,
    "any": str,
}
NESTED_TYPES = ("array", "tuple")  # the only types whose items are type-checked (one level deep)

# -----------------------------------------------------------------------------
# decoding: BFCL's prompting format, a Python list of calls  `[f(a=1), mod.g(b='x')]`


class _Undecodable(Exception):
    """Raised inside the decoder; never escapes decode_python_calls."""


_BIN_OPS = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
    ast.Pow: operator.pow, ast.LShift: operator.lshift, ast.RShift: operator.rshift,
    ast.BitOr: operator.or_, ast.BitAnd: operator.and_, ast.BitXor: operator.xor,
    ast.MatMult: operator.matmul,
}
_UNARY_OPS = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Invert: operator.invert, ast.Not: operator.not_}
_SEQ = (str, bytes, list, tuple)


def _is_int(x):
    return isinstance(x, int)  # bool included, as in Python arithmetic


def _check_cost(op, a, b):
    """Refuse operations whose result would exceed the caps, before computing them."""
    if op is ast.Pow and _is_int(a) and _is_int(b) and b > 0 and abs(a) > 1:
        if a.bit_length() * b > MAX_INT_BITS:
            raise _Undecodable("power too large")
    elif op is ast.LShift and _is_int(a) and _is_int(b) and b > 0 and a != 0:
        if a.bit_length() + b > MAX_INT_BITS:
            raise _Undecodable("shift too large")
    elif op is ast.Mult:
        if _is_int(a) and _is_int(b):
            if a.bit_length() + b.bit_length() > MAX_INT_BITS:
                raise _Undecodable("product too large")
        elif isinstance(a, _SEQ) and _is_int(b) or isinstance(b, _SEQ) and _is_int(a):
            seq, n = (a, b) if isinstance(a, _SEQ) else (b, a)
            if len(seq) * max(n, 0) > MAX_SEQ_LEN:
                raise _Undecodable("repetition too large")
    elif op is ast.Add and isinstance(a, _SEQ) and isinstance(b, _SEQ):
        if len(a) + len(b) > MAX_SEQ_LEN:
            raise _Undecodable("concatenation too large")
    elif op is ast.Mod and isinstance(a, (str, bytes)):
        # printf-style formatting can build arbitrarily large strings ("%999999999d" % 1)
        raise _Undecodable("string formatting is not evaluated")


def _eval_literal(node):
    """Evaluate an arithmetic expression over literals with Python's semantics.

    BFCL runs `eval(ast.unparse(node))` on every BinOp argument, in the namespace of its utils
    module, which would execute any code a model writes (`__import__('os').system(...) + 1`).
    We compute the same value for expressions built from literals, containers, unary and binary
    operators, and refuse everything else (names, calls, attributes, comprehensions, f-strings):
    a deliberate, documented difference from BFCL for such arguments.
    """
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        items = [_eval_literal(e) for e in node.elts]  # ast.Starred falls through to the refusal
        return list(items) if isinstance(node, ast.List) else tuple(items) if isinstance(node, ast.Tuple) else set(items)
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):  # {**d}
            raise _Undecodable("dict unpacking")
        return {_eval_literal(k): _eval_literal(v) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY_OPS:
        return _UNARY_OPS[type(node.op)](_eval_literal(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BIN_OPS:
        a, b = _eval_literal(node.left), _eval_literal(node.right)
        _check_cost(type(node.op), a, b)
        out = _BIN_OPS[type(node.op)](a, b)
        if _is_int(out) and out.bit_length() > MAX_INT_BITS:
            raise _Undecodable("integer too large")
        return out
    raise _Undecodable(f"not a literal expression: {type(node).__name__}")


def _decode_value(node):
    """One argument value, following BFCL's resolve_ast_by_type case by case (quirks kept).

    Quirks reproduced because they change which outputs pass:
    - a unary operator on a constant is always *negation*: `+5` -> -5, `not True` -> -1;
    - a bare name is its own spelling (`x` -> "x"), a call without keywords its source text
      (`sqrt(2)` -> "sqrt(2)"), a call with keywords a nested {name: {arg: value}};
    - a subscript is its source text; a lambda always fails; an attribute (`math.pi`) fails.
    """
    if isinstance(node, ast.Constant):
        return "..." if node.value is Ellipsis else node.value
    if isinstance(node, ast.UnaryOp):
        operand = node.operand
        if not isinstance(operand, ast.Constant):  # BFCL reads operand.value, which only a Constant has
            raise _Undecodable("unary operator on a non-constant")
        return -operand.value  # TypeError for strings/None/..., caught by the caller, as in BFCL
    if isinstance(node, ast.List):
        return [_decode_value(v) for v in node.elts]
    if isinstance(node, ast.Dict):
        # a `**d` entry has key None, which BFCL cannot resolve either
        return {_decode_value(k) if k is not None else _fail("dict unpacking"): _decode_value(v)
                for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.BinOp):
        return _eval_literal(node)
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Call):
        return _decode_call(node) if node.keywords else ast.unparse(node)
    if isinstance(node, ast.Tuple):
        return tuple(_decode_value(v) for v in node.elts)
    if isinstance(node, ast.Subscript):
        return ast.unparse(node.value) + "[" + ast.unparse(node.slice) + "]"
    raise _Undecodable(f"unsupported AST node: {type(node).__name__}")


def _fail(reason):
    raise _Undecodable(reason)


def _decode_call(call):
    """`a.b.c(x=1)` -> {"a.b.c": {"x": 1}}. Positional arguments are ignored, as in BFCL."""
    parts, func = [], call.func
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    # keyword.arg is None for `**kwargs`; BFCL stores it under the key None, so do we
    return {".".join(reversed(parts)): {kw.arg: _decode_value(kw.value) for kw in call.keywords}}


def decode_python_calls(text):
    """Decode BFCL's prompting format into [{name: {arg: value}}], or None if it does not decode.

    Same steps as BFCL's default_decode_ast_prompting: strip backticks/newlines/spaces, add the
    missing `[` / `]`, strip wrapping single quotes, ast.parse in eval mode; the body must be one
    call or a list/tuple/set of calls. Nothing is executed (see _eval_literal). Text longer than
    MAX_DECODE_CHARS, parser recursion/memory errors and anything unexpected give None.
    """
    if not isinstance(text, str) or len(text) > MAX_DECODE_CHARS:
        return None
    try:
        s = text.strip("`\n ")
        if not s.startswith("["):
            s = "[" + s
        if not s.endswith("]"):
            s = s + "]"
        with warnings.catch_warnings():  # e.g. "invalid decimal literal": model text, not our code
            warnings.simplefilter("ignore", SyntaxWarning)
            body = ast.parse(s.strip().strip("'"), mode="eval").body
        if isinstance(body, ast.Call):
            return [_decode_call(body)]
        elts = body.elts  # AttributeError for anything that is not a list/tuple/set: a decode failure
        if not all(isinstance(e, ast.Call) for e in elts):
            return None
        return [_decode_call(e) for e in elts]
    except (Exception, RecursionError, MemoryError):
        return None


def decode_json_calls(text):
    """Decode <tool_call>{"name": ..., "arguments": {...}}</tool_call> blocks into BFCL's form.

    Uses helpers.rewards.parse_tool_calls (Qwen/Hermes style, ToolRL's "parameters" accepted).
    Returns [] when there are no blocks and None when a block does not parse.
    """
    from helpers.rewards import parse_tool_calls  # local import: rewards imports nothing from here

    calls = parse_tool_calls(text)
    if calls is None:
        return None
    return [{c["name"]: dict(c["arguments"])} for c in calls]


def is_call_list(decoded):
    """BFCL's is_function_calling_format_output: a list of one-key dicts whose value is a dict."""
    if type(decoded) != list:
        return False
    for item in decoded:
        if type(item) != dict or len(item) != 1 or type(list(item.values())[0]) != dict:
            return False
    return True


def is_empty_output(decoded):
    """BFCL's is_empty_output: "no function call" for the irrelevance category."""
    return not is_call_list(decoded) or len(decoded) == 0 or (len(decoded) == 1 and len(decoded[0]) == 0)


# -----------------------------------------------------------------------------
# the AST checker
#
# Each check below returns None when it passes and a BFCL error_type string when it fails.


def standardize_string(s):
    """BFCL's string normalisation: drop spaces and , . / - _ * ^, lowercase, ' -> ".

    So "April 1, 2024", "april 1 2024" and "April-1-2024" all compare equal.
    """
    return re.sub(r"[ ,./\-_*^]", "", s).lower().replace("'", '"')


def _std(x):
    return standardize_string(x) if type(x) == str else x


def _items(seq):
    # BFCL walks answer lists with `range(len(x))` + `x[i]`; keep that, since it also decides
    # what happens on odd answers ("" -> no items, a dict -> KeyError).
    return [seq[i] for i in range(len(seq))]


def _answer_type(acceptable):
    """Type of the first acceptable value that is not "" (None if the parameter is only optional)."""
    for a in acceptable:
        if a != "":
            return type(a)
    return None


def _check_type(value, acceptable, expected, inner):
    """BFCL's type_checker -> (error_type or None, is_variable).

    `is_variable` marks a value whose acceptable answers have another type than the doc's type:
    BFCL then compares the value literally (e.g. a variable name given as a string). A value whose
    type equals the answers' type passes the type check even when it differs from the doc's type.
    Only one level of nesting is checked (items of array/tuple), as in BFCL.
    """
    answer_type = _answer_type(acceptable)
    is_variable = answer_type is not None and answer_type != expected
    if type(value) == expected:
        if inner is None:
            return None, is_variable
        for candidate in acceptable:
            if type(candidate) == list and any(_check_type(v, candidate, inner, None)[0] for v in value):
                continue
            return None, is_variable  # a non-list candidate ("") accepts any items
        # BFCL falls through to its variable rule here, but on a result already marked invalid
        if answer_type is not None and type(value) == answer_type:
            return "type_error:nested", True
        return "type_error:simple", False
    if answer_type is not None and type(value) == answer_type:
        return None, True
    return "type_error:simple", False


def _check_string(value, acceptable):
    if _std(value) not in [standardize_string(a) for a in acceptable if type(a) == str]:
        return "value_error:string"
    return None


def _check_list(value, acceptable):
    """Element-wise: strings at the top level are standardised, nested values compared as-is."""
    got = [_std(v) for v in value]
    if got not in [[_std(a) for a in _items(cand)] for cand in acceptable]:
        return "value_error:list/tuple"
    return None


def _dict_mismatch(value, cand):
    """Compare a dict argument with one acceptable dict (values standardised one level deep)."""
    error = None
    for key, v in value.items():
        if key not in cand:
            error = "value_error:dict_key"
            break
        if _std(v) not in [_std(a) for a in _items(cand[key])]:
            error = "value_error:dict_value"
            break
    # BFCL runs the missing-key loop even after a failure above, and its error type wins
    for key, acceptable in cand.items():
        if key not in value and "" not in acceptable:
            return "value_error:dict_key"
    return error


def _check_dict(value, acceptable):
    error = "dict_checker:unclear"  # also the result when every acceptable entry is ""
    for cand in acceptable:
        if cand == "":
            continue
        error = _dict_mismatch(value, cand)
        if error is None:
            return None
    return error


def _check_list_of_dicts(value, acceptable):
    """A list of dicts must match one acceptable list position by position."""
    error = "list_dict_checker:unclear"
    for cand in acceptable:
        if len(value) != len(cand):
            error = "value_error:list_dict_count"
            continue
        error = next((e for e in (_check_dict(v, [c]) for v, c in zip(value, _items(cand))) if e), None)
        if error is None:
            return None
    return error


def _check_call(func, call, answer):
    """BFCL's simple_function_checker: one decoded call against one answer {name: {param: [...]}}.

    Order of checks (first failure wins): function name, required params present, then per
    model argument: known param, type (int accepted for float), value; finally every answer param
    that is absent must allow "" (be optional).
    """
    acceptable_by_param = list(answer.values())[0]
    name = func["name"]  # BFCL may rewrite "." to "_" for some API models; not in prompt mode
    props, required = func["parameters"]["properties"], func["parameters"]["required"]
    if name not in call:
        return "simple_function_checker:wrong_func_name"
    args = call[name]
    for param in required:
        if param not in args:
            return "simple_function_checker:missing_required"
    for param, value in args.items():
        if param not in props or param not in acceptable_by_param:
            return "simple_function_checker:unexpected_param"
        acceptable = acceptable_by_param[param]
        type_name = props[param]["type"]
        expected = PYTHON_TYPES[type_name]
        inner = PYTHON_TYPES[props[param]["items"]["type"]] if type_name in NESTED_TYPES else None
        if type_name == "tuple" and type(value) == tuple:
            value = list(value)  # answers were JSON round-tripped, so tuples are lists there
        if type_name == "float" and type(value) == int:
            value = float(value)  # Python's int -> float promotion is accepted
        error, is_variable = _check_type(value, acceptable, expected, inner)
        if error:
            return error
        if not is_variable:
            if expected == dict:
                error = _check_dict(value, acceptable)
            elif expected == list and inner == dict:
                error = _check_list_of_dicts(value, acceptable)
            elif expected == str:
                error = _check_string(value, acceptable)
            elif expected == list:
                error = _check_list(value, acceptable)
            elif value not in acceptable:
                error = "value_error:others"
            if error:
                return error
        elif value not in acceptable:
            return "value_error:others"
    for param, acceptable in acceptable_by_param.items():
        if param not in args and "" not in acceptable:
            return "simple_function_checker:missing_optional"
    return None


def _find_function(functions, name):
    if type(functions) != list:
        return functions  # BFCL: a dict is the one function
    return next((f for f in functions if f["name"] == name), None)


def _check_parallel(functions, calls, answers):
    """Order-free: each answer, in order, takes the first unused call that passes against it."""
    if len(calls) != len(answers):
        return "parallel_function_checker_no_order:wrong_count"
    used = set()
    for answer in answers:
        func = _find_function(functions, list(answer.keys())[0])
        found = False
        for i, call in enumerate(calls):
            if i not in used and _check_call(func, call, answer) is None:
                used.add(i)
                found = True
                break
        if not found:
            return "parallel_function_checker_no_order:cannot_find_match"
    return None


def ast_check(functions, calls, possible_answer, category):
    """BFCL AST check of decoded `calls` -> {"valid": bool, "error_type": str | None}.

    category selects the checker as BFCL does, by substring: "parallel" (covers
    parallel_multiple): same number of calls, matched order-free; "multiple": exactly one call,
    checked against the function named by the answer; "irrelevance": valid iff no call is made;
    anything else ("simple", "simple_python"): exactly one call against functions[0].
    error_type strings are BFCL's; "checker_error:<Exception>" marks inputs on which the official
    checker itself would raise (e.g. an answer naming a function missing from `functions`).
    """
    try:
        if "irrelevance" in category:
            ok = is_empty_output(calls)
            return {"valid": ok, "error_type": None if ok else "irrelevance_error:decoder_success"}
        if "parallel" in category:
            error = _check_parallel(functions, calls, possible_answer)
        elif "multiple" in category:
            if len(calls) != len(possible_answer):
                error = "multiple_function_checker:wrong_count"
            else:
                func = _find_function(functions, list(possible_answer[0].keys())[0])
                error = _check_call(func, calls[0], possible_answer[0])
        elif len(calls) != 1:
            error = "simple_function_checker:wrong_count"
        else:
            error = _check_call(functions[0], calls[0], possible_answer[0])
    except (Exception, RecursionError) as e:
        error = f"checker_error:{type(e).__name__}"
    return {"valid": error is None, "error_type": error}


def score_bfcl_output(text, row, category, fmt="python"):
    """Decode model `text` and check it: the whole BFCL AST pipeline for one row.

    row: {"functions" (or BFCL's "function"), "ground_truth"} as loaded by helpers.data.
    fmt: "python" = BFCL's prompting format `[f(a=1)]`; "json" = <tool_call> JSON blocks.
    As in BFCL's runner: a decode failure fails a call category ("decoder_failed") and passes
    irrelevance (no call was made); decoded output that is not a call list fails
    ("decoder_wrong_output_format").
    """
    decoded = decode_json_calls(text) if fmt == "json" else decode_python_calls(text)
    if "irrelevance" in category:
        ok = decoded is None or is_empty_output(decoded)
        return {"valid": ok, "error_type": None if ok else "irrelevance_error:decoder_success"}
    if decoded is None:
        return {"valid": False, "error_type": "decoder_failed"}
    if not is_call_list(decoded):
        return {"valid": False, "error_type": "decoder_wrong_output_format"}
    functions = row.get("functions", row.get("function"))
    return ast_check(functions, decoded, row.get("ground_truth"), category)


def render_python_calls(calls):
    """[{name: {arg: value}}] -> "[f(a=1, b='x')]", BFCL's prompting format (repr of each value)."""
    return "[" + ", ".join(
        f"{name}(" + ", ".join(f"{k}={v!r}" for k, v in args.items()) + ")"
        for call in calls for name, args in call.items()
    ) + "]"


# -----------------------------------------------------------------------------
# the generation harness: prompts -> (cached) greedy completions -> scores
# Torch and the model are only touched by `generate_cached`, imported lazily.

AST_CATEGORIES = ("simple", "multiple", "parallel", "parallel_multiple")
# New-token budget per BFCL category. A budget shorter than the answer fails a question the model got
# right: at 128 tokens, half of BFCL v3's parallel questions and 64% of its parallel_multiple ones could
# not be answered at all (2-4 <tool_call> blocks of ~40-60 tokens each). Each budget covers the longest
# reference answer of its category, rendered as our models write calls, with a margin (longest, in
# SmolLM2's tokenizer: simple 121, multiple 96, parallel 440, parallel_multiple 261; tests/
# test_evaluate_harness.py checks it). Irrelevance needs no call at all, so it keeps the short budget.
BFCL_MAX_NEW_TOKENS = {"simple": 128, "multiple": 128, "parallel": 480, "parallel_multiple": 288, "irrelevance": 128}
# BFCL's function docs use Python-ish type names; the chat template shows JSON schema, as in training.
BFCL_TO_JSON_TYPE = {"dict": "object", "float": "number", "tuple": "array", "any": "string",
                     "integer": "integer", "string": "string", "boolean": "boolean", "array": "array"}


def _json_schema(node):
    if not isinstance(node, dict):
        return node
    out = {k: _json_schema(v) if isinstance(v, dict) else v for k, v in node.items()}
    if isinstance(out.get("type"), str):
        out["type"] = BFCL_TO_JSON_TYPE.get(out["type"], out["type"])
    if isinstance(node.get("properties"), dict):
        out["properties"] = {k: _json_schema(v) for k, v in node["properties"].items()}
    return out


# BFCL's default prompting format ("ret_fmt=python&tool_call_tag=False&func_doc_fmt=json&prompt_fmt=plaintext&
# style=classic" in bfcl-eval 2026.3.23), assembled from its pieces the way bfcl-eval does it, so that a score
# in the "python" format is one BFCL would give a prompt-mode model. tests/test_bfcl_prompt.py compares the
# result with the official package's own prompt.
BFCL_PYTHON_HINT = " Note that the provided function is in Python 3 syntax."
BFCL_SYSTEM_PROMPT = (
    "You are an expert in composing functions."
    "You are given a question and a set of possible functions. Based on the question, you will need to make one or "
    "more function/tool calls to achieve the purpose. If none of the functions can be used, point it out. If the given "
    "question lacks the parameters required by the function, also point it out."
    "\n\nYou should only return the function calls in your response.\n\nIf you decide to invoke any of the function(s), "
    "you MUST put it in the format of [func_name1(params_name1=params_value1, params_name2=params_value2...), "
    "func_name2(params)].  You SHOULD NOT include any other text in the response."
    "\n\nAt each turn, you should try your best to complete the tasks requested by the user within the current turn. "
    "Continue to output functions to call until you have fulfilled the user's request to the best of your ability. "
    "Once you have no more functions to call, the system will consider the current turn complete and proceed to the "
    "next turn or task."
    "\n\nHere is a list of functions in json format that you can invoke.\n{functions}\n"
)
PROMPT_FORMATS = ("json", "python")


def bfcl_python_messages(question, functions, desc_chars=None):
    """Chat messages for one BFCL question in its Python-list prompting format: the system prompt lists
    the functions as JSON (indent 4; each description ends with BFCL's Python hint) and asks for
    [f(a=1), g(b=2)]; a system message of the question's own is appended to it, as bfcl-eval does.
    desc_chars cuts descriptions first (models.shorten_tools; None keeps them, as BFCL does)."""
    from helpers import models
    docs = [dict(f, description=f.get("description", "") + BFCL_PYTHON_HINT) for f in functions]
    system = BFCL_SYSTEM_PROMPT.format(functions=json.dumps(models.shorten_tools(docs, desc_chars), indent=4))
    turns = question[0] if question and isinstance(question[0], list) else list(question)
    messages = [dict(m) for m in turns]
    if messages and messages[0].get("role") == "system":
        messages[0]["content"] = system + "\n\n" + messages[0]["content"]
        return messages
    return [{"role": "system", "content": system}] + messages


def bfcl_tools(functions):
    """BFCL function docs as chat-template tools with JSON-schema type names."""
    return [dict(f, parameters=_json_schema(f.get("parameters", {}))) for f in functions]


def bfcl_ground_truth_calls(ground_truth):
    """BFCL's answer (lists of acceptable values per argument) as one concrete call list
    [{"name", "arguments"}], taking the first acceptable value and leaving out optional
    arguments whose first acceptable value is "" (omitted). Used for the Sim-RL score on BFCL."""
    calls = []
    for call in ground_truth or []:
        for name, params in call.items():
            args = {k: v[0] for k, v in params.items() if isinstance(v, list) and v and v[0] != ""}
            calls.append({"name": name, "arguments": args})
    return calls


def sample_rows(rows, n, seed=0):
    """A fixed, documented sample: n rows drawn with random.Random(seed), returned in file order."""
    if n is None or n >= len(rows):
        return list(rows)
    picked = sorted(random.Random(seed).sample(range(len(rows)), n))
    return [rows[i] for i in picked]


def held_out_split(rows, n, seed=0):
    """(held_out, tuning): the fixed sample_rows(rows, n, seed) the notebooks report on, and the rows
    outside it, on which benchmarks choose settings, so that no setting is chosen on the rows reported."""
    held = sample_rows(rows, n, seed=seed)
    ids = {r["id"] for r in held}
    return held, [r for r in rows if r["id"] not in ids]


def per_category(n, category):
    """A sample size that may differ per category: an int or None (all) for every category, or a dict
    {category: n, "default": n} (a category it does not name gets "default", else all)."""
    if isinstance(n, dict):
        return n.get(category, n.get("default"))
    return n


def bootstrap_ci(items, statistic=None, n=1000, seed=0, level=0.95):
    """Percentile bootstrap interval of statistic(sample) (default: the mean) over resamples of items
    with replacement: (low, high). The items are whole evaluation cases (sentences, questions), so a
    corpus metric is recomputed on each resampled corpus, as sacrebleu's own bootstrap does.

        CI = [q_{(1-level)/2}, q_{(1+level)/2}] of {statistic(items*_b)}_{b=1..n}

    n <= 1 or fewer than 2 items gives (nan, nan): there is no spread to estimate."""
    items = list(items)
    statistic = statistic or (lambda xs: sum(xs) / len(xs))
    if n <= 1 or len(items) < 2:
        return float("nan"), float("nan")
    rng = random.Random(seed)
    k = len(items)
    stats = sorted(statistic([items[rng.randrange(k)] for _ in range(k)]) for _ in range(n))
    lo = stats[int((1 - level) / 2 * (n - 1))]
    hi = stats[int(round((1 + level) / 2 * (n - 1)))]
    return float(lo), float(hi)


def generation_cache(run_dir) -> str:
    """The run folder's one cache of greedy completions, shared by notebooks 02, 03 and 05: the keys
    hold the weights' fingerprint, so a model scored in 02 or 03 (the adapted teacher, the GRPO
    policies) is not generated again in 05, and every notebook reports the same completions for it."""
    return os.path.join(str(run_dir), "cache", "generations.jsonl")


def _cache_key(weights, prompt, settings):
    import hashlib
    return hashlib.sha256(json.dumps([weights, prompt, settings], sort_keys=True).encode()).hexdigest()


def generate_cached(model, tokenizer, prompts, *, cache_path=None, model_tag="model", max_new_tokens=128,
                    batch_size=8, progress=False):
    """Greedy completions for `prompts`, read from / appended to a JSON-lines cache so a rerun only
    scores. The key is a fingerprint of the weights themselves (models.weights_fingerprint), the prompt
    and the generation settings: a retrained model never reads an old completion, whichever knob
    changed it, and the same weights scored by two notebooks are generated once. `model_tag` is a
    label written next to each entry, for people reading the cache."""
    from helpers import models
    settings = {"max_new_tokens": max_new_tokens, "greedy": True}
    cache = _read_cache(cache_path)
    weights = models.weights_fingerprint(model) if cache_path is not None else None
    keys = [_cache_key(weights, p, settings) for p in prompts]
    todo = [i for i, k in enumerate(keys) if k not in cache]
    if todo:
        texts = models.generate(model, tokenizer, [prompts[i] for i in todo], max_new_tokens=max_new_tokens,
                                batch_size=batch_size, progress=progress)
        new = {keys[i]: text for i, text in zip(todo, texts)}
        cache.update(new)
        _append_cache(cache_path, new, model_tag)
    return [cache[k] for k in keys]


def sample_cached(model, tokenizer, prompts, *, k, temperature=1.0, seed=0, cache_path=None, model_tag="model",
                  max_new_tokens=128, batch_size=8, progress=False):
    """k sampled completions per prompt (temperature, top-p 1, no top-k: GRPO's sampling), as a list of
    k-lists, cached like generate_cached. The key holds the weights, the prompt, the settings and the seed,
    so a rerun reads them back; a prompt is sampled again only as a whole (its k samples go together).
    Sampling seeds torch once per call: the same prompts in the same order give the same samples."""
    import torch

    from helpers import models
    settings = {"max_new_tokens": max_new_tokens, "temperature": temperature, "k": k, "seed": seed}
    cache = _read_cache(cache_path)
    weights = models.weights_fingerprint(model) if cache_path is not None else None
    keys = [_cache_key(weights, p, settings) for p in prompts]
    todo = [i for i, key in enumerate(keys) if key not in cache]
    if todo:
        torch.manual_seed(seed)
        texts = models.generate(model, tokenizer, [prompts[i] for i in todo], max_new_tokens=max_new_tokens,
                                batch_size=batch_size, do_sample=True, temperature=temperature,
                                num_return_sequences=k, progress=progress)
        new = {keys[i]: texts[j * k:(j + 1) * k] for j, i in enumerate(todo)}
        cache.update(new)
        _append_cache(cache_path, new, model_tag)
    return [list(cache[key]) for key in keys]


def _read_cache(cache_path) -> dict:
    cache = {}
    if cache_path is not None and os.path.exists(cache_path):
        with open(cache_path, encoding="utf-8") as f:
            for line in f:
                try:
                    entry = json.loads(line)
                    cache[entry["key"]] = entry["text"]
                except (ValueError, KeyError):
                    continue  # a line cut short by an interruption is simply generated again
    return cache


def _append_cache(cache_path, entries: dict, model_tag) -> None:
    if cache_path is None or not entries:
        return
    os.makedirs(os.path.dirname(os.path.abspath(cache_path)), exist_ok=True)
    with open(cache_path, "a", encoding="utf-8") as f:
        for key, text in entries.items():
            f.write(json.dumps({"key": key, "tag": model_tag, "text": text}) + "\n")


def tool_call_scores(text, ground_truth, tools):
    """Format validity, Sim-RL and exact match of one completion against {"name","arguments"} calls."""
    from helpers import rewards
    calls = rewards.parse_tool_calls(text, strict=True)
    params = rewards.tool_parameters(tools)
    valid = bool(calls) and all(c["name"] in params and all(k in params[c["name"]] for k in c["arguments"]) for c in calls)
    return {"format_valid": valid,
            "sim": rewards.sim_reward(text, ground_truth, tools),
            "exact": rewards.binary_reward(text, ground_truth, tools)}


def arguments_per_call(call_lists):
    """Mean number of arguments per call over a set of answers, each a list of {"name", "arguments"} calls
    (a reference answer, or rewards.parse_tool_calls of a completion); None entries (answers that did not
    parse) are skipped, and None comes back when no call is left.

        args/call = sum_answers sum_calls |arguments| / number of calls

    Why it is worth a number: a policy rewarded on short reference calls learns to write fewer arguments,
    which greedy exact match on the same prompts does not show but a benchmark with longer calls does."""
    calls = [c for answer in call_lists if answer is not None for c in answer]
    if not calls:
        return None
    return sum(len(c.get("arguments") or {}) for c in calls) / len(calls)


def completion_arguments_per_call(texts):
    """arguments_per_call of model completions, each parsed as tool_call_scores parses it (STAR's strict rule)."""
    from helpers import rewards
    return arguments_per_call([rewards.parse_tool_calls(t, strict=True) for t in texts])


def summarize_tool_calls(records):
    n = len(records)
    if not n:
        return {"n": 0}
    return {"n": n,
            "format_valid": sum(r["format_valid"] for r in records) / n,
            "sim_mean": sum(r["sim"] for r in records) / n,
            "sim_pos_mean": sum(max(r["sim"], 0.0) for r in records) / n,
            "exact": sum(r["exact"] for r in records) / n}


def tool_call_prompts(tokenizer, rows, desc_chars=None):
    """The rendered prompt of each xLAM-style row: the chat template with the row's (shortened) tools."""
    from helpers import models
    return [models.render_prompt(tokenizer, models.build_messages(r["messages"]), models.shorten_tools(r["tools"], desc_chars))
            for r in rows]


def evaluate_tool_calls(model, tokenizer, rows, *, desc_chars=None, **gen_kwargs):
    """Greedy completions for xLAM-style rows ({"messages", "tools", "ground_truth"}), scored with
    format validity, Sim-RL and exact match. Returns (records, summary)."""
    texts = generate_cached(model, tokenizer, tool_call_prompts(tokenizer, rows, desc_chars), **gen_kwargs)
    records = [{"id": r["id"], "completion": t, **tool_call_scores(t, r["ground_truth"], r["tools"])} for r, t in zip(rows, texts)]
    return records, summarize_tool_calls(records)


def sample_tool_calls(model, tokenizer, rows, *, k, temperature=1.0, seed=0, desc_chars=None, **gen_kwargs):
    """The sampled counterpart of evaluate_tool_calls: ``k`` completions per row at ``temperature`` (what
    GRPO samples and optimises; sample_cached, so a rerun reads them back), each scored like a greedy one,
    and each question's scores averaged over its samples:

        score_q = (1/k) sum_{j=1..k} s(y_qj),   y_qj ~ pi(. | x_q, T)

    the Monte-Carlo estimate of the expected reward E_{y~pi}[s(y)] that GRPO's objective raises. Greedy
    decoding reads only the most likely answer, which RL changes last; this reads the whole distribution.
    The same seed for two models draws their samples from the same random stream (common random numbers),
    which narrows a paired difference. Records carry the same keys as evaluate_tool_calls' (the scores are
    shares in [0, 1] or means in [-1, 1] instead of single values), so scoreboard.gain_rows takes them."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    samples = sample_cached(model, tokenizer, tool_call_prompts(tokenizer, rows, desc_chars), k=k, temperature=temperature, seed=seed, **gen_kwargs)
    records = []
    for r, texts in zip(rows, samples):
        scores = [tool_call_scores(t, r["ground_truth"], r["tools"]) for t in texts]
        records.append({"id": r["id"], "samples": len(texts), "completions": list(texts),
                        **{key: sum(float(s[key]) for s in scores) / len(scores) for key in ("format_valid", "sim", "exact")}})
    return records, summarize_tool_calls(records)


def bfcl_prompt(tokenizer, row, fmt="json", desc_chars=None):
    """The rendered prompt for one BFCL row: "json" = the chat template's tool format (the functions in the
    template's tools section, answers as <tool_call> JSON, what our models are trained on); "python" =
    BFCL's own prompting format (bfcl_python_messages, no template tools)."""
    from helpers import models
    if fmt == "json":
        return models.render_prompt(tokenizer, models.build_messages(row["question"]),
                                    models.shorten_tools(bfcl_tools(row["functions"]), desc_chars))
    if fmt == "python":
        return models.render_prompt(tokenizer, bfcl_python_messages(row["question"], row["functions"], desc_chars))
    raise ValueError(f"fmt must be one of {PROMPT_FORMATS}, got {fmt!r}")


def _sim_text(text, fmt):
    """Model text in the form sim_reward reads (<tool_call> JSON): python-format output is decoded first;
    None when it does not decode to a call list (the caller gives it the format gate's -1, even if the
    text happens to hold <tool_call> JSON: that is not the format this prompt asked for)."""
    from helpers import rewards
    if fmt != "python":
        return text
    decoded = decode_python_calls(text)
    if decoded is None or not is_call_list(decoded):
        return None
    return rewards.render_tool_calls([{"name": n, "arguments": a} for call in decoded for n, a in call.items()])


def bfcl_summary(records, categories):
    """Per-category accuracy (and mean Sim-RL score) and ast_mean: the unweighted mean of the call
    categories present (simple, multiple, parallel, parallel_multiple), which is how BFCL averages its
    non-live AST categories; irrelevance is reported apart (a model that never calls scores 100% there)."""
    summary = {}
    for category in categories:
        rs = [r for r in records if r["category"] == category]
        summary[f"{category}_accuracy"] = sum(r["valid"] for r in rs) / len(rs) if rs else None
        sims = [r["sim"] for r in rs if r["sim"] is not None]
        if sims:
            summary[f"{category}_sim"] = sum(sims) / len(sims)
    present = [summary[f"{c}_accuracy"] for c in AST_CATEGORIES if summary.get(f"{c}_accuracy") is not None]
    summary["ast_mean"] = sum(present) / len(present) if present else None
    return summary


# What BFCL's error types mean, for the tables a reader sees (the strings themselves are BFCL's).
ERROR_GLOSS = {
    "decoder_failed": "no call could be decoded from the text",
    "decoder_wrong_output_format": "decoded, but not a list of calls",
    "irrelevance_error:decoder_success": "called a function where none fits",
    "simple_function_checker:wrong_func_name": "wrong function",
    "simple_function_checker:wrong_count": "not exactly one call (prose decodes to none)",
    "multiple_function_checker:wrong_count": "not exactly one call (prose decodes to none)",
    "parallel_function_checker_no_order:wrong_count": "wrong number of calls",
    "parallel_function_checker_no_order:cannot_find_match": "some call matches no expected call",
    "simple_function_checker:missing_required": "a required argument left out",
    "simple_function_checker:missing_optional": "an optional argument the answer expects left out",
    "simple_function_checker:unexpected_param": "an argument the function does not have",
    "value_error:string": "a string argument with a wrong value",
    "value_error:others": "a number or other argument with a wrong value",
    "type_error:simple": "an argument of the wrong type",
    "type_error:nested": "a list whose items have the wrong type",
    "value_error:list/tuple": "a list argument with wrong items",
}


def error_breakdown(records):
    """Why answers fail: per category, how many records have each BFCL error_type ("correct" for valid
    ones), most frequent first -> [{"category", "error_type", "count", "share", "meaning"}]. `share` is of
    the category's records, so a category's shares sum to 1."""
    counts = {}   # category -> Counter of outcomes, categories in order of first appearance
    for r in records:
        outcome = "correct" if r["valid"] else (r.get("error_type") or "unknown")
        counts.setdefault(r["category"], collections.Counter())[outcome] += 1
    return [{"category": category, "error_type": key, "count": n, "share": n / c.total(),
             "meaning": "" if key == "correct" else ERROR_GLOSS.get(key, "")}
            for category, c in counts.items() for key, n in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))]


def bfcl_budget(category, max_new_tokens=None):
    """New tokens for one category: BFCL_MAX_NEW_TOKENS's when `max_new_tokens` is None, a number as given
    (the same for every category: smoke runs), or a {category: number} dict falling back on the table."""
    if max_new_tokens is None:
        return BFCL_MAX_NEW_TOKENS.get(category, 128)
    if isinstance(max_new_tokens, dict):
        return max_new_tokens.get(category, BFCL_MAX_NEW_TOKENS.get(category, 128))
    return int(max_new_tokens)


def evaluate_bfcl(model, tokenizer, rows_by_category, *, desc_chars=None, fmt="json", max_new_tokens=None, **gen_kwargs):
    """BFCL questions in one prompt format (bfcl_prompt: "json" or "python"), greedy and cached
    (generate_cached) with each category's new-token budget (bfcl_budget): per-row AST validity with our
    checker (which agrees with bfcl-eval's) and the Sim-RL score against the first acceptable answer.
    Returns (records, bfcl_summary(...))."""
    from helpers import rewards
    if fmt not in PROMPT_FORMATS:
        raise ValueError(f"fmt must be one of {PROMPT_FORMATS}, got {fmt!r}")
    records = []
    for category, rows in rows_by_category.items():
        prompts = [bfcl_prompt(tokenizer, r, fmt, desc_chars) for r in rows]
        texts = generate_cached(model, tokenizer, prompts, max_new_tokens=bfcl_budget(category, max_new_tokens), **gen_kwargs)
        for r, text in zip(rows, texts):
            check = score_bfcl_output(text, r, category, fmt=fmt)
            gt_calls = bfcl_ground_truth_calls(r["ground_truth"])
            sim_text = _sim_text(text, fmt)
            sim = None if not gt_calls else -1.0 if sim_text is None else rewards.sim_reward(sim_text, gt_calls, bfcl_tools(r["functions"]))
            records.append({"id": r["id"], "category": category, "format": fmt, "completion": text,
                            "valid": check["valid"], "error_type": check["error_type"], "sim": sim})
    return records, bfcl_summary(records, list(rows_by_category))
