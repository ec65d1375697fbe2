#!/usr/bin/env bash
# Set up, then train and evaluate MedSymmFlow on each dataset given (default: PneumoniaMNIST with the
# `cpu` profile, about 15 minutes on a 2-core laptop). A finished run is reused; a dataset whose data is
# missing is reported and skipped.
#   bash scripts/study.sh [--profile cpu|gpu|paper|smoke] [--download] [dataset ...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
profile=cpu; extra=(); datasets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile=$2; shift 2 ;;
    --download) extra+=(--download); shift ;;
    *) datasets+=("$1"); shift ;;
  esac
done
[ ${#datasets[@]} -gt 0 ] || datasets=(pneumoniamnist)
if [ -z "${MSFLOW_DATA:-}" ] && [ -d ../shared/data/medmnist ]; then export MSFLOW_DATA=$(cd ../shared/data/medmnist && pwd); fi
status=0
for ds in "${datasets[@]}"; do
  if ! .venv/bin/msflow data --dataset "$ds" "${extra[@]}"; then
    echo "study: skipping $ds (its data is missing; see the message above)"; status=1; continue
  fi
  .venv/bin/msflow train --dataset "$ds" --profile "$profile" "${extra[@]}" || status=1
done
exit $status
