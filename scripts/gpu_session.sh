#!/usr/bin/env bash
# One prepared GPU run for a session that has the device machine (one H100): set up, train and evaluate
# the `gpu` profile on PneumoniaMNIST, BloodMNIST and RetinaMNIST through the study's notebooks, and pack
# what should come back (results files, executed notebooks, fp16 checkpoints) into $OUT in parts small
# enough for the device tool (at most 8 files of 16 MB). Each dataset gets a time budget; a run cut short
# resumes from its last checkpoint the next time.
#   device run: bash scripts/gpu_session.sh [seconds per dataset, default 170]
set -uo pipefail
cd "$(dirname "$0")/.."
budget=${1:-170}
OUT=${OUT:-/tmp/msflow-out}
mkdir -p "$OUT"
TORCH_SPEC=${TORCH_SPEC:-torch} bash scripts/setup.sh > "$OUT/setup.log" 2>&1 || { tail -20 "$OUT/setup.log"; exit 1; }
export MSFLOW_DATA=${MSFLOW_DATA:-$(pwd)/../shared/data/medmnist}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
for ds in pneumoniamnist bloodmnist retinamnist; do
  start=$(date +%s)
  timeout --signal=TERM "$budget" .venv/bin/python scripts/study.py --no-book --profile gpu "$ds" >> "$OUT/study.log" 2>&1
  echo "$ds: $(( $(date +%s) - start )) s, exit $?" | tee -a "$OUT/gpu.txt"
done
.venv/bin/python scripts/study.py --no-book --profile gpu pneumoniamnist bloodmnist retinamnist >> "$OUT/study.log" 2>&1  # summary + explore
# fp16 copies of the selected weights, then everything that should be committed, in 15 MB parts
.venv/bin/python - <<'PY'
from pathlib import Path
from msflow.results import load_weights, save_weights
for best in Path("results").glob("*-gpu/best.pt"):
    loaded = load_weights(best)
    save_weights(best.with_name("best_fp16.pt"), loaded.components.model, loaded.config, loaded.meta, half=True)
PY
tar -cf - results/*-gpu/{config.json,train.json,eval_test.json,predictions_test.npz,best_fp16.pt} book/executed _toc.yml 2>/dev/null \
  | gzip -1 | split -b 15m - "$OUT/results.tar.gz.part-"
ls -la "$OUT"; tail -5 "$OUT/study.log"
