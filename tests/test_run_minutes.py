"""benchmarks/run_minutes.py reads where a run's minutes went; its per-cell part reads papermill's durations."""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("run_minutes", Path(__file__).resolve().parent.parent / "benchmarks" / "run_minutes.py")
run_minutes = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_minutes)


def _code(source: str, seconds=None) -> dict:
    return {"cell_type": "code", "source": source, "metadata": {} if seconds is None else {"papermill": {"duration": seconds}}}


def test_slowest_cells_are_labelled_by_their_section_and_sorted():
    nb = {"cells": [
        {"cell_type": "markdown", "source": "## 1. Setup\nsome prose"},
        _code("import torch", 2.0),
        {"cell_type": "markdown", "source": ["## 2. Train the teacher\n", "prose"]},
        _code("# a comment first\nstage = train.sft_stage(model)\n", 1300.5),
        _code("scores = evaluate(model)", 95.0),
        {"cell_type": "markdown", "source": "prose without a heading"},
        _code("more = 1", None),          # not executed by papermill: no duration
        _code("plot()", 31.0),
    ]}
    cells = run_minutes.slowest_cells(nb, at_least=30.0)
    assert cells == [(1300.5, "2. Train the teacher | stage = train.sft_stage(model)"),
                     (95.0, "2. Train the teacher | scores = evaluate(model)"),
                     (31.0, "2. Train the teacher | plot()")]
    assert run_minutes.slowest_cells({"cells": []}) == []


def test_timed_parts_of_notebook_02_skip_a_reused_teacher():
    metrics = {"metrics": {"teacher_sft_seconds": 1400.0, "teacher_trained_here": 0, "rollout_seconds": 60.0},
               "extra": {"students": [{"loss": "ckd", "seed": 0, "train_seconds": 300.0}]}}
    assert run_minutes.timed_parts("02_constrained_kd", metrics) == {
        "teacher rollouts (generation)": 60.0, "student ckd seed 0": 300.0}
