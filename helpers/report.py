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
MODEL_INFO = "tinyrl_info.json"  # beside a saved model: how long it trained, on what (read by the scoreboard)
CSV_COLUMNS = ("notebook", "metric", "value", "profile", "smoke", "seed")
SNAPSHOT_MAX_BYTES = 2_000_000   # a committed reference run stays small: metrics, tables, figures, no models
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
                  notes: str = "", extra: dict | None = None, tables: dict | None = None) -> Path:
    """Write DIR/metrics/<notebook>.json. ``metrics`` maps names to scalars (the report's table);
    ``extra`` holds anything bigger (curves, raw rows) kept in the JSON but not in the CSV; ``tables``
    maps a title to a list of row dicts that the report (and the README's results block) shows as
    tables, at the top."""
    for name, value in metrics.items():
        if isinstance(value, (dict, list, tuple)):
            raise TypeError(f"metric {name!r} must be a scalar; put tables and curves in extra=")
    for title, rows in (tables or {}).items():
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise TypeError(f"table {title!r} must be a list of row dicts")
    payload = {
        "notebook": notebook,
        "profile": getattr(rt, "profile", None),
        "seed": getattr(rt, "seed", None),
        "smoke": smoke,
        "written": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "metrics": _clean(dict(metrics)),
        "notes": notes,
        "extra": _clean(extra or {}),
        "tables": {title: [{k: _clean(v) for k, v in r.items()} for r in rows] for title, rows in (tables or {}).items()},
    }
    path = Path(output_dir) / METRICS_SUBDIR / f"{notebook}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(path)
    return path


def write_model_info(model_dir, *, train_seconds: float, **info) -> Path:
    """Record beside a saved model how it was made (``train_seconds`` of its own stage, steps, seed, start),
    so notebook 05's stage table can show the wall time each stage cost without re-running it."""
    path = Path(model_dir) / MODEL_INFO
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean({"train_seconds": train_seconds, **info}), indent=2))
    return path


def read_model_info(model_dir) -> dict:
    """The write_model_info record of a model folder, or {} when there is none (or it is unreadable)."""
    try:
        info = json.loads((Path(model_dir) / MODEL_INFO).read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


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


def _duration(seconds) -> str:
    """Seconds as "42 s" or "12.5 min"; n/a when unknown."""
    if seconds is None:
        return "n/a"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def git_commit(repo: Path | None = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo or Path(__file__).parent,
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """Rows of dicts as a GitHub markdown table; floats with 4 significant digits, None and nan as n/a."""
    if not rows:
        return "(no rows)"
    columns = columns or list(dict.fromkeys(k for r in rows for k in r))
    cell = lambda v: "n/a" if v is None or (isinstance(v, float) and v != v) else _fmt(v)  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)).replace("|", "/") for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def results_tables(output_dir) -> list[tuple[str, str, list[dict]]]:
    """(notebook, title, rows) for every table the notebooks of a run folder wrote."""
    return [(m["notebook"], title, rows) for m in load_metrics(output_dir) for title, rows in m.get("tables", {}).items()]


def load_run(output_dir) -> dict:
    """DIR/run.json ({} when absent), every notebook entry carrying its own commit, start time and knobs
    (a folder written before entries carried them gets the folder-level values)."""
    path = Path(output_dir) / RUN_JSON
    if not path.is_file():
        return {}
    run = json.loads(path.read_text())
    for entry in run.get("notebooks", []):
        entry.setdefault("commit", run.get("commit"))
        entry.setdefault("started", run.get("started"))
        entry.setdefault("parameters", run.get("parameters") or {})
    return run


def render_report(output_dir) -> str:
    output_dir = Path(output_dir)
    run = load_run(output_dir)
    metric_files = load_metrics(output_dir)
    lines = ["# Tiny RL Workbook: run report", ""]
    if run:
        lines += [
            f"- profile: **{run.get('profile')}**{' (smoke run: shrunk steps and data)' if run.get('smoke') else ''}",
            f"- last started {run.get('started')} at commit `{run.get('commit')}`; notebooks total {run.get('seconds', 0):.0f} s",
            "",
            "| notebook | status | seconds | commit | knobs set |",
            "|---|---|---|---|---|",
        ]
        lines += [f"| {n['notebook']} | {n['status']} | {n.get('seconds', 0):.0f} | `{n['commit']}` "
                  f"| {_knobs(n['parameters']) or 'defaults'} |" for n in run.get("notebooks", [])]
        lines.append("")
    tables = results_tables(output_dir)
    if tables:
        lines += ["## Results", ""]
        for notebook, title, rows in tables:
            lines += [f"### {title} ({notebook})", "", markdown_table(rows), ""]
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


def _knobs(params: dict | None) -> str:
    """--param flags that reproduce a run's knobs."""
    import shlex
    return " ".join(f"--param {shlex.quote(f'{k}={json.dumps(v)}')}" for k, v in (params or {}).items())


