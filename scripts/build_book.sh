#!/usr/bin/env bash
# Build the book from the committed executed notebooks (never re-run), failing on any warning.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/book_assets.sh
rm -rf _build
start=$(date +%s)
.venv/bin/jupyter-book build . -W -n --keep-going
echo "build_book: $(find _build/html -name '*.html' | wc -l) HTML files in $(( $(date +%s) - start )) s -> _build/html/index.html"
