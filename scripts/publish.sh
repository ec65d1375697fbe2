#!/usr/bin/env bash
# Publish the built book (_build/html) as a static site on the gh-pages branch (GitHub Pages).
# Build first with scripts/study.sh (or jupyter-book build .). Pass -n to commit without pushing.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f _build/html/index.html ] || { echo "publish: no built book in _build/html; run bash scripts/study.sh first" >&2; exit 1; }
.venv/bin/python -m pip install --quiet ghp-import==2.1.0
touch _build/html/.nojekyll   # serve _static/ and _images/ as they are
if [ "${1:-}" = "-n" ]; then
  .venv/bin/ghp-import --no-jekyll -m "Publish the msflow book" _build/html
else
  .venv/bin/ghp-import --no-jekyll --push -m "Publish the msflow book" _build/html
fi