def write_report(output_dir) -> tuple[Path, Path]:
    """(report.md, results.csv) for a run folder, from whatever metrics it holds."""
    output_dir = Path(output_dir)
    csv_path = write_results_csv(output_dir, results_rows(load_metrics(output_dir)))
    md_path = output_dir / REPORT_MD
    md_path.write_text(render_report(output_dir))
    return md_path, csv_path


README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"
LESSONS_START, LESSONS_END = "<!-- lessons:start -->", "<!-- lessons:end -->"
README_TABLE_PREFIXES = ("Function calling", "Spanish to Wayuunaiki")   # the stage tables; the rest stay in report.md
README_MAX_CHARS = 10_000        # the front page stays readable in five minutes; the record lives in docs/
REFERENCE_ROOT = Path(__file__).resolve().parent.parent / "results" / "reference"   # <profile>/ = a snapshot


def readme_block(output_dir) -> str:
    """The README's results block for a run folder: where the numbers come from (profile, commit, date,
    the command that regenerates them) and every table of the run. A smoke run is refused: its numbers
    only prove that the pipeline runs."""
    output_dir = Path(output_dir)
    run = load_run(output_dir)
    if not run:
        raise ValueError(f"{output_dir} holds no {RUN_JSON}: not a folder written by the workbook runner")
    if run.get("smoke"):
        raise ValueError(f"{output_dir} is a smoke run; the README shows a full run's results only")
    tables = results_tables(output_dir)
    if not tables:
        raise ValueError(f"{output_dir} holds no results tables (run notebook 05)")
    entries = run.get("notebooks") or []
    failed = [e["notebook"] for e in entries if e.get("status") != "ok"]
    if failed:
        raise ValueError(f"{output_dir}: {', '.join(failed)} did not finish; rerun them with --only before publishing")
    groups: dict[tuple, list[str]] = {}  # notebooks run together: same commit, same knobs
    for e in entries:
        key = (e["commit"], _knobs(e["parameters"]))
        groups.setdefault(key, []).append(e["notebook"][:2])
    profile = run.get("profile")
    commits = sorted({c for c, _ in groups})
    lines = [f"From a full **{profile}** run (commit{'s' if len(commits) > 1 else ''} "
             f"{', '.join(f'`{c}`' for c in commits)}; notebooks total {run.get('seconds', 0) / 60:.0f} min, "
             f"last started {run.get('started')}). Regenerate with:", "", "```bash"]
    for (commit, knobs), names in groups.items():
        lines.append(f"python -m helpers.workbook run --profile {profile} --out DIR --only {','.join(names)}"
                     f"{' ' + knobs if knobs else ''}   # commit {commit}")
    lines += ["python -m helpers.workbook readme --out DIR", "```", ""]
    lines += ["Wall time per notebook: " + ", ".join(f"{e['notebook'][:2]} {_duration(e.get('seconds'))}" for e in entries)
              + f"; total {_duration(sum(e.get('seconds') or 0 for e in entries))}.", ""]
    for notebook, title, rows in tables:
        if not title.startswith(README_TABLE_PREFIXES) or not _has_trained_stage(rows):
            continue
        lines += [f"**{title}** ({notebook})", "", markdown_table(rows), ""]
    lines += ["Every table of the run, with the failure breakdown by error type, is in its `report.md`."]
    return "\n".join(lines).rstrip() + "\n"


def _has_trained_stage(rows: list[dict]) -> bool:
    """A stage table worth a place on the front page: some stage beyond the first (the base model) ran."""
    return any(r.get("status", "ok") == "ok" for r in rows[1:])


def _between(text: str, start_mark: str, end_mark: str, what: str) -> tuple[int, int]:
    start, end = text.find(start_mark), text.find(end_mark)
    if start < 0 or end < start:
        raise ValueError(f"{what} has no {start_mark} ... {end_mark} block")
    return start + len(start_mark), end


def lesson_minutes(run: dict, notebook_number: str) -> str:
    """A lesson's wall time in a run, in minutes as the README shows it; "–" when the run did not finish it."""
    for e in (run or {}).get("notebooks", []):
        if e["notebook"][:2] == notebook_number and e.get("status") == "ok":
            return f"{e.get('seconds', 0) / 60:.1f}"
    return "–"


def fill_lesson_table(text: str, cpu_run: dict, gpu_run: dict | None = None) -> str:
    """The README's lessons table with its last two columns (minutes on two CPU cores, on a GPU) taken
    from the reference runs: rows are "| NN | ... | cpu | gpu |"; a GPU column without a gpu reference
    run says "not measured"."""
    a, b = _between(text, LESSONS_START, LESSONS_END, "the README")
    rows = []
    for line in text[a:b].split("\n"):
        cells = line.split("|")
        if len(cells) >= 7 and cells[1].strip().isdigit():
            number = cells[1].strip()
            cells[-3] = f" {lesson_minutes(cpu_run, number)} "
            cells[-2] = f" {lesson_minutes(gpu_run, number) if gpu_run else 'not measured'} "
            line = "|".join(cells)
        rows.append(line)
    return text[:a] + "\n".join(rows) + text[b:]


