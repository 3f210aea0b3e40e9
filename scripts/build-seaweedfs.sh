#!/usr/bin/env bash
# Builds SeaweedFS's `weed` (github.com/seaweedfs/seaweedfs, Apache 2.0:
# an object store with an S3 gateway) from the Go module proxy, for the
# repository tests against a real S3 service
# (internal/backup/repo/seaweed_test.go: VPOOL_SEAWEEDFS=<path>).
# `go install` refuses the module (its go.mod has a replace directive),
# so its source is copied out of the module cache and built as the main
# module. Not part of CI: it downloads ~500 modules and compiles for
# many minutes on two cores (docs/backup.md gives the figure).
#
# Output (cached): ${XDG_CACHE_HOME:-$HOME/.cache}/vpool/seaweedfs/<version>/weed
# The last line on stdout is the binary's path.
set -euo pipefail
version=v0.0.0-20261109003541-7506e5f91cd6
out="${XDG_CACHE_HOME:-$HOME/.cache}/vpool/seaweedfs/$version"
if [ -x "$out/weed" ]; then
	echo "$out/weed"
	exit 0
fi
command -v go >/dev/null 2>&1 || export PATH=/usr/local/go/bin:$PATH
mod="github.com/seaweedfs/seaweedfs@$version"
dir="$(GOFLAGS=-mod=mod go mod download -json "$mod" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
[ -d "$dir" ] || { echo "build-seaweedfs: go mod download $mod failed" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -r "$dir" "$work/src"
chmod -R u+w "$work/src"
echo "build-seaweedfs: building weed from $mod (minutes)" >&2
(cd "$work/src" && go build -o "$work/weed" ./weed)
mkdir -p "$out"
mv "$work/weed" "$out/weed"
echo "$out/weed"
