"""Every notebook, executed with papermill in the cpu profile's smoke setting (what CI runs).

This is the end-to-end check of the workbook: real models, real data, the runner, the report."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import workbook

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def test_every_notebook_runs_in_the_cpu_smoke_profile(tmp_path, model_cache):
    out = tmp_path / "smoke"
    env = dict(os.environ, TINYRL_CACHE=model_cache, TINYRL_PROFILE="cpu", PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        [sys.executable, "-m", "helpers.workbook", "run", "--profile", "cpu", "--smoke", "--out", str(out)],
        # a 2-core CPU without native bf16 took 35 min here with other work beside it (CI allows 90)
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60 * 60,
    )
    print(proc.stdout[-5000:])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    notebooks = [nb.stem for nb in workbook.discover()]
    run = json.loads((out / "run.json").read_text())
    assert [n["notebook"] for n in run["notebooks"]] == notebooks
    assert all(n["status"] == "ok" for n in run["notebooks"])
    for name in notebooks:
        assert (out / "notebooks" / f"{name}.ipynb").is_file()
        metrics = json.loads((out / "metrics" / f"{name}.json").read_text())
        assert metrics["profile"] == "cpu" and metrics["smoke"] is True and metrics["metrics"]
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {r["notebook"] for r in rows} == set(notebooks)
    report = (out / "report.md").read_text()
    assert all(f"## {name}" in report for name in notebooks)
    # notebook 05 found and scored every model that notebooks 02-04 trained in this run: nothing missing
    tables = json.loads((out / "metrics" / "05_evaluation.json").read_text())["tables"]
    failures = [t for t in tables if t.startswith("Why BFCL answers fail")]
    gains = [t for t in tables if t.startswith("What each stage changed")]
    assert len(tables) == 5 and len(failures) == 1 and len(gains) == 1 and "## Results" in report
    for title, rows in tables.items():
        if title in failures + gains:
            continue
        assert rows and all(r["status"] == "ok" for r in rows), (title, rows)
    stages = [r["stage"] for t, rows in tables.items() if t.startswith("Function calling") for r in rows]
    # the gain table: every trained function-calling stage against the stage it learned from, GRPO included
    # (its start found from its adapter), one column per BFCL category
    gain_rows = tables[gains[0]]
    assert {r["stage"] for r in gain_rows} == set(stages) - {"base"}, gain_rows
    assert all(r["against"] in stages and r["against"] != r["stage"] for r in gain_rows), gain_rows
    # the failure table: a column per function-calling stage, and per category each column's shares sum to 1
    failure_rows = tables[failures[0]]
    for category in {r["category"] for r in failure_rows}:
        for stage in set(stages):
            assert abs(sum(r[stage] for r in failure_rows if r["category"] == category) - 1) < 1e-6, (category, stage)
