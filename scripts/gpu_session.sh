#!/usr/bin/env bash
# The prepared GPU session (python -m msflow_study gpu-session; its --help lists the options): the study's
# heavy work on one GPU in one time box, results packed into --out to bring back.
#   MSFLOW_DATA=DIR bash scripts/gpu_session.sh [--budget 510] [--train-seconds 220] [--out DIR] [--smoke]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
exec "$PY" -m msflow_study gpu-session "$@"
