"""The scoreboard's bookkeeping: finding the lessons' models, missing stages, seed summaries, tables in the
report and the README block. (Loading and scoring are the evaluate/translation functions, tested there.)"""
import json
import math

import pytest

from helpers import report, scoreboard, workbook


def _model_dir(path, adapter=False):
    path.mkdir(parents=True)
    (path / ("adapter_config.json" if adapter else "config.json")).write_text("{}")


def test_find_models_lists_seeds_and_missing_stages(tmp_path):
    _model_dir(tmp_path / "models" / "02_student_ckd")
    _model_dir(tmp_path / "models" / "03_sim_seed1", adapter=True)
    _model_dir(tmp_path / "models" / "03_sim_seed0", adapter=True)
    (tmp_path / "models" / "02_teacher").mkdir()          # a folder without weights is not a model
    found = scoreboard.find_models(tmp_path, "embedded:base")
    fc = [e for e in found if e["task"] == "function_calling"]
    assert [(e["stage"], e["seed"], e["present"]) for e in fc] == [
        ("base", None, True), ("SFT / adapted teacher (02)", None, False), ("SFT seed soup (02)", None, False),
        ("CKD student (02)", None, True),
        ("Sim-RL GRPO (03)", 0, True), ("Sim-RL GRPO (03)", 1, True), ("binary-reward GRPO (03)", None, False)]
    tr = [e for e in found if e["task"] == "translation"]
    assert [e["present"] for e in tr] == [True, False, False, False, False] and tr[0]["tool"] is False
    with pytest.raises(FileNotFoundError, match="teacher"):
        scoreboard.load_model(fc[1], rt=None)


def test_a_longer_runs_sft_and_ckd_seeds_are_one_stage_each(tmp_path):
    # notebook 02 keeps its first seed in the plain folder (later stages start from it), further seeds beside it
    _model_dir(tmp_path / "models" / "02_teacher")
    report.write_model_info(tmp_path / "models" / "02_teacher", train_seconds=900.0, seed=0)
    for seed in (2, 1):
        _model_dir(tmp_path / "models" / f"02_teacher_seed{seed}")
        report.write_model_info(tmp_path / "models" / f"02_teacher_seed{seed}", train_seconds=800.0 + seed, seed=seed)
    _model_dir(tmp_path / "models" / "02_teacher_soup")               # their weight average: a stage of its own
    report.write_model_info(tmp_path / "models" / "02_teacher_soup", train_seconds=2403.0, seeds=[0, 1, 2])
    _model_dir(tmp_path / "models" / "02_student_ckd")                 # no model info: seed unknown, still scored
    _model_dir(tmp_path / "models" / "02_student_ckd_seed1")
    (tmp_path / "models" / "02_student_ckd_seed2").mkdir()            # no weights: not a model
    fc = [e for e in scoreboard.find_models(tmp_path, "embedded:base") if e["task"] == "function_calling"]
    sft = [(e["name"], e["seed"], e["train_seconds"]) for e in fc if e["stage"] == "SFT / adapted teacher (02)"]
    assert sft == [("02_teacher", 0, 900.0), ("02_teacher_seed1", 1, 801.0), ("02_teacher_seed2", 2, 802.0)]
    assert [(e["stage"], e["seed"], e["train_seconds"]) for e in fc if e["name"] == "02_teacher_soup"] == [
        ("SFT seed soup (02)", None, 2403.0)]
    assert [(e["name"], e["seed"]) for e in fc if e["stage"].startswith("CKD")] == [("02_student_ckd", None),
                                                                                   ("02_student_ckd_seed1", 1)]
    rows = [{"stage": e["stage"], "present": True, "acc": 0.5 + 0.1 * i} for i, e in enumerate(fc) if e["stage"] == "SFT / adapted teacher (02)"]
    assert scoreboard.stage_table(rows, ["acc"])[0]["seeds"] == 3


