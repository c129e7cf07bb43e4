"""Metrics JSON per notebook -> results table (CSV) and a Markdown report.

Every notebook ends with ``write_metrics(OUTPUT_DIR, "<notebook>", {...})``. The workbook runner
collects those files after the run; nothing here imports torch, so reports rebuild in a second.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import numbers
import os
import subprocess
from pathlib import Path

# -----------------------------------------------------------------------------
# config
METRICS_SUBDIR = "metrics"     # DIR/metrics/<notebook>.json
FIGURES_SUBDIR = "figures"     # DIR/figures/<notebook>-<name>.png
RESULTS_CSV = "results.csv"
REPORT_MD = "report.md"
RUN_JSON = "run.json"          # written by the runner: profile, smoke, timings, commit
CSV_COLUMNS = ("notebook", "metric", "value", "profile", "smoke", "seed")
# -----------------------------------------------------------------------------


def _clean(value):
    """JSON-safe scalars: numpy/torch numbers become floats, NaN/inf become None (JSON has neither)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Number):
        value = float(value) if not isinstance(value, numbers.Integral) else int(value)
        return None if isinstance(value, float) and not math.isfinite(value) else value
    if hasattr(value, "item"):
        return _clean(value.item())
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    raise TypeError(f"metric value of type {type(value).__name__} is not a number, string or list")


def write_metrics(output_dir, notebook: str, metrics: dict, *, rt=None, smoke: bool | None = None,
                  notes: str = "", extra: dict | None = None) -> Path:
    """Write DIR/metrics/<notebook>.json. ``metrics`` maps names to scalars (the report's table);
    ``extra`` holds anything bigger (tables, curves) kept in the JSON but not in the CSV."""
    for name, value in metrics.items():
        if isinstance(value, (dict, list, tuple)):
            raise TypeError(f"metric {name!r} must be a scalar; put tables and curves in extra=")
    payload = {
        "notebook": notebook,
        "profile": getattr(rt, "profile", None),
        "seed": getattr(rt, "seed", None),
        "smoke": smoke,
        "written": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "metrics": _clean(dict(metrics)),
        "notes": notes,
        "extra": _clean(extra or {}),
    }
    path = Path(output_dir) / METRICS_SUBDIR / f"{notebook}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(path)
    return path


def figure_path(output_dir, notebook: str, name: str) -> Path:
    path = Path(output_dir) / FIGURES_SUBDIR / f"{notebook}-{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def save_figure(fig, output_dir, notebook: str, name: str) -> Path:
    path = figure_path(output_dir, notebook, name)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def load_metrics(output_dir) -> list[dict]:
    folder = Path(output_dir) / METRICS_SUBDIR
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def results_rows(metric_files: list[dict]) -> list[dict]:
    rows = []
    for m in metric_files:
        for name, value in m.get("metrics", {}).items():
            rows.append({"notebook": m["notebook"], "metric": name, "value": value,
                         "profile": m.get("profile"), "smoke": m.get("smoke"), "seed": m.get("seed")})
    return rows


def write_results_csv(output_dir, rows: list[dict]) -> Path:
    import csv
    path = Path(output_dir) / RESULTS_CSV
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def git_commit(repo: Path | None = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo or Path(__file__).parent,
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def render_report(output_dir) -> str:
    output_dir = Path(output_dir)
    run = json.loads((output_dir / RUN_JSON).read_text()) if (output_dir / RUN_JSON).is_file() else {}
    metric_files = load_metrics(output_dir)
    lines = ["# Tiny RL Workbook: run report", ""]
    if run:
        lines += [
            f"- profile: **{run.get('profile')}**{' (smoke run: shrunk steps and data)' if run.get('smoke') else ''}",
            f"- commit: `{run.get('commit')}`, started {run.get('started')}, total {run.get('seconds', 0):.0f} s",
            "",
            "| notebook | status | seconds |",
            "|---|---|---|",
        ]
        lines += [f"| {n['notebook']} | {n['status']} | {n.get('seconds', 0):.0f} |" for n in run.get("notebooks", [])]
        lines.append("")
    if not metric_files:
        lines.append("No notebook wrote metrics.")
    for m in metric_files:
        lines += [f"## {m['notebook']}", ""]
        if m.get("notes"):
            lines += [m["notes"], ""]
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in m.get("metrics", {}).items()]
        lines.append("")
        figures = sorted((output_dir / FIGURES_SUBDIR).glob(f"{m['notebook']}-*.png"))
        lines += [f"![{p.stem}]({FIGURES_SUBDIR}/{p.name})" for p in figures]
        if figures:
            lines.append("")
    return "\n".join(lines)


def write_report(output_dir) -> tuple[Path, Path]:
    """(report.md, results.csv) for a run folder, from whatever metrics it holds."""
    output_dir = Path(output_dir)
    csv_path = write_results_csv(output_dir, results_rows(load_metrics(output_dir)))
    md_path = output_dir / REPORT_MD
    md_path.write_text(render_report(output_dir))
    return md_path, csv_path


def default_output_dir() -> Path:
    """Where a notebook opened by hand writes (runs/interactive); the runner passes its own."""
    return Path(os.environ.get("TINYRL_OUTPUT_DIR", Path(__file__).resolve().parent.parent / "runs" / "interactive"))
