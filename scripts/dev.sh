#!/usr/bin/env bash
# Runs vpool on this one machine: embedded etcd, the API, a local host
# agent (QEMU where installed) and simulated hosts. State in ./.vpool.
#
# Every step prints a line when it starts and one with its time when it
# ends (a first run builds the test guest and compiles vpool: minutes on a
# small machine), and a line every 20 s while a long step runs.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v go >/dev/null 2>&1; then export PATH=/usr/local/go/bin:$PATH; fi

t0=$(date +%s.%N)
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1fs", b - a }'; }

# step LABEL CMD...: runs CMD with LABEL's start and end lines on stderr.
step() {
	local label=$1 start ticker rc=0
	shift
	start=$(date +%s.%N)
	echo "dev: $label ..." >&2
	( while sleep 20; do echo "dev:   ... still $label ($(since "$start"))" >&2; done ) &
	ticker=$!
	"$@" || rc=$?
	kill "$ticker" 2>/dev/null || true
	wait "$ticker" 2>/dev/null || true
	if [ "$rc" = 0 ]; then
		echo "dev: $label: done in $(since "$start")" >&2
	else
		echo "dev: $label: failed after $(since "$start")" >&2
	fi
	return "$rc"
}

step "checking dependencies (scripts/deps.sh)" env VPOOL_DEPS=dev scripts/deps.sh
if [ -x scripts/build-guest.sh ]; then
	# Quick when cached; the first build downloads Debian's kernel and busybox.
	step "building the test guest (scripts/build-guest.sh; cached after the first run)" \
		sh -c 'scripts/build-guest.sh >/dev/null' ||
		echo "dev: no test guest: VMs without an image boot nothing" >&2
fi
mkdir -p bin
step "building bin/vpool (go build; the first build takes minutes)" go build -o bin/vpool ./cmd/vpool
echo "dev: ready to start after $(since "$t0"); CLI at $(pwd)/bin/vpool (export PATH=\$PATH:$(pwd)/bin)" >&2
exec bin/vpool dev "$@"
