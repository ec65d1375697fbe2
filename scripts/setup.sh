#!/usr/bin/env bash
# Create .venv and install msflow with everything the study needs. Idempotent: a finished set-up
# is detected and skipped. TORCH_SPEC overrides the torch requirement (e.g. a CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "msflow setup: needs Python 3.11 or later; $PY is $("$PY" --version 2>&1 || echo missing). Set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
stamp=.venv/.msflow-setup
want="$(cat requirements.txt pyproject.toml | sha256sum | cut -c1-16) $TORCH_SPEC"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
echo "msflow setup: installing $TORCH_SPEC, then the study's packages (a few minutes the first time)"
python -m pip install --quiet "$TORCH_SPEC"
python -m pip install --quiet -r requirements.txt
python -m pip install --quiet --no-deps medmnist==3.0.2
python -m pip install --quiet --no-deps -e .
python -c "import msflow.train, medmnist, diffusers; print('msflow setup: ok, torch', __import__('torch').__version__)"
echo "$want" > "$stamp"