def test_each_grpo_seed_starts_from_its_own_sft_seed_when_there_is_one(tmp_path):
    first = tmp_path / "models" / "02_teacher"
    _model_dir(first)
    _model_dir(tmp_path / "models" / "02_teacher_seed1")
    (tmp_path / "models" / "02_teacher_seed2").mkdir()                # an empty folder is no model
    assert scoreboard.seed_model(first, 1) == tmp_path / "models" / "02_teacher_seed1"
    assert scoreboard.seed_model(first, 0) == first and scoreboard.seed_model(first, 2) == first
    assert scoreboard.seed_model(str(first), 7) == first


def test_mean_over_seeds_skips_missing_values():
    m = scoreboard.mean_over_seeds([{"exact": 0.5, "n": 24, "ast_mean": None, "ok": True}, {"exact": 0.25, "n": 24, "ast_mean": None}])
    assert m == {"exact": 0.375, "n": 24.0, "ast_mean": None, "ok": None}
    assert scoreboard.mean_over_seeds([]) == {}


def test_seed_summary_is_a_t_interval():
    s = scoreboard.seed_summary([0.2, 0.4, 0.6])
    assert s["mean"] == pytest.approx(0.4) and s["n_seeds"] == 3
    assert s["ci"] == pytest.approx(4.302653 * 0.2 / math.sqrt(3), rel=1e-5)   # t_{0.975,2} = 4.3027
    assert math.isnan(scoreboard.seed_summary([0.5])["ci"]) and scoreboard.seed_summary([None])["n_seeds"] == 0


def test_stage_table_reports_missing_not_zero():
    rows = [{"stage": "a", "present": True, "acc": 0.5}, {"stage": "a", "present": True, "acc": 0.7},
            {"stage": "b", "present": False}]
    table = scoreboard.stage_table(rows, ["acc"])
    assert table[0]["acc"] == pytest.approx(0.6) and table[0]["seeds"] == 2 and table[0]["status"] == "ok"
    assert table[1] == {"stage": "b", "status": "missing", "seeds": 0}
    md = report.markdown_table(table)
    assert "| b | missing | 0 | n/a | n/a |" in md and "0.6" in md


def _run_folder(tmp_path, smoke, entries=None):
    entries = entries if entries is not None else [{"notebook": "05_evaluation", "status": "ok", "seconds": 600}]
    (tmp_path / report.RUN_JSON).write_text(json.dumps({"profile": "cpu", "smoke": smoke, "commit": "abc1234",
                                                        "started": "2026-11-27T12:00:00+00:00", "seconds": 600,
                                                        "parameters": {"N_EVAL": 8}, "notebooks": entries}))
    report.write_metrics(tmp_path, "05_evaluation", {"x": 1.0}, smoke=smoke,
                         tables={"Function calling": [{"stage": "base", "acc": 0.0}, {"stage": "sft", "acc": float("nan")}]})


