#!/usr/bin/env bash
# Run the test suite. Tests that need the real MedMNIST files run when they are found
# ($MSFLOW_DATA, else ../shared/data/medmnist) and are skipped with a reason otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
