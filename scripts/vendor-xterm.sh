#!/usr/bin/env bash
# Vendors xterm.js from the npm registry into the dashboard's embedded
# files (web/static/vendor/xterm): the dashboard loads nothing from
# elsewhere, so the built files are committed. Run it only to update:
#   scripts/vendor-xterm.sh 6.0.0
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:?usage: scripts/vendor-xterm.sh VERSION}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm init -y >/dev/null && npm install --no-audit --no-fund "@xterm/xterm@$version" >/dev/null)
src=$tmp/node_modules/@xterm/xterm
dst=web/static/vendor/xterm
mkdir -p "$dst"
grep -v 'sourceMappingURL' "$src/lib/xterm.mjs" >"$dst/xterm.mjs"
cp "$src/css/xterm.css" "$dst/xterm.css"
cp "$src/LICENSE" "$dst/LICENSE.txt"
sed -i "1s/^xterm.js [0-9.]*/xterm.js $version/" "$dst/README.txt"
echo "vendored xterm.js $version into $dst"
