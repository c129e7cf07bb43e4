"""The workbook's command line: run the notebooks with papermill, collect metrics, write the report.

    python -m helpers.workbook run --profile cpu --smoke --out runs/smoke
    python -m helpers.workbook run --profile gpu --only 00,03 --out runs/gpu
    python -m helpers.workbook list
    python -m helpers.workbook report --out runs/smoke
    python -m helpers.workbook snapshot --out runs/cpu --to results/reference/cpu

Imports stay light (no torch, no papermill until a run starts), so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import ast
import datetime as _dt
import json
import os
import sys
import time
from pathlib import Path

from helpers import report

# -----------------------------------------------------------------------------
# config
REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
EXECUTED_SUBDIR = "notebooks"          # DIR/notebooks/<name>.ipynb, the executed copies
CHECKPOINT_SUBDIR = "checkpoints"      # DIR/checkpoints/NN_*: resume points, removed once notebook NN finished
KERNEL = "python3"
SMOKE_CELL_TIMEOUT_S = 3600            # one cell of a smoke run: a hang fails CI instead of eating its time
# A full run has no cell limit by default: one training cell of a longer run (3 seeds x 2 rewards of GRPO
# on two cores) takes well over an hour. --cell-timeout sets one.
# -----------------------------------------------------------------------------


class NotebookFailed(RuntimeError):
    pass


def discover(notebook_dir: Path = NOTEBOOK_DIR) -> list[Path]:
    """Numbered notebooks (NN_name.ipynb) in order."""
    return sorted(p for p in notebook_dir.glob("[0-9][0-9]_*.ipynb"))


def select(notebooks: list[Path], only: str | None) -> list[Path]:
    if not only:
        return notebooks
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    chosen = [nb for nb in notebooks if any(nb.name.startswith(w) for w in wanted)]
    missing = [w for w in wanted if not any(nb.name.startswith(w) for nb in notebooks)]
    if missing:
        names = ", ".join(nb.name for nb in notebooks) or "none"
        raise SystemExit(f"--only names notebooks that do not exist: {', '.join(missing)} (have: {names})")
    return chosen


RESERVED = ("PROFILE", "SMOKE", "OUTPUT_DIR")  # set by the runner's own flags


def parse_param(text: str) -> tuple[str, object]:
    """'STEPS=60' -> ("STEPS", 60); the value is a Python literal, else a plain string ('REWARDS=["sim"]')."""
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name.isidentifier() or name != name.upper():
        raise SystemExit(f"--param wants NAME=VALUE with an UPPERCASE knob of the parameters cell, got {text!r}")
    if name in RESERVED:
        raise SystemExit(f"--param cannot set {name}: use --profile, --smoke or --out")
    try:
        value = ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError):
        value = raw.strip()
    return name, value


def notebook_parameters(profile: str, smoke: bool, out: Path, seed: int | None, extra: dict | None = None) -> dict:
    params = {"PROFILE": profile, "SMOKE": smoke, "OUTPUT_DIR": str(out)}
    if seed is not None:
        params["SEED"] = seed
    params.update(extra or {})
    return params


def describe_failure(nb: Path, err: Exception) -> str:
    """Name the notebook, the cell and the error in one readable block."""
    cell = getattr(err, "cell_index", None)
    exec_count = getattr(err, "exec_count", None)
    source = (getattr(err, "source", "") or "").strip().splitlines()
    ename, evalue = getattr(err, "ename", type(err).__name__), getattr(err, "evalue", str(err))
    where = f"cell {cell}" if cell is not None else "a cell"
    if exec_count is not None:
        where += f" (In [{exec_count}])"
    head = "\n".join("    " + line for line in source[:6]) + ("\n    ..." if len(source) > 6 else "")
    return f"notebook {nb.name} failed in {where}:\n{head}\n{ename}: {evalue}"


def run_notebook(nb: Path, out: Path, params: dict, *, progress: bool, cell_timeout: int | None = None) -> None:
    import papermill as pm
    executed = out / EXECUTED_SUBDIR / nb.name
    executed.parent.mkdir(parents=True, exist_ok=True)
    try:
        pm.execute_notebook(
            str(nb), str(executed), parameters=params, kernel_name=KERNEL, cwd=str(nb.parent),
            progress_bar=progress, execution_timeout=cell_timeout, log_output=False,
        )
    except Exception as err:  # noqa: BLE001 - papermill raises several kinds; all end the run
        raise NotebookFailed(describe_failure(nb, err)) from err


def check_compatible(state: dict, profile: str, smoke: bool, out: Path) -> None:
    """A run folder holds one profile, smoke or full: mixing them would put shrunk numbers next to real ones."""
    if not state:
        return
    if state.get("profile") != profile or bool(state.get("smoke")) != smoke:
        have = f"{state.get('profile')}{' smoke' if state.get('smoke') else ''}"
        want = f"{profile}{' smoke' if smoke else ''}"
        raise SystemExit(f"{out} holds a {have} run; this is a {want} run: use another --out")


def record(out: Path, profile: str, smoke: bool, entry: dict) -> dict:
    """Merge one notebook's entry into DIR/run.json (re-read each time, so runs of different notebooks
    into one folder, even side by side, keep each other's entries) and write it atomically."""
    state = report.load_run(out) or {"profile": profile, "smoke": smoke, "notebooks": []}
    entries = {e["notebook"]: e for e in state.get("notebooks", [])}
    entries[entry["notebook"]] = entry
    state["notebooks"] = [entries[k] for k in sorted(entries)]
    state["seconds"] = round(sum(e.get("seconds", 0) for e in state["notebooks"]), 1)
    latest = max(state["notebooks"], key=lambda e: e.get("started") or "")
    state["commit"], state["started"], state["parameters"] = latest["commit"], latest["started"], latest["parameters"]
    path = out / report.RUN_JSON
    tmp = path.with_suffix(f".json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(path)
    return state


def prune_checkpoints(out: Path, notebook: str) -> int:
    """Remove DIR/checkpoints/NN_* of a notebook that finished: its models are saved under DIR/models,
    and the optimizer states kept for resuming (up to 1.6 GB per fine-tune) are no longer needed.
    Returns the bytes freed."""
    import shutil
    freed = 0
    for path in sorted((out / CHECKPOINT_SUBDIR).glob(notebook[:2] + "_*")):
        files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
        freed += sum(f.stat().st_size for f in files)
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return freed


def run(profile: str, out: Path, *, only: str | None = None, smoke: bool = False, seed: int | None = None,
        notebooks: list[Path] | None = None, extra: dict | None = None, keep_checkpoints: bool = False,
        cell_timeout: int | None = None) -> int:
    """Execute the chosen notebooks into ``out``. A folder can be filled in several runs (``--only``):
    DIR/run.json keeps one entry per notebook with the commit and knobs it last ran with."""
    from helpers import runtime
    profile = runtime.resolve_profile(profile)  # a gpu request without CUDA fails here, before any notebook
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    check_compatible(report.load_run(out), profile, smoke, out)
    chosen = select(notebooks if notebooks is not None else discover(), only)
    if not chosen:
        print("no notebooks to run", file=sys.stderr)
        return 1
    params = notebook_parameters(profile, smoke, out, seed, extra)
    knobs = dict(extra or {}, **({"SEED": seed} if seed is not None else {}))
    commit = report.git_commit(REPO_ROOT)
    progress = sys.stderr.isatty()
    status = 0
    for i, nb in enumerate(chosen, 1):
        print(f"[{i}/{len(chosen)}] {nb.name} (profile {profile}{', smoke' if smoke else ''}) ...", flush=True)
        started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        t0 = time.perf_counter()
        try:
            run_notebook(nb, out, params, progress=progress,
                         cell_timeout=cell_timeout or (SMOKE_CELL_TIMEOUT_S if smoke else None))
            entry = {"notebook": nb.stem, "status": "ok"}
        except NotebookFailed as err:
            entry = {"notebook": nb.stem, "status": "failed", "error": str(err)}
            print(str(err), file=sys.stderr, flush=True)
            status = 1
        entry.update(seconds=round(time.perf_counter() - t0, 1), commit=commit, started=started, parameters=knobs,
                     machine=report.machine_summary())
        record(out, profile, smoke, entry)
        freed = prune_checkpoints(out, nb.stem) if entry["status"] == "ok" and not keep_checkpoints else 0
        print(f"      {entry['status']} in {entry['seconds']:.0f} s"
              + (f"; removed its resume checkpoints ({freed / 2**30:.1f} GiB)" if freed else ""), flush=True)
        if status:
            break  # later notebooks build on earlier ones: stop at the first failure
    md, csv = report.write_report(out)
    print(f"report: {md}\nresults: {csv}", flush=True)
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.workbook", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="execute the notebooks in order and write DIR/report.md + results.csv")
    p_run.add_argument("--profile", default="auto", help="cpu, gpu or auto (default: gpu when CUDA is present)")
    p_run.add_argument("--only", help="comma-separated notebook numbers or name prefixes, e.g. 00,03")
    p_run.add_argument("--smoke", action="store_true", help="shrink steps and data (what CI runs)")
    p_run.add_argument("--seed", type=int, help="override every notebook's SEED")
    p_run.add_argument("--out", type=Path, required=True, help="run folder (created)")
    p_run.add_argument("--cell-timeout", type=int, metavar="SECONDS",
                       help=f"fail a cell that runs longer (default: {SMOKE_CELL_TIMEOUT_S} with --smoke, none otherwise)")
    p_run.add_argument("--keep-checkpoints", action="store_true",
                       help="keep DIR/checkpoints of finished notebooks (default: removed; the models stay in DIR/models)")
    p_run.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                       help="set a knob of the parameters cell in every notebook that has it, e.g. STUDENT_SEEDS=[0,1,2]")
    sub.add_parser("list", help="list the notebooks")
    p_rep = sub.add_parser("report", help="rebuild report.md and results.csv of a run folder")
    p_rep.add_argument("--out", type=Path, required=True)
    p_snap = sub.add_parser("snapshot", help="copy a full run's run.json, metrics, results.csv, report and figures "
                                             "into a folder that can be committed (e.g. results/reference/cpu)")
    p_snap.add_argument("--out", type=Path, required=True, help="the run folder")
    p_snap.add_argument("--to", type=Path, required=True, help="the snapshot folder (replaced)")
    p_readme = sub.add_parser("readme", help="render README.md's lesson minutes and results tables from the reference "
                                             "snapshots (results/reference/<profile>/)")
    p_readme.add_argument("--out", type=Path, help="a snapshot folder, e.g. results/reference/cpu (default: that one)")
    p_readme.add_argument("--readme", type=Path, default=REPO_ROOT / "README.md")
    args = parser.parse_args(argv)

    if args.command == "list":
        for nb in discover():
            print(nb.name)
        return 0
    try:
        if args.command == "report":
            if not report.holds_run(args.out):
                raise ValueError(f"{args.out} holds no run (no {report.RUN_JSON} and no {report.METRICS_SUBDIR}/): "
                                 "give the folder a 'run --out' wrote")
            md, csv = report.write_report(args.out)
            print(f"report: {md}\nresults: {csv}")
            return 0
        if args.command == "snapshot":
            files = report.snapshot(args.out, args.to)
            print(f"snapshot: {len(files)} files, {sum(f.stat().st_size for f in files) / 1e6:.2f} MB in {args.to}")
            return 0
        if args.command == "readme":
            print(f"updated {report.update_readme(args.readme, args.out)}")
            return 0
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from helpers.runtime import ProfileError
    try:
        return run(args.profile, args.out, only=args.only, smoke=args.smoke, seed=args.seed,
                   extra=dict(parse_param(p) for p in args.param), keep_checkpoints=args.keep_checkpoints,
                   cell_timeout=args.cell_timeout)
    except ProfileError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # quiets a debugger warning in every kernel
    sys.exit(main())
