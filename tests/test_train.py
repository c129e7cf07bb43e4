"""The training stages' entry points (helpers.train): the vLLM switch, the accelerate configs, and real
two-process launches on the embedded model (gloo on CPU) showing that both ranks train on different
batches, that the logged metrics are gathered from both, that one checkpoint is written, and that a
killed launch resumes."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import train

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
ACCELERATE = Path(sys.executable).with_name("accelerate")


# ----------------------------------------------------------------------------- fast


def test_vllm_off_changes_nothing():
    assert train.vllm_settings(None) == {} and train.vllm_settings("off") == {}


def test_vllm_unknown_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="colocate, server"):
        train.vllm_settings("async")


def test_vllm_without_vllm_names_the_install_command(monkeypatch):
    real = train.importlib.util.find_spec
    monkeypatch.setattr(train.importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    for mode in train.VLLM_MODES:
        with pytest.raises(train.VLLMUnavailable, match=r'pip install "trl\[vllm\]"'):
            train.vllm_settings(mode)


def test_vllm_settings_when_installed(monkeypatch):
    real = train.importlib.util.find_spec
    monkeypatch.setattr(train.importlib.util, "find_spec", lambda name, *a: object() if name == "vllm" else real(name, *a))
    colocate = train.vllm_settings("colocate")
    assert colocate["use_vllm"] and colocate["vllm_mode"] == "colocate" and 0 < colocate["vllm_gpu_memory_utilization"] < 1
    server = train.vllm_settings("server", server_base_url="http://10.0.0.2:8000")
    assert server == {"use_vllm": True, "vllm_mode": "server", "vllm_server_base_url": "http://10.0.0.2:8000"}


@pytest.mark.skipif(train.importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_grpo_command_without_vllm_exits_with_the_install_command(tmp_path, capsys):
    code = train.main(["grpo", "--out", str(tmp_path), "--profile", "cpu", "--vllm", "colocate"])
    assert code == 2
    assert 'pip install "trl[vllm]"' in capsys.readouterr().err
    assert not (tmp_path / "models").exists()


def test_the_parser_knows_every_stage_and_refuses_others():
    parser = train._parser()
    for stage in train.STAGES:
        assert parser.parse_args([stage, "--out", "x"]).stage == stage
    with pytest.raises(SystemExit):
        parser.parse_args(["rlhf", "--out", "x"])


def test_configs_are_accelerate_configs():
    from accelerate.commands.config.config_args import load_config_from_file
    names = {p.name for p in CONFIGS}
    assert {"cpu_2proc.yaml", "one_gpu.yaml", "multi_gpu.yaml", "zero2.yaml", "fsdp.yaml"} <= names
    for path in CONFIGS:
        config = load_config_from_file(str(path))
        assert config.num_processes >= 1, path.name
    doc = (ROOT / "docs" / "scale-out.md").read_text()
    for name in names:
        assert f"configs/{name}" in doc, f"docs/scale-out.md does not say what {name} is for"


def test_trace_collator_writes_one_line_per_batch(tmp_path):
    import torch
    path = tmp_path / "t.jsonl"
    collate = train.trace_collator(lambda fs: {"input_ids": torch.tensor([f["x"] for f in fs]),
                                              "attention_mask": torch.ones(len(fs), 2)}, path)
    collate([{"x": [1, 2], "id": "a"}, {"x": [3, 4], "id": "b"}])
    collate([{"x": [5, 6], "id": "c"}])
    lines = train.read_trace(path)
    assert [line["ids"] for line in lines] == [["a", "b"], ["c"]]
    assert [line["tokens"] for line in lines] == [4, 2]
    assert lines[0]["fingerprint"] == [3, 7]


def test_train_student_refuses_a_batch_smaller_than_the_world(monkeypatch):
    from helpers import distill
    monkeypatch.setattr(distill, "_world", lambda: (0, 4))
    with pytest.raises(ValueError, match="at least 4"):
        distill.train_student(None, [], batch_size=2)


# ----------------------------------------------------------------------------- two processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch_cmd(stage: str, out: Path, *args: str) -> list[str]:
    return [str(ACCELERATE), "launch", "--config_file", str(ROOT / "configs" / "cpu_2proc.yaml"),
            "--main_process_port", str(_free_port()), "-m", "helpers.train", stage, "--out", str(out),
            "--profile", "cpu", "--trace", *args]


def _env() -> dict:
    return {**os.environ, "TINYRL_CPU_BF16": "0", "TOKENIZERS_PARALLELISM": "false"}


def _launch(stage: str, out: Path, *args: str, timeout: int = 600) -> dict:
    proc = subprocess.run(_launch_cmd(stage, out, *args), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{"stage"')]
    assert len(results) == 1, "only the main process reports"
    return results[0]


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a launch and every worker it started. torchrun starts each rank in a session of its own,
    so killing the launcher's process group leaves the ranks running (one would go on writing the next
    checkpoint while the relaunch reads it): collect the whole tree first, then kill and reap it."""
    import psutil   # accelerate's own dependency
    root = psutil.Process(proc.pid)
    tree = [root, *root.children(recursive=True)]
    for p in tree:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    proc.wait(timeout=60)
    _, alive = psutil.wait_procs(tree, timeout=60)
    assert not alive, f"still running after SIGKILL: {alive}"


