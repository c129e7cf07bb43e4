"""How many completions per second each reward scores, on one CPU core.

Completions are built from STAR's xLAM sample (1,024 rows): for each row, the ground truth
rendered as a completion plus the kinds of mistakes a policy makes during GRPO (a string
argument reworded, a number off by one, a call missing, a call to an unknown tool, truncated
JSON, a text reply instead of a call). "cold" clears the ROUGE caches first; "warm" is a second
pass, as when the G completions of a group share their ground truth. For comparison, sim_reward
is also timed with ROUGE computed by rouge-score itself (its results must be identical).

    python benchmarks/bench_rewards.py [--rows N] [--embedding]

Data: $TINYRL_DATA/star_xlam_example_messages/example_messages.jsonl, default ../shared/data
next to the repository. Goal: sim_reward >= 5,000 completions/s per core.
"""

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from helpers import data  # noqa: E402
from helpers import rewards as R  # noqa: E402

SEED = 0


def load_rows(n):
    """STAR's xLAM rows in their raw form (messages with the assistant's tool_calls, tools)."""
    try:
        rows = data.load_xlam(download=False)
    except data.DataMissingError as err:
        sys.exit(str(err))
    return [{"id": r["id"], "tools": r["tools_raw"],
             "messages": r["messages"] + [{"role": "assistant", "tool_calls": r["ground_truth"]}]} for r in rows[:n]]


def reword(value, rng):
    """A plausible wrong-but-close argument value."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        words = value.split()
        kind = rng.choice(["lower", "drop", "append"])
        if kind == "lower":
            return value.lower()
        if kind == "drop" and len(words) > 1:
            return " ".join(words[:-1])
        return value + " please"
    return value


def typical_completions(rows, rng):
    """[(completion, ground_truth, tools)]: 7 completions per row."""
    out = []
    for row in rows:
        gt, tools = row["messages"][1]["tool_calls"], row["tools"]
        think = "The user wants " + row["messages"][0]["content"][:80]
        reworded = [{"name": c["name"], "arguments": {k: reword(v, rng) for k, v in c["arguments"].items()}} for c in gt]
        exact = R.render_tool_calls(gt, think=think)
        out += [
            (exact, gt, tools),
            (R.render_tool_calls(reworded, think=think), gt, tools),
            (R.render_tool_calls(gt[:-1] or reworded, think=think), gt, tools),
            (R.render_tool_calls(gt + [{"name": "unknown_tool", "arguments": {}}], think=think), gt, tools),
            (exact[: len(exact) * 3 // 4], gt, tools),
            (f"<think>{think}</think>\nI can help with that, but I need more details.", gt, tools),
            (R.render_tool_calls(list(reversed(reworded)), think=think), gt, tools),
        ]
    return out


def translation_pairs(rows, rng):
    """[(completion, reference)]: the user request as reference, a reworded copy as the answer."""
    pairs = []
    for row in rows:
        ref = row["messages"][0]["content"]
        words = ref.split()
        rng.shuffle(words[: len(words) // 3])
        hyp = " ".join(w.lower() if rng.random() < 0.2 else w for w in words if rng.random() > 0.1)
        pairs.append((f"<think>translate</think>\n<answer>{hyp}</answer>", ref))
    return pairs


def clear_caches():
    R._cached_tokens.cache_clear()
    if R._rouge_tokenizer.cache_info().currsize:
        R._rouge_tokenizer().keywords["stemmer"].stem.cache_clear()


def rate(fn, items):
    t = time.perf_counter()
    total = 0.0
    for item in items:
        total += fn(*item)
    return len(items) / (time.perf_counter() - t), total


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1024)
    ap.add_argument("--embedding", action="store_true", help="also time embedding_reward (loads the model)")
    ap.add_argument("--all-cores", action="store_true", help="do not pin the process to one core")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity") and not args.all_cores:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # "per core" means one core

    rng = random.Random(SEED)
    rows = load_rows(args.rows)
    tool_items = typical_completions(rows, rng)
    text_items = translation_pairs(rows, rng)
    R.rouge_l_f1("warm up", "imports")  # imports (nltk, rouge-score) are not part of the timing
    R.bleu_reward("<answer>warm up</answer>", "imports")

    results = []
    for name, fn, items in [
        ("sim_reward", R.sim_reward, tool_items),
        ("sim_reward (require_think)", lambda c, g, t: R.sim_reward(c, g, t, require_think=True), tool_items),
        ("binary_reward", R.binary_reward, tool_items),
        ("toolrl_reward", R.toolrl_reward, tool_items),
        ("bleu_reward", R.bleu_reward, text_items),
        ("chrf_reward", R.chrf_reward, text_items),
    ]:
        clear_caches()
        cold, total = rate(fn, items)
        warm, _ = rate(fn, items)
        results.append((name, len(items), cold, warm, total / len(items)))

    # the same sim_reward with ROUGE from rouge-score's RougeScorer (as STAR computes it)
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    fast = R.rouge_l_f1
    R.rouge_l_f1 = lambda p, t: scorer.score(t, p)["rougeL"].fmeasure
    try:
        ref_rate, ref_total = rate(R.sim_reward, tool_items)
    finally:
        R.rouge_l_f1 = fast
    clear_caches()
    _, fast_total = rate(R.sim_reward, tool_items)
    assert ref_total == fast_total, "fast ROUGE changed sim_reward's results"
    results.append(("sim_reward, rouge-score ROUGE", len(tool_items), ref_rate, float("nan"), ref_total / len(tool_items)))

    if args.embedding:
        embedder = R.default_embedder()
        items = text_items[:200]
        R.embedding_reward(*items[0], embedder=embedder)
        emb_rate, total = rate(lambda c, r: R.embedding_reward(c, r, embedder=embedder), items)
        results.append(("embedding_reward (1 pair/call)", len(items), emb_rate, float("nan"), total / len(items)))

    print(f"{len(rows)} xLAM rows -> {len(tool_items)} tool-call completions, {len(text_items)} translation pairs; "
          f"{'one core' if not args.all_cores else 'all cores'}")
    print(f"{'reward':34s} {'n':>6s} {'cold /s':>10s} {'warm /s':>10s} {'mean':>8s}")
    for name, n, cold, warm, mean in results:
        warm_s = f"{warm:10,.0f}" if warm == warm else f"{'-':>10s}"
        print(f"{name:34s} {n:6d} {cold:10,.0f} {warm_s} {mean:8.3f}")


if __name__ == "__main__":
    main()
