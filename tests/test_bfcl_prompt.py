"""BFCL's Python-list prompting format: our messages are the official package's, byte for byte."""
import json
import subprocess

from helpers import data, evaluate
from test_bfcl_checker import REPO_ROOT, _official_python, _unavailable

CATEGORIES = ("simple", "multiple", "parallel", "parallel_multiple", "irrelevance")


def test_python_prompt_equals_official(tmp_path):
    python = _official_python()
    if python is None:
        _unavailable("official BFCL package not installed: run .ci/bfcl_venv.sh and/or set BFCL_EVAL_PYTHON")
    rows = [dict(r, category=c) for c in CATEGORIES for r in data.load_bfcl(c)[:5]]
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    proc = subprocess.run([python, str(REPO_ROOT / "tests" / "bfcl_official_prompt.py"), str(tmp_path / "rows.json"),
                           str(tmp_path / "out.json")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    official = json.loads((tmp_path / "out.json").read_text())
    for row, theirs in zip(rows, official):
        assert evaluate.bfcl_python_messages(row["question"], row["functions"]) == theirs, row["id"]
