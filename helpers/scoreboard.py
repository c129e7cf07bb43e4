"""The scoreboard of lesson 05: every model the lessons left in a run folder, found, loaded and
summarised the same way, next to the papers' published numbers.

The lessons save what they train under DIR/models/: notebook 02 the adapted teacher and the CKD student
(a longer run's further seeds of each beside them, as <folder>_seed<N>, and the SFT seeds' weight average
as 02_teacher_soup), 03 one LoRA adapter per reward and seed, 04 the two SFT translators and one GRPO
adapter per reward.
find_models lists them together with the profile's base model, stage by stage, and lists a stage whose
checkpoint is absent as missing: a model that was never trained is reported as missing, never as a zero.
Scoring itself is evaluate's (function calling) and translation's (Wayuunaiki): nothing is re-implemented.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from helpers import report

# -----------------------------------------------------------------------------
# config

# (stage, folder name under DIR/models or None for the profile's base model, a glob for per-seed runs, or a
# tuple of both: notebook 02 keeps its first seed in the plain folder, the one later stages start from)
FUNCTION_CALLING_STAGES = [
    ("base", None),
    ("SFT / adapted teacher (02)", ("02_teacher", "02_teacher_seed*")),
    ("SFT seed soup (02)", "02_teacher_soup"),   # the uniform average of those seeds (models.load_soup)
    ("CKD student (02)", ("02_student_ckd", "02_student_ckd_seed*")),
    ("Sim-RL GRPO (03)", "03_sim_seed*"),
    ("binary-reward GRPO (03)", "03_binary_seed*"),
]
# (stage, folder or None for the base, does the system use the dictionary tool)
TRANSLATION_STAGES = [
    ("base, no tool", None, False),
    ("SFT, no tool (04)", "04_sft_no_tool", False),
    ("SFT, tool (04)", "04_sft_tool", True),
    ("SFT + GRPO (BLEU), tool (04)", "04_grpo_bleu", True),
    ("SFT + GRPO (chrF++), tool (04)", "04_grpo_chrf", True),
]
# Published numbers, for orientation only: other models, other data, other scale.
PAPERS = [
    {"source": "STAR (arXiv 2602.03022), Table 3", "system": "Qwen3-0.6B", "metric": "BFCL v3 overall", "value": 47.33},
    {"source": "STAR (arXiv 2602.03022), Table 3", "system": "STAR-0.6B", "metric": "BFCL v3 overall", "value": 51.70},
    {"source": "AmericasNLP 2025 shared task", "system": "organisers' baseline, es-guc dev", "metric": "chrF++", "value": 35.68},
    {"source": "rl_translator (arXiv 2508.19481)", "system": "its dev BLEU", "metric": "BLEU",
     "value": None, "note": "inflated: its dictionary holds about 25% of that dev set verbatim (notebook 04); "
                           "its separate test set gives about 2 BLEU"},
]
# What each stage learned from, for the paired "what did this stage change" table: the teacher for the CKD
# student (the model it imitates), the SFT seeds for their soup. The GRPO stages learned from whatever
# notebook 03 started from, which their adapters name (start_stage), so theirs is found, not fixed here.
TRAINED_FROM = {
    "SFT / adapted teacher (02)": "base",
    "SFT seed soup (02)": "SFT / adapted teacher (02)",
    "CKD student (02)": "SFT / adapted teacher (02)",
}
_SEED_RE = re.compile(r"_seed(\d+)$")
# -----------------------------------------------------------------------------


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / "adapter_config.json").is_file()


def _seed(path: Path, model_info: dict) -> int | None:
    # the folder name says it (03_sim_seed2); a plain folder (02_teacher) has it in its model info
    if m := _SEED_RE.search(path.name):
        return int(m.group(1))
    return model_info.get("seed") if isinstance(model_info.get("seed"), int) else None


def _entries(out_dir: Path, stage: str, folder, base_id: str, **info) -> list[dict]:
    if folder is None:
        return [{"stage": stage, "name": base_id, "path": base_id, "seed": None, "present": True, "train_seconds": 0.0, **info}]
    patterns = (folder,) if isinstance(folder, str) else tuple(folder)
    paths = [p for pat in patterns for p in (sorted((out_dir / "models").glob(pat)) if "*" in pat else [out_dir / "models" / pat])]
    found = [p for p in paths if _is_model_dir(p)]
    if not found:
        return [{"stage": stage, "name": patterns[0], "path": str(out_dir / "models" / patterns[0]), "seed": None,
                 "present": False, **info}]
    infos = {p: report.read_model_info(p) for p in found}
    return [{"stage": stage, "name": p.name, "path": str(p), "present": True, "seed": _seed(p, infos[p]),
             "train_seconds": infos[p].get("train_seconds"), **info} for p in found]


def find_models(out_dir, base_id: str) -> list[dict]:
    """Every model of the lessons in out_dir, as {"task" ("function_calling" or "translation"), "stage",
    "name", "path", "seed", "present", and "tool" for translation}. Stages come in lesson order; a stage
    with several seeds gives one entry per seed; an absent stage gives one entry with present=False."""
    out_dir = Path(out_dir)
    found = []
    for stage, folder in FUNCTION_CALLING_STAGES:
        found += _entries(out_dir, stage, folder, base_id, task="function_calling")
    for stage, folder, tool in TRANSLATION_STAGES:
        found += _entries(out_dir, stage, folder, base_id, task="translation", tool=tool)
    return found


def load_model(entry: dict, rt):
    """The model of a find_models entry, ready to generate. A LoRA adapter folder is put on the base
    model its adapter_config.json names; on the cpu profile the adapter is merged into the weights
    (generation at base-model speed), on the gpu profile it stays on the 4-bit base."""
    from helpers import models
    if not entry.get("present"):
        raise FileNotFoundError(f"{entry['stage']}: no checkpoint at {entry['path']} (run the lesson that trains it)")
    path = Path(entry["path"])
    gpu = rt.profile == "gpu"
    adapter = path / "adapter_config.json"
    if not adapter.is_file():
        return models.load_causal_lm(entry["path"], dtype=rt.dtype, four_bit=gpu, device=rt.device).eval()
    from peft import PeftModel
    base = models.load_causal_lm(models.adapter_base(path), dtype=rt.dtype, four_bit=gpu, device=rt.device)
    model = PeftModel.from_pretrained(base, str(path))
    return (model if gpu else model.merge_and_unload()).eval()


def seed_model(folder, seed: int) -> Path:
    """The model a later stage's seed ``seed`` starts from. Notebook 02 keeps its first seed in ``folder``
    (02_teacher) and a longer run's further seeds beside it (02_teacher_seed1, ...); a seed it trained
    starts from its own model, so that seed N is one chain SFT -> GRPO; any other seed from ``folder``."""
    folder = Path(folder)
    own = folder.with_name(f"{folder.name}_seed{seed}")
    return own if _is_model_dir(own) else folder


def mean_over_seeds(results: list[dict]) -> dict:
    """Key by key, the mean of the numbers the dicts hold (bools and None skipped); None where none has one.
    For a table row such as "before RL" when each seed started from its own model."""
    keys = list(dict.fromkeys(k for r in results for k in r))
    out = {}
    for k in keys:
        xs = [float(r[k]) for r in results if isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool)]
        out[k] = sum(xs) / len(xs) if xs else None
    return out


def seed_summary(values) -> dict:
    """Mean over seeds with a 95% Student-t interval half-width, t_{0.975, n-1} * s / sqrt(n);
    with one seed the half-width is nan (no spread to estimate). None values (missing) are skipped."""
    from scipy import stats
    xs = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not xs:
        return {"mean": float("nan"), "ci": float("nan"), "n_seeds": 0}
    mean = sum(xs) / len(xs)
    if len(xs) < 2:
        return {"mean": mean, "ci": float("nan"), "n_seeds": 1}
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))
    return {"mean": mean, "ci": float(stats.t.ppf(0.975, len(xs) - 1) * sd / math.sqrt(len(xs))), "n_seeds": len(xs)}


def question_means(records_by_seed: list[list[dict]], metric: str) -> list[float]:
    """Per question, the mean of ``metric`` over seeds. records_by_seed: one list of scored records per seed
    (evaluate.evaluate_tool_calls' records, each with an "id"), all on the same questions; a question
    missing from a seed is an error rather than a silently smaller sample."""
    if not records_by_seed or not records_by_seed[0]:
        raise ValueError("question_means needs at least one seed with scored questions")
    ids = [r["id"] for r in records_by_seed[0]]
    by_seed = [{r["id"]: float(r[metric]) for r in recs} for recs in records_by_seed]
    missing = [i for i, seen in enumerate(by_seed) if set(seen) != set(ids)]
    if missing:
        raise ValueError(f"seeds {missing} were scored on other questions than seed 0")
    return [sum(seen[q] for seen in by_seed) / len(by_seed) for q in ids]


def question_interval(records_by_seed: list[list[dict]], metric: str, *, n: int = 2000, seed: int = 0) -> dict:
    """Mean of ``metric`` with a 95% percentile-bootstrap interval over *questions* (each question's
    score first averaged over seeds): the uncertainty that comes from scoring a sample of questions,
    which on 24-48 held-out rows is the larger one. {"mean", "low", "high", "n_questions", "n_seeds"}."""
    from helpers.evaluate import bootstrap_ci
    xs = question_means(records_by_seed, metric)
    low, high = bootstrap_ci(xs, n=n, seed=seed)
    return {"mean": sum(xs) / len(xs), "low": low, "high": high, "n_questions": len(xs), "n_seeds": len(records_by_seed)}


def paired_difference(records_a: list[list[dict]], records_b: list[list[dict]], metric: str, *,
                      n: int = 2000, seed: int = 0) -> dict:
    """A minus B on the same questions, with a paired 95% bootstrap interval: resample questions, keep each
    question's two scores together, so that what both get right or wrong cancels out.

        d_q = mean_seeds(a_q) - mean_seeds(b_q),   CI = bootstrap percentile interval of mean_q(d_q)

    An interval that excludes 0 is the evidence the lessons ask for before calling one arm better."""
    from helpers.evaluate import bootstrap_ci
    a, b = question_means(records_a, metric), question_means(records_b, metric)
    ids_a, ids_b = [r["id"] for r in records_a[0]], [r["id"] for r in records_b[0]]
    if ids_a != ids_b:
        raise ValueError("paired_difference needs both arms scored on the same questions in the same order")
    d = [x - y for x, y in zip(a, b)]
    low, high = bootstrap_ci(d, n=n, seed=seed)
    return {"mean": sum(d) / len(d), "low": low, "high": high, "n_questions": len(d)}


def gain_rows(after: list[list[dict]], before: list[list[dict]], metrics=("sim", "exact", "format_valid"), **info) -> list[dict]:
    """One row per metric: the mean before and after over questions, the paired gain after - before with its
    95% interval (paired_difference) and whether the interval excludes 0; ``info`` (reward, rows, ...) is
    copied into every row. ``after`` and ``before`` are per-seed record lists on the same questions."""
    mean = lambda xs: sum(xs) / len(xs)   # the means only: question_interval would bootstrap for nothing
    out = []
    for metric in metrics:
        d = paired_difference(after, before, metric)
        out.append({**info, "metric": metric, "before": mean(question_means(before, metric)),
                    "after": mean(question_means(after, metric)), "gain": d["mean"],
                    "gain_95ci": f"[{d['low']:+.3f}, {d['high']:+.3f}]", "excludes_0": d["low"] > 0 or d["high"] < 0})
    return out


def stage_table(rows: list[dict], metrics: list[str]) -> list[dict]:
    """Per-model rows ({"stage", "seed", "present", metric: value}) -> one row per stage, in first-seen
    order: "<metric>" the mean over seeds, "<metric>_ci" the seed_summary half-width, "seeds" how
    many seeds were scored; a stage with no present model has status "missing" and no numbers."""
    order = list(dict.fromkeys(r["stage"] for r in rows))
    table = []
    for stage in order:
        group = [r for r in rows if r["stage"] == stage and r.get("present")]
        if not group:
            table.append({"stage": stage, "status": "missing", "seeds": 0})
            continue
        row = {"stage": stage, "status": "ok", "seeds": len(group)}
        for m in metrics:
            s = seed_summary([r.get(m) for r in group])
            row[m], row[f"{m}_ci"] = s["mean"], s["ci"]
        table.append(row)
    return table


def start_stage(entry: dict, entries: list[dict]) -> str | None:
    """The stage a GRPO adapter was trained from: the folder its adapter_config.json names as base
    (a merged copy, <folder>/merged, counts as its folder), matched by name against the other entries, so that
    a run folder that was moved still matches. None when the entry is no adapter, its config names no base,
    or its start is not among the entries (a model id, or a folder of another run)."""
    from helpers import models
    path = Path(entry.get("path", ""))
    if not entry.get("present") or not (path / "adapter_config.json").is_file():
        return None
    try:
        base = Path(models.adapter_base(path))
    except (OSError, ValueError):   # an unreadable adapter_config.json, or one without a base: no start to name
        return None
    name = base.parent.name if base.name == "merged" else base.name
    return next((e["stage"] for e in entries if e.get("present") and e.get("name") == name
                 and e.get("task") == entry.get("task")), None)


def trained_from(entries: list[dict]) -> dict[str, str]:
    """{stage: the stage it learned from} for the present function-calling stages that have one present:
    TRAINED_FROM for notebook 02's, start_stage for the GRPO adapters (the first seed's start; seeds that
    started from different stages are an error, as their mean would compare against no one model)."""
    fc = [e for e in entries if e.get("task") == "function_calling" and e.get("present")]
    present = {e["stage"] for e in fc}
    out = {stage: prev for stage, prev in TRAINED_FROM.items() if stage in present and prev in present}
    for stage in dict.fromkeys(e["stage"] for e in fc):
        starts = {start_stage(e, fc) for e in fc if e["stage"] == stage} - {None}
        if len(starts) > 1:
            raise ValueError(f"{stage}: its seeds started from different stages {sorted(starts)}")
        if starts and stage not in out:
            out[stage] = starts.pop()
    return out


def stage_gains(records: list[dict], pairs: dict[str, str], categories, metric: str = "valid") -> list[dict]:
    """What each stage changed, question by question: for every (stage, learned-from) pair and category, the
    paired gain of ``metric`` with its 95% bootstrap interval over the category's questions (gain_rows).

        gain_c = mean_q [ mean_seeds(stage_q) - mean_seeds(from_q) ],   q over category c's questions

    records: scored questions, each with "stage", "seed", "category", "id" and ``metric`` (one prompt format);
    every seed of both stages must hold the same questions (question_means refuses otherwise)."""
    def by_seed(stage, category):
        rows = [r for r in records if r["stage"] == stage and r["category"] == category]
        seeds = list(dict.fromkeys(r["seed"] for r in rows))
        return [[r for r in rows if r["seed"] == s] for s in seeds]
    out = []
    for stage, prev in pairs.items():
        for category in categories:
            after, before = by_seed(stage, category), by_seed(prev, category)
            if after and before:
                out += gain_rows(after, before, metrics=(metric,), stage=stage, against=prev, category=category,
                                 questions=len(after[0]))
    return out


def stage_gain_table(gains: list[dict]) -> list[dict]:
    """stage_gains' rows as a table to read: one row per (stage, against) pair in their order, one column per
    category holding "gain [95% interval]"."""
    table = {}
    for g in gains:
        row = table.setdefault((g["stage"], g["against"]), {"stage": g["stage"], "against": g["against"]})
        row[g["category"]] = f"{g['gain']:+.3f} {g['gain_95ci']}"
    return list(table.values())
