"""The front page: short, and every number on it rendered from the committed reference run."""
import json
from pathlib import Path

import pytest

from helpers import report

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def test_readme_is_short():
    assert len(README.read_text()) <= report.README_MAX_CHARS


def test_readme_numbers_are_rendered_from_the_reference_snapshot():
    """README's lesson minutes and results block equal what `python -m helpers.workbook readme` renders
    from results/reference/: a hand edit, or a snapshot committed without re-rendering, fails here."""
    assert (report.REFERENCE_ROOT / "cpu" / report.RUN_JSON).is_file(), "no committed cpu reference run"
    text = README.read_text()
    assert report.render_readme(text) == text, "run: python -m helpers.workbook readme"


def test_reference_snapshot_is_small_and_a_full_run():
    snap = report.REFERENCE_ROOT / "cpu"
    size = sum(f.stat().st_size for f in snap.rglob("*") if f.is_file())
    assert size <= report.SNAPSHOT_MAX_BYTES
    run = json.loads((snap / report.RUN_JSON).read_text())
    assert run["profile"] == "cpu" and not run["smoke"]
    assert all(e["status"] == "ok" and e["commit"] and e["started"] for e in run["notebooks"])


def _run(tmp_path, name, seconds, status="ok"):
    folder = tmp_path / name
    folder.mkdir()
    (folder / report.RUN_JSON).write_text(json.dumps({"profile": "cpu", "smoke": False, "notebooks": [
        {"notebook": "00_setup", "status": status, "seconds": seconds, "commit": "abc1234", "parameters": {},
         "started": "2026-12-05T10:00:00+00:00", "machine": {"cpu": "Test CPU", "cores": 2}}]}))
    return folder


def test_lesson_minutes_come_from_the_runs(tmp_path):
    text = ("x\n" + report.LESSONS_START + "\n| # | lesson | what | cpu | gpu |\n|---|---|---|---|---|\n"
            "| 00 | [a](a) | a b | 9.9 | 9.9 |\n| 01 | [b](b) | c | 9.9 | 9.9 |\n" + report.LESSONS_END + "\ny\n")
    cpu = report.load_run(_run(tmp_path, "cpu", 90))
    out = report.fill_lesson_table(text, cpu)
    assert "| 00 | [a](a) | a b | 1.5 | not measured |" in out and "| 01 | [b](b) | c | – | not measured |" in out
    assert out.startswith("x\n") and out.endswith("\ny\n")
    gpu = report.load_run(_run(tmp_path, "gpu", 30))
    assert "| 00 | [a](a) | a b | 1.5 | 0.5 |" in report.fill_lesson_table(text, cpu, gpu)
    failed = report.load_run(_run(tmp_path, "failed", 90, status="failed"))
    assert "| 00 | [a](a) | a b | – |" in report.fill_lesson_table(text, failed)
    with pytest.raises(ValueError, match="block"):
        report.fill_lesson_table("no markers", cpu)


def test_a_notebook_sees_its_run_beside_the_reference(tmp_path):
    ref = _run(tmp_path, "ref", 60)
    report.write_metrics(ref, "00_setup", {"acc": 0.5, "only_ref": 1})
    mine = tmp_path / "mine"
    report.write_metrics(mine, "00_setup", {"acc": 0.25, "new": 2}, smoke=True)
    header, rows = report.beside_reference(mine, "00_setup", "cpu", reference=ref)
    assert "2026-12-05" in header and "abc1234" in header and "Test CPU (2 cores)" in header and "smoke" in header
    assert rows == [{"metric": "acc", "this run": 0.25, "reference": 0.5},
                    {"metric": "only_ref", "this run": None, "reference": 1},
                    {"metric": "new", "this run": 2, "reference": None}]
    header, rows = report.beside_reference(mine, "05_other", "cpu", reference=ref)
    assert rows == [] and "no reference run" in header