def render_readme(text: str, cpu_dir=None, gpu_dir=None) -> str:
    """README text with its generated parts rendered from committed snapshots: the lessons' minutes (when
    the README has a lessons block) and the results block (readme_block of the cpu snapshot). Defaults:
    results/reference/cpu and results/reference/gpu (the latter absent until a gpu run is committed)."""
    cpu = Path(cpu_dir or REFERENCE_ROOT / "cpu")
    gpu = Path(gpu_dir or REFERENCE_ROOT / "gpu")
    if LESSONS_START in text:
        text = fill_lesson_table(text, load_run(cpu), load_run(gpu) or None)
    a, b = _between(text, README_START, README_END, "the README")
    return text[:a] + "\n" + readme_block(cpu) + text[b:]


def update_readme(readme, output_dir=None) -> Path:
    """Rewrite README's generated parts (render_readme) from the snapshot or run folder ``output_dir``
    (default: results/reference/cpu)."""
    readme = Path(readme)
    readme.write_text(render_readme(readme.read_text(), output_dir))
    return readme


def beside_reference(output_dir, notebook: str, profile: str, reference=None) -> tuple[str, list[dict]]:
    """(header, rows): this run's metrics of ``notebook`` beside the committed reference run's, metric by
    metric, so a reader compares against numbers the code printed rather than numbers typed in prose.
    The header names the reference run's date, commit, knobs and machine."""
    ref = Path(reference or REFERENCE_ROOT / profile)
    theirs = next((m for m in load_metrics(ref) if m["notebook"] == notebook), None)
    if theirs is None:
        return f"no reference run of the {profile} profile holds {notebook} yet (results/reference/{profile}/)", []
    mine = next((m for m in load_metrics(output_dir) if m["notebook"] == notebook), {})
    entry = next((e for e in load_run(ref).get("notebooks", []) if e["notebook"] == notebook), {})
    machine = entry.get("machine") or {}
    header = (f"reference: the {profile} run of {str(entry.get('started'))[:10]} at commit {entry.get('commit')}, "
              f"{_duration(entry.get('seconds'))}, knobs {_knobs(entry.get('parameters')) or 'defaults'}"
              + (f", on {machine.get('cpu')} ({machine.get('cores')} cores)" if machine else "")
              + ("; this run is a smoke run: shrunk steps and data" if mine.get("smoke") else ""))
    keys = list(dict.fromkeys([*theirs.get("metrics", {}), *mine.get("metrics", {})]))
    rows = [{"metric": k, "this run": mine.get("metrics", {}).get(k), "reference": theirs["metrics"].get(k)} for k in keys]
    return header, rows


def machine_summary() -> dict:
    """What ran a notebook, for run.json: processor, cores, OS. No torch import (the runner stays light)."""
    import platform
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "system": platform.system(), "python": platform.python_version()}


def holds_run(output_dir) -> bool:
    """Did the workbook runner (or a notebook) write into this folder?"""
    output_dir = Path(output_dir)
    return (output_dir / RUN_JSON).is_file() or bool(load_metrics(output_dir))


def snapshot(output_dir, dest) -> list[Path]:
    """Copy what a full run's results are made of into ``dest`` (replacing it): run.json (commit, dates,
    knobs, machine per notebook), metrics/*.json, results.csv, report.md and figures/*.png; no models,
    caches or executed notebooks. It is what results/reference/<profile>/ holds, and what the README's
    results block and each notebook's reference cell are rendered from. Refuses a smoke run, a folder
    without a run, and a snapshot over SNAPSHOT_MAX_BYTES."""
    import shutil
    output_dir, dest = Path(output_dir), Path(dest)
    run = load_run(output_dir)
    if not run:
        raise ValueError(f"{output_dir} holds no {RUN_JSON}: not a folder written by the workbook runner")
    if run.get("smoke"):
        raise ValueError(f"{output_dir} is a smoke run: its numbers only prove that the pipeline runs")
    write_report(output_dir)
    files = [output_dir / RUN_JSON, output_dir / RESULTS_CSV, output_dir / REPORT_MD,
             *sorted((output_dir / METRICS_SUBDIR).glob("*.json")), *sorted((output_dir / FIGURES_SUBDIR).glob("*.png"))]
    size = sum(f.stat().st_size for f in files)
    if size > SNAPSHOT_MAX_BYTES:
        raise ValueError(f"the snapshot would hold {size / 1e6:.1f} MB (limit {SNAPSHOT_MAX_BYTES / 1e6:.0f} MB)")
    if dest.exists():
        shutil.rmtree(dest)
    copied = []
    here = str(output_dir.resolve())
    for f in files:
        target = dest / f.relative_to(output_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        if f.suffix in (".json", ".md", ".csv"):   # the run folder's own path says nothing to a reader: DIR
            target.write_text(f.read_text().replace(here, "DIR"))
        else:
            shutil.copy2(f, target)
        copied.append(target)
    return copied


def default_output_dir() -> Path:
    """Where a notebook opened by hand writes (runs/interactive); the runner passes its own."""
    return Path(os.environ.get("TINYRL_OUTPUT_DIR", Path(__file__).resolve().parent.parent / "runs" / "interactive"))
