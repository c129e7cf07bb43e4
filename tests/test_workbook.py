"""The workbook runner on small synthetic notebooks (a real kernel, seconds each)."""
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from helpers import report, workbook

ROOT = Path(__file__).resolve().parent.parent


def _make_nb(path: Path, cells: list[str]):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('PROFILE = "auto"\nSMOKE = False\nSEED = 0\nOUTPUT_DIR = "."')
    params.metadata["tags"] = ["parameters"]
    setup = nbformat.v4.new_code_cell(f"import sys\nsys.path.insert(0, {str(ROOT)!r})")
    nb.cells = [params, setup] + [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, path)
    return path


GOOD = ('from helpers import report\n'
        'report.write_metrics(OUTPUT_DIR, "00_good", {"answer": 42, "ratio": 0.5, "smoke": int(SMOKE)})')


def test_help_does_not_import_torch():
    code = ("import sys; from helpers import workbook\n"
            "try:\n    workbook.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules and 'papermill' not in sys.modules, sorted(sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "run" in out.stdout and "--help" in out.stdout or "usage" in out.stdout


def test_run_writes_executed_notebook_report_and_csv(tmp_path):
    nbs = [_make_nb(tmp_path / "00_good.ipynb", [GOOD])]
    out = tmp_path / "run"
    assert workbook.run("cpu", out, smoke=True, notebooks=nbs) == 0
    executed = nbformat.read(out / "notebooks" / "00_good.ipynb", as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)
    metrics = json.loads((out / "metrics" / "00_good.json").read_text())
    assert metrics["metrics"] == {"answer": 42, "ratio": 0.5, "smoke": 1}  # SMOKE was injected
    csv = (out / "results.csv").read_text().splitlines()
    assert csv[0] == ",".join(report.CSV_COLUMNS) and len(csv) == 4
    md = (out / "report.md").read_text()
    assert "00_good" in md and "| answer | 42 |" in md and "smoke run" in md
    run = json.loads((out / "run.json").read_text())
    assert run["notebooks"][0]["status"] == "ok"


def test_failing_cell_stops_the_run_and_names_the_cell(tmp_path, capsys):
    nbs = [_make_nb(tmp_path / "00_bad.ipynb", ["x = 1", "raise ValueError('broken on purpose')"]),
           _make_nb(tmp_path / "01_never.ipynb", [GOOD])]
    out = tmp_path / "run"
    assert workbook.run("cpu", out, notebooks=nbs) == 1
    err = capsys.readouterr().err
    assert "00_bad.ipynb failed in cell" in err and "ValueError: broken on purpose" in err
    assert "raise ValueError" in err  # the failing cell's source is shown
    run = json.loads((out / "run.json").read_text())
    assert [n["status"] for n in run["notebooks"]] == ["failed"], "later notebooks do not run after a failure"
    assert (out / "report.md").is_file()


def test_cli_exit_codes(tmp_path):
    bad = _make_nb(tmp_path / "nbs" / "00_bad.ipynb", ["1/0"]) if (tmp_path / "nbs").mkdir() is None else None
    env_code = ("import sys; from pathlib import Path; from helpers import workbook\n"
                f"workbook.NOTEBOOK_DIR = Path({str(bad.parent)!r})\n"
                "orig = workbook.discover\n"
                "workbook.discover = lambda d=workbook.NOTEBOOK_DIR: orig(d)\n"
                f"sys.exit(workbook.main(['run', '--profile', 'cpu', '--out', {str(tmp_path / 'o')!r}]))")
    out = subprocess.run([sys.executable, "-c", env_code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and "ZeroDivisionError" in out.stderr and "00_bad.ipynb" in out.stderr


def test_gpu_profile_without_cuda_exits_2(tmp_path):
    from helpers import runtime
    if runtime.cuda_available():
        pytest.skip("CUDA present")
    out = subprocess.run([sys.executable, "-m", "helpers.workbook", "run", "--profile", "gpu", "--out", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "needs a CUDA GPU" in out.stderr


def test_only_selects_and_rejects_unknown(tmp_path):
    nbs = [tmp_path / "00_a.ipynb", tmp_path / "01_b.ipynb", tmp_path / "03_c.ipynb"]
    assert workbook.select(nbs, "00,03") == [nbs[0], nbs[2]]
    assert workbook.select(nbs, None) == nbs
    with pytest.raises(SystemExit, match="07"):
        workbook.select(nbs, "00,07")


def test_report_command_rebuilds(tmp_path):
    report.write_metrics(tmp_path, "02_x", {"acc": 0.25})
    assert workbook.main(["report", "--out", str(tmp_path)]) == 0
    assert "| acc | 0.25 |" in (tmp_path / "report.md").read_text()


def test_report_on_a_folder_without_a_run_says_so_in_one_line(tmp_path, capsys):
    assert workbook.main(["report", "--out", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "holds no run" in err and "\n" not in err
    (tmp_path / "empty").mkdir()
    assert workbook.main(["report", "--out", str(tmp_path / "empty")]) == 2
    assert not (tmp_path / "empty" / "report.md").exists()


def test_snapshot_copies_results_not_models_and_refuses_smoke_runs(tmp_path, capsys):
    nbs = [_make_nb(tmp_path / "00_good.ipynb", [GOOD + '\nimport matplotlib; matplotlib.use("Agg")\n'
                                                 'import matplotlib.pyplot as plt\nfig = plt.figure()\n'
                                                 'report.save_figure(fig, OUTPUT_DIR, "00_good", "fig")'])]
    out = tmp_path / "run"
    assert workbook.run("cpu", out, notebooks=nbs) == 0
    (out / "models" / "big").mkdir(parents=True)
    (out / "models" / "big" / "model.safetensors").write_bytes(b"0" * 1000)
    dest = tmp_path / "results" / "reference" / "cpu"
    assert workbook.main(["snapshot", "--out", str(out), "--to", str(dest)]) == 0
    names = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert names == ["figures/00_good-fig.png", "metrics/00_good.json", "report.md", "results.csv", "run.json"]
    assert str(out.resolve()) not in "".join(p.read_text() for p in dest.rglob("*") if p.suffix in (".json", ".md", ".csv"))
    entry = json.loads((dest / "run.json").read_text())["notebooks"][0]
    assert entry["commit"] and entry["started"] and entry["machine"]["cores"] >= 1
    # the snapshot is a run folder of its own: the README block renders from it as from the run
    assert report.render_report(dest).count("00_good") == report.render_report(out).count("00_good")
    smoke = tmp_path / "smoke"
    assert workbook.run("cpu", smoke, smoke=True, notebooks=nbs) == 0
    assert workbook.main(["snapshot", "--out", str(smoke), "--to", str(tmp_path / "s")]) == 2
    assert "smoke run" in capsys.readouterr().err and not (tmp_path / "s").exists()
    assert workbook.main(["snapshot", "--out", str(tmp_path / "none"), "--to", str(tmp_path / "s")]) == 2


def test_metrics_must_be_scalars(tmp_path):
    with pytest.raises(TypeError, match="scalar"):
        report.write_metrics(tmp_path, "x", {"table": [1, 2]})
    path = report.write_metrics(tmp_path, "x", {"nan": float("nan")}, extra={"curve": [1.0, 2.0]})
    data = json.loads(path.read_text())
    assert data["metrics"]["nan"] is None and data["extra"]["curve"] == [1.0, 2.0]


def test_param_values_are_literals_and_reserved_names_refused():
    assert workbook.parse_param("STUDENT_SEEDS=[0, 1, 2]") == ("STUDENT_SEEDS", [0, 1, 2])
    assert workbook.parse_param("LAMBDA=2.5") == ("LAMBDA", 2.5)
    assert workbook.parse_param("START_FROM=runs/x") == ("START_FROM", "runs/x")   # not a literal: kept as text
    for bad in ("STEPS", "steps=3", "OUTPUT_DIR=/tmp", "=3"):
        with pytest.raises(SystemExit):
            workbook.parse_param(bad)


def test_param_reaches_the_notebook(tmp_path):
    cell = ('from helpers import report\n'
            'report.write_metrics(OUTPUT_DIR, "00_param", {"seed": SEED})')
    nbs = [_make_nb(tmp_path / "00_param.ipynb", [cell])]
    out = tmp_path / "run"
    assert workbook.run("cpu", out, notebooks=nbs, extra={"SEED": 3}) == 0
    assert json.loads((out / "metrics" / "00_param.json").read_text())["metrics"] == {"seed": 3}
    assert json.loads((out / "run.json").read_text())["parameters"] == {"SEED": 3}


def test_a_folder_filled_in_two_runs_keeps_both_entries(tmp_path):
    cell = 'from helpers import report\nreport.write_metrics(OUTPUT_DIR, NAME, {"seed": SEED})'
    a = _make_nb(tmp_path / "00_a.ipynb", ['NAME = "00_a"\n' + cell])
    b = _make_nb(tmp_path / "01_b.ipynb", ['NAME = "01_b"\n' + cell])
    out = tmp_path / "run"
    assert workbook.run("cpu", out, notebooks=[a, b], extra={"SEED": 1}) == 0
    assert workbook.run("cpu", out, notebooks=[b], extra={"SEED": 2}) == 0   # rerun of one notebook only
    run = report.load_run(out)
    assert [(e["notebook"], e["parameters"]) for e in run["notebooks"]] == [("00_a", {"SEED": 1}), ("01_b", {"SEED": 2})]
    assert all(e["commit"] and e["started"] for e in run["notebooks"])
    assert run["seconds"] == pytest.approx(sum(e["seconds"] for e in run["notebooks"]), abs=0.2)
    md = (out / "report.md").read_text()
    assert "| 00_a | ok |" in md and "--param SEED=1" in md and "--param SEED=2" in md
    with pytest.raises(SystemExit, match="holds a cpu run; this is a cpu smoke run"):
        workbook.run("cpu", out, notebooks=[a], smoke=True)   # shrunk numbers never join a full run


def test_old_run_json_entries_get_the_folder_values(tmp_path):
    (tmp_path / report.RUN_JSON).write_text(json.dumps({"profile": "cpu", "smoke": False, "commit": "abc1234",
                                                        "started": "t0", "parameters": {"N": 1},
                                                        "notebooks": [{"notebook": "02_x", "status": "ok", "seconds": 5}]}))
    entry = report.load_run(tmp_path)["notebooks"][0]
    assert (entry["commit"], entry["started"], entry["parameters"]) == ("abc1234", "t0", {"N": 1})


def test_checkpoints_of_a_finished_notebook_are_removed_unless_kept(tmp_path):
    cell = ('from pathlib import Path\n'
            'ck = Path(OUTPUT_DIR) / "checkpoints"\n'
            '(ck / "00_run" / "checkpoint-2").mkdir(parents=True)\n'
            '(ck / "00_run" / "checkpoint-2" / "optimizer.pt").write_bytes(b"x" * 1000)\n'
            '(ck / "00_student.pt").write_bytes(b"y" * 10)\n'
            '(ck / "01_other").mkdir()')
    nbs = [_make_nb(tmp_path / "00_ck.ipynb", [cell])]
    out = tmp_path / "run"
    assert workbook.run("cpu", out, notebooks=nbs) == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["01_other"]   # another notebook's stay
    out2 = tmp_path / "kept"
    assert workbook.run("cpu", out2, notebooks=nbs, keep_checkpoints=True) == 0
    assert (out2 / "checkpoints" / "00_run" / "checkpoint-2" / "optimizer.pt").is_file()
    bad = [_make_nb(tmp_path / "00_fails.ipynb", [cell, "1/0"])]
    out3 = tmp_path / "failed"
    assert workbook.run("cpu", out3, notebooks=bad) == 1
    assert (out3 / "checkpoints" / "00_student.pt").is_file(), "a failed notebook keeps its resume points"


def test_cell_timeout_applies_when_asked(tmp_path, capsys):
    nbs = [_make_nb(tmp_path / "00_slow.ipynb", ["import time\ntime.sleep(30)"])]
    assert workbook.run("cpu", tmp_path / "run", notebooks=nbs, cell_timeout=3) == 1
    assert "timed out" in capsys.readouterr().err.lower()