def test_report_and_readme_show_the_tables(tmp_path):
    _run_folder(tmp_path, smoke=False)
    md, _ = report.write_report(tmp_path)
    assert "## Results" in md.read_text() and "| sft | n/a |" in md.read_text()
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.README_START}\nold\n{report.README_END}\noutro\n")
    assert workbook.main(["readme", "--out", str(tmp_path), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "old" not in text and text.startswith("intro\n") and text.endswith("outro\n")
    assert "`abc1234`" in text and "--only 05 --param N_EVAL=8" in text and "| base | 0 |" in text
    with pytest.raises(TypeError):
        report.write_metrics(tmp_path, "x", {}, tables={"t": "not rows"})


def test_readme_refuses_smoke_runs_and_missing_markers(tmp_path):
    _run_folder(tmp_path, smoke=True)
    readme = tmp_path / "README.md"
    readme.write_text(f"{report.README_START}\n{report.README_END}\n")
    assert workbook.main(["readme", "--out", str(tmp_path), "--readme", str(readme)]) == 2
    _run_folder(tmp_path, smoke=False)
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="block"):
        report.update_readme(readme, tmp_path)


def test_readme_names_each_notebooks_commit_and_knobs_and_refuses_failures(tmp_path):
    entries = [{"notebook": "02_kd", "status": "ok", "seconds": 60, "commit": "aaa1111", "parameters": {"STEPS": 60}},
               {"notebook": "03_rl", "status": "ok", "seconds": 60, "commit": "bbb2222", "parameters": {"SEEDS": [0, 1, 2]}},
               {"notebook": "05_evaluation", "status": "ok", "seconds": 60, "commit": "bbb2222", "parameters": {"SEEDS": [0, 1, 2]}}]
    _run_folder(tmp_path, smoke=False, entries=entries)
    block = report.readme_block(tmp_path)
    assert "commits `aaa1111`, `bbb2222`" in block
    assert "--only 02 --param STEPS=60   # commit aaa1111" in block
    assert "--only 03,05 --param 'SEEDS=[0, 1, 2]'   # commit bbb2222" in block
    assert "Wall time per notebook: 02 60 s, 03 60 s, 05 60 s; total 3.0 min." in block
    _run_folder(tmp_path, smoke=False, entries=entries[:2] + [dict(entries[2], status="failed")])
    with pytest.raises(ValueError, match="05_evaluation did not finish"):
        report.readme_block(tmp_path)


def test_model_info_gives_each_stage_its_training_time(tmp_path):
    _model_dir(tmp_path / "models" / "02_teacher")
    report.write_model_info(tmp_path / "models" / "02_teacher", train_seconds=812.5, steps=120, seed=0)
    _model_dir(tmp_path / "models" / "03_sim_seed0", adapter=True)
    (tmp_path / "models" / "03_sim_seed0" / report.MODEL_INFO).write_text("not json")   # unreadable: no time, no crash
    fc = {e["name"]: e for e in scoreboard.find_models(tmp_path, "embedded:base") if e["task"] == "function_calling"}
    assert fc["02_teacher"]["train_seconds"] == 812.5 and fc["embedded:base"]["train_seconds"] == 0.0
    assert fc["03_sim_seed0"]["train_seconds"] is None
    assert report.read_model_info(tmp_path / "nowhere") == {}


def _recs(values, prefix="q"):
    return [{"id": f"{prefix}{i}", "exact": v, "sim": float(v) * 0.5} for i, v in enumerate(values)]


def test_question_interval_averages_seeds_per_question_first():
    seeds = [_recs([1, 0, 1, 0]), _recs([1, 1, 0, 0])]
    assert scoreboard.question_means(seeds, "exact") == [1.0, 0.5, 0.5, 0.0]
    ci = scoreboard.question_interval(seeds, "exact")
    assert ci["mean"] == 0.5 and ci["n_questions"] == 4 and ci["n_seeds"] == 2
    assert 0.0 <= ci["low"] < 0.5 < ci["high"] <= 1.0


def test_question_means_refuses_seeds_scored_on_other_questions():
    with pytest.raises(ValueError, match="other questions"):
        scoreboard.question_means([_recs([1, 0]), _recs([1, 0], prefix="x")], "exact")
    with pytest.raises(ValueError, match="at least one seed"):
        scoreboard.question_means([], "exact")


def test_paired_difference_excludes_zero_only_for_a_consistent_gain():
    better = [_recs([1] * 30)]
    worse = [_recs([1] * 10 + [0] * 20)]
    d = scoreboard.paired_difference(better, worse, "exact")
    assert d["mean"] == pytest.approx(20 / 30) and d["low"] > 0
    same = scoreboard.paired_difference(worse, worse, "exact")
    assert same["mean"] == 0 and same["low"] == same["high"] == 0
    mixed = scoreboard.paired_difference([_recs([1, 0] * 15)], [_recs([0, 1] * 15)], "exact")
    assert mixed["low"] < 0 < mixed["high"]
    with pytest.raises(ValueError, match="same questions"):
        scoreboard.paired_difference(better, [list(reversed(worse[0]))], "exact")


def test_gain_rows_one_row_per_metric_with_its_paired_interval():
    before, after = [_recs([1] * 10 + [0] * 20)], [_recs([1] * 30)]
    rows = scoreboard.gain_rows(after, before, metrics=("exact", "sim"), reward="sim", rows="train")
    assert [r["metric"] for r in rows] == ["exact", "sim"] and all(r["reward"] == "sim" and r["rows"] == "train" for r in rows)
    exact = rows[0]
    assert exact["before"] == pytest.approx(1 / 3) and exact["after"] == 1.0 and exact["gain"] == pytest.approx(2 / 3)
    assert exact["excludes_0"] and exact["gain_95ci"].startswith("[+")
    assert rows[1]["gain"] == pytest.approx(1 / 3)   # sim is 0.5 per exact answer in _recs
    flat = scoreboard.gain_rows(before, before, metrics=("exact",))
    assert flat[0]["gain"] == 0 and not flat[0]["excludes_0"]


def _adapter(path, base):
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base)}))