def _checkpoints(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("checkpoint-*"))


def _log_history(checkpoint: Path) -> list[dict]:
    return json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]


SFT_ARGS = ("--n-train", "16", "--max-length", "512", "--batch-size", "1")


@pytest.mark.slow
def test_two_process_sft_trains_on_both_ranks(tmp_path):
    result = _launch("sft", tmp_path, *SFT_ARGS, "--steps", "3", "--save-steps", "1")
    assert result["processes"] == 2 and result["steps"] == 3 and result["resumed_from"] is None
    ranks = [train.read_trace(tmp_path / "logs" / "sft" / train.TRACE_FILE.format(rank=r)) for r in (0, 1)]
    assert all(len(r) >= 3 for r in ranks)
    # both ranks took part, on different rows (a DataLoader may collate one batch ahead: compare the first 3)
    assert [b["fingerprint"] for b in ranks[0][:3]] != [b["fingerprint"] for b in ranks[1][:3]]
    # the logged token count is gathered: after step s it is the sum of both ranks' first s batches
    logged = [h["num_tokens"] for h in _log_history(tmp_path / "checkpoints" / "02_teacher_sft" / "checkpoint-3") if "num_tokens" in h]
    expected = [sum(b["tokens"] for r in ranks for b in r[:s]) for s in (1, 2, 3)]
    assert logged == expected
    # save_total_limit=1: one checkpoint although one was written every step, and the model saved once
    assert _checkpoints(tmp_path / "checkpoints" / "02_teacher_sft") == ["checkpoint-3"]
    assert (tmp_path / "models" / "02_teacher" / "model.safetensors").is_file()


