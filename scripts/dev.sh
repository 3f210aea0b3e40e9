#!/usr/bin/env bash
# Runs vpool on this one machine: embedded etcd, the API, a local host
# agent (QEMU where installed) and simulated hosts. State in ./.vpool.
set -euo pipefail
cd "$(dirname "$0")/.."
VPOOL_DEPS=dev scripts/deps.sh
if ! command -v go >/dev/null 2>&1; then export PATH=/usr/local/go/bin:$PATH; fi
if [ -x scripts/build-guest.sh ]; then
	scripts/build-guest.sh >&2 || echo "dev: test guest not built; VMs without an image still run" >&2
fi
mkdir -p bin
go build -o bin/vpool ./cmd/vpool
echo "dev: CLI at $(pwd)/bin/vpool (export PATH=\$PATH:$(pwd)/bin)" >&2
exec bin/vpool dev "$@"