def test_each_stage_is_compared_with_what_it_learned_from(tmp_path):
    models_dir = tmp_path / "models"
    for name in ("02_teacher", "02_student_ckd"):
        _model_dir(models_dir / name)
    # GRPO from the CKD student, named by a path of another machine: matched by folder name
    _adapter(models_dir / "03_sim_seed0", "/elsewhere/run/models/02_student_ckd")
    _adapter(models_dir / "03_sim_seed1", "/elsewhere/run/models/02_student_ckd")
    _adapter(models_dir / "03_binary_seed0", models_dir / "02_teacher" / "merged")   # a merged copy counts as its folder
    found = scoreboard.find_models(tmp_path, "embedded:base")
    assert scoreboard.trained_from(found) == {
        "SFT / adapted teacher (02)": "base", "CKD student (02)": "SFT / adapted teacher (02)",
        "Sim-RL GRPO (03)": "CKD student (02)", "binary-reward GRPO (03)": "SFT / adapted teacher (02)"}
    _adapter(models_dir / "03_binary_seed1", "some/model-id")     # a start that is not a stage: that seed has none
    assert scoreboard.trained_from(scoreboard.find_models(tmp_path, "embedded:base"))["binary-reward GRPO (03)"] == \
        "SFT / adapted teacher (02)"
    (models_dir / "03_binary_seed2").mkdir()
    (models_dir / "03_binary_seed2" / "adapter_config.json").write_text("{not json")   # unreadable: no start, no crash
    assert scoreboard.trained_from(scoreboard.find_models(tmp_path, "embedded:base"))["binary-reward GRPO (03)"] == \
        "SFT / adapted teacher (02)"
    _adapter(models_dir / "03_sim_seed2", models_dir / "02_teacher")
    with pytest.raises(ValueError, match="different stages"):
        scoreboard.trained_from(scoreboard.find_models(tmp_path, "embedded:base"))


def _bfcl(stage, seed, category, values):
    return [{"stage": stage, "seed": seed, "category": category, "id": f"{category}_{i}", "valid": bool(v)}
            for i, v in enumerate(values)]


def test_stage_gains_pair_questions_per_category_and_average_seeds_first():
    records = (_bfcl("A", None, "simple", [1] * 10 + [0] * 20) + _bfcl("A", None, "parallel", [1, 0] * 5)
               + _bfcl("B", 0, "simple", [1] * 30) + _bfcl("B", 1, "simple", [1] * 30)
               + _bfcl("B", 0, "parallel", [0, 1] * 5) + _bfcl("B", 1, "parallel", [0, 1] * 5))
    rows = scoreboard.stage_gains(records, {"B": "A", "C": "A"}, ["simple", "parallel", "irrelevance"])
    assert [(r["stage"], r["against"], r["category"], r["questions"]) for r in rows] == [
        ("B", "A", "simple", 30), ("B", "A", "parallel", 10)]      # no records for C or irrelevance: no row
    simple, parallel = rows
    assert simple["gain"] == pytest.approx(2 / 3) and simple["excludes_0"] and simple["metric"] == "valid"
    assert parallel["gain"] == 0 and not parallel["excludes_0"]    # as many won as lost
    # a seed scored on other questions is refused, not silently averaged
    with pytest.raises(ValueError, match="other questions"):
        scoreboard.stage_gains(records + _bfcl("B", 2, "simple", [1] * 29), {"B": "A"}, ["simple"])
    table = scoreboard.stage_gain_table(rows + scoreboard.stage_gains(records, {"A": "B"}, ["simple"]))
    assert [(r["stage"], r["against"]) for r in table] == [("B", "A"), ("A", "B")]    # in the pairs' order, not sorted
    assert table[0]["simple"].startswith("+0.667 [+") and table[0]["parallel"].startswith("+0.000") and "parallel" not in table[1]