@pytest.mark.slow
def test_a_killed_two_process_sft_launch_resumes(tmp_path):
    args = (*SFT_ARGS, "--steps", "6", "--save-steps", "2")
    ckpt_dir = tmp_path / "checkpoints" / "02_teacher_sft"
    proc = subprocess.Popen(_launch_cmd("sft", tmp_path, *args), cwd=ROOT, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while not (ckpt_dir / "checkpoint-2" / "trainer_state.json").is_file():
        assert proc.poll() is None and time.time() < deadline, "the first launch ended before its first checkpoint"
        time.sleep(0.2)
    _kill_tree(proc)   # the launcher and both ranks, mid-run
    assert not (tmp_path / "models" / "02_teacher").exists()
    killed_at = max(int(name.split("-")[1]) for name in _checkpoints(ckpt_dir)
                    if (ckpt_dir / name / "trainer_state.json").is_file())
    assert killed_at < 6

    result = _launch("sft", tmp_path, *args)
    assert result["resumed_from"].endswith(f"checkpoint-{killed_at}") and result["steps"] == 6
    assert _checkpoints(ckpt_dir) == ["checkpoint-6"]
    steps = [h["step"] for h in _log_history(ckpt_dir / "checkpoint-6") if "loss" in h]
    assert steps == [1, 2, 3, 4, 5, 6]   # the first launch's steps kept, none repeated
    assert (tmp_path / "models" / "02_teacher" / "model.safetensors").is_file()


@pytest.mark.slow
def test_two_process_grpo_gathers_both_ranks(tmp_path):
    result = _launch("grpo", tmp_path, "--steps", "2", "--num-generations", "2", "--prompts-per-step", "1",
                     "--max-completion-length", "24", "--n-train-prompts", "8", "--smoke", "--save-steps", "1")
    assert result["processes"] == 2 and result["steps"] == 2
    traces = [train.read_trace(tmp_path / "logs" / "grpo" / train.TRACE_FILE.format(rank=r)) for r in (0, 1)]
    # each rank holds its own prompt group (num_generations copies of one prompt)
    for step in range(2):
        a, b = traces[0][step]["ids"], traces[1][step]["ids"]
        assert len(set(a)) == 1 and len(set(b)) == 1 and a != b
    rewards = [train.read_trace(tmp_path / "logs" / "grpo" / f"trace_rank{r}.sim.rewards.jsonl") for r in (0, 1)]
    logged = [h for h in _log_history(tmp_path / "checkpoints" / "03_sim_seed0" / "checkpoint-2") if "reward" in h]
    for step, h in enumerate(logged):
        lengths = rewards[0][step]["lengths"] + rewards[1][step]["lengths"]
        values = rewards[0][step]["rewards"] + rewards[1][step]["rewards"]
        assert h["completions/mean_length"] == pytest.approx(sum(lengths) / len(lengths))
        assert h["reward"] == pytest.approx(sum(values) / len(values), abs=1e-6)
    assert _checkpoints(tmp_path / "checkpoints" / "03_sim_seed0") == ["checkpoint-2"]
    assert (tmp_path / "models" / "03_sim_seed0" / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_two_process_distillation_splits_batches_and_averages(tmp_path):
    import torch
    result = _launch("distill", tmp_path, "--teacher", "embedded:SmolLM2-135M-Instruct", "--data", "gold",
                     "--n-prompts", "8", "--steps", "2", "--batch-size", "2", "--max-length", "512")
    assert result["processes"] == 2 and result["steps"] == 2
    ranks = [train.read_trace(tmp_path / "logs" / "distill" / train.TRACE_FILE.format(rank=r)) for r in (0, 1)]
    history = torch.load(tmp_path / "checkpoints" / "02_student_ckd_gold_seed0.pt", weights_only=False)["history"]
    for step in range(2):
        assert ranks[0][step]["ids"] != ranks[1][step]["ids"]
        local = [ranks[0][step]["loss"], ranks[1][step]["loss"]]
        assert history[step]["loss"] == pytest.approx(sum(local) / 2, rel=1e-5)
    assert (tmp_path / "models" / "02_student_ckd_gold_seed0" / "model.safetensors").is_file()


def test_notebooks_train_through_the_stage_functions():
    """One code path: the notebooks call what the command line calls, never the trainers directly."""
    import json as _json
    uses = {"02": ("train.sft_stage(", "train.distill_stage(", "train.topk_records("),
            "03": ("train.grpo_stage(", "train.grpo_candidates("),
            "04": ("train.sft_stage(", "train.grpo_stage(")}
    for prefix, calls in uses.items():
        path = next((ROOT / "notebooks").glob(f"{prefix}_*.ipynb"))
        code = "\n".join("".join(c["source"]) for c in _json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
        for call in calls:
            assert call in code, f"{path.name} does not call {call}"
        for direct in ("sft.train(", "grpo.make_trainer(", "grpo.train(", "distill.train_student(", "distill.build_topk_cache("):
            assert direct not in code, f"{path.name} calls {direct} itself instead of a helpers.train stage"
