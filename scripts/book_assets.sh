#!/usr/bin/env bash
# Fetch the book's offline assets (MathJax, RequireJS, the Jupyter widgets HTML manager) from npm into
# .book-assets/ (ignored). _config.yml copies .book-assets/vendor into the built site (html_extra_path),
# so the rendered book makes no request to any other host. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.book-assets
out=$dest/vendor/offline
[ -f "$out/.complete" ] && exit 0
if ! command -v npm >/dev/null; then
  echo "book assets: npm is needed once, to fetch MathJax, RequireJS and the widget manager into $dest (install Node.js)" >&2
  exit 1
fi
mkdir -p "$dest"
( cd "$dest" && npm install --silent --no-audit --no-fund --prefix . \
    mathjax@3.2.2 requirejs@2.3.8 @jupyter-widgets/html-manager@1.0.15 >/dev/null )
rm -rf "$out" && mkdir -p "$out/mathjax"
m=$dest/node_modules/mathjax/es5
cp "$m/tex-chtml.js" "$out/mathjax/"
mkdir -p "$out/mathjax/output/chtml" && cp -r "$m/output/chtml/fonts" "$out/mathjax/output/chtml/"
cp "$dest/node_modules/requirejs/require.js" "$out/require.js"
# the widget manager, with the icon fonts its stylesheet loads relative to itself
mkdir -p "$out/widgets"
w=$dest/node_modules/@jupyter-widgets/html-manager/dist
cp "$w/embed-amd.js" "$w"/*.woff "$w"/*.woff2 "$w"/*.eot "$w"/*.ttf "$w"/*.svg "$out/widgets/"
touch "$out/.complete"
echo "book assets: $(du -sh "$out" | cut -f1) in $out"
