#!/usr/bin/env bash
# Build the isolated virtualenv that holds the official BFCL checker (bfcl-eval).
#
# Why a separate venv: bfcl-eval pins and pulls many packages (API clients, vllm helpers, ...)
# that would clash with the workbook's own environment. The agreement test
# (tests/test_bfcl_checker.py) runs tests/bfcl_official_runner.py with this venv's python
# and compares the official verdicts with helpers.evaluate.ast_check case by case.
#
# Why torch first, pinned: bfcl-eval depends on torch without a pin; installing the
# CPU wheel first stops pip from resolving a multi-GB CUDA build.
# Why soundfile: bfcl_eval imports it at module load but does not declare it.
#
# Usage: .ci/bfcl_venv.sh [TARGET_DIR]   (default: .venv-bfcl under the repo root)
# Then:  export BFCL_EVAL_PYTHON=TARGET_DIR/bin/python
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${1:-$ROOT/.venv-bfcl}"
PYTHON="${PYTHON:-python3}"

"$PYTHON" -m venv "$DIR"
"$DIR/bin/pip" install -q torch==2.13.0
"$DIR/bin/pip" install -q bfcl-eval==2026.3.23 soundfile

# Smoke test: the checker module must import without network access.
"$DIR/bin/python" -c "from bfcl_eval.eval_checker.ast_eval.ast_checker import ast_checker; print('bfcl-eval checker OK')"
echo "export BFCL_EVAL_PYTHON=$DIR/bin/python"
