#!/usr/bin/env bash
# The study in one command: set up .venv, execute the notebooks with papermill for the chosen datasets
# and run (default: PneumoniaMNIST with the `cpu` run), then build the book into _build/html
# (python -m msflow_study run; its --help lists the options). Finished runs and executed notebooks are
# reused (--force retrains); a dataset whose data is missing is reported and skipped (--download fetches
# it, --strict makes it an error), and the book is still built from the committed records.
#   bash scripts/study.sh [--name cpu|gpu|RUN] [--force] [--download] [--strict] [--no-book] [dataset ...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -z "${MSFLOW_DATA:-}" ] && [ -d ../shared/data/medmnist ]; then
  MSFLOW_DATA=$(cd ../shared/data/medmnist && pwd); export MSFLOW_DATA
fi
exec .venv/bin/python -m msflow_study run "$@"
