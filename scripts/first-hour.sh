#!/usr/bin/env bash
# Measures the time from a fresh clone to a shell in the tour's guest,
# using the README's commands only: git clone, `make dev` (on free ports,
# passed the README's way: make dev ARGS=...), then the tour's lines up to
# the one that types into the guest's shell, until the guest's answer
# arrives. Each run clones HEAD of this repository into a new directory.
#
#   scripts/first-hour.sh [--cold] [--runs N]
#
# --cold includes the first-run build: a fresh Go build cache and a fresh
# test-guest cache (the guest is built again from Debian packages, which
# apt-get downloads). Without it the caches of this machine are used, as
# on a second clone. The Go module cache is always kept (module downloads
# are not counted). Prints one line per run and min/median/max.
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
if ! command -v go >/dev/null 2>&1; then export PATH=/usr/local/go/bin:$PATH; fi

cold=0 runs=3
while [ $# -gt 0 ]; do
	case "$1" in
	--cold) cold=1 ;;
	--runs) runs=$2; shift ;;
	*) echo "usage: $0 [--cold] [--runs N]" >&2; exit 2 ;;
	esac
	shift
done

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# tourUntilShell prints the README's tour lines up to the first that types
# into the guest's console.
tourUntilShell() {
	awk '/^## A five-minute tour/ {t=1} t && /^```sh/ {b=1; next} b && /^```/ {exit} b && NF {print; if ($0 ~ /\| vpool vm console/) exit}' "$1"
}

one() {
	local tmp clone t0 t1 t2 t3 devpid line out
	tmp="$(mktemp -d /tmp/vpool-first-hour.XXXXXX)"
	clone="$tmp/vpool"
	local envs=()
	if [ "$cold" = 1 ]; then
		envs+=(GOCACHE="$tmp/gocache" VPOOL_GUEST_CACHE="$tmp/guest")
	else
		envs+=(GOCACHE="$(go env GOCACHE)")
	fi
	envs+=(GOMODCACHE="$(go env GOMODCACHE)" GOFLAGS="${GOFLAGS:-}")
	t0=$(now)
	git clone -q "$src" "$clone"
	t1=$(now)
	(cd "$clone" && exec setsid env "${envs[@]}" make dev ARGS="--listen 127.0.0.1:$(freeport) --agent-listen 127.0.0.1:$(freeport)" >"$tmp/dev.log" 2>&1) &
	devpid=$!
	until grep -q "vpool dev is running" "$tmp/dev.log" 2>/dev/null; do
		if ! kill -0 "$devpid" 2>/dev/null; then
			echo "first-hour: make dev ended:" >&2
			cat "$tmp/dev.log" >&2
			exit 1
		fi
		sleep 0.2
	done
	t2=$(now)
	while IFS= read -r line; do
		out="$(cd "$clone" && env "${envs[@]}" PATH="$clone/bin:$PATH" bash -o pipefail -c "$line" 2>&1)" || {
			echo "first-hour: '$line' failed:" >&2
			echo "$out" >&2
			kill -INT -- "-$devpid" 2>/dev/null || true
			exit 1
		}
	done < <(tourUntilShell "$clone/README.md")
	t3=$(now)
	case "$out" in
	*Linux*) ;;
	*) echo "first-hour: the guest's shell did not answer: $out" >&2; exit 1 ;;
	esac
	kill -INT -- "-$devpid" 2>/dev/null || true
	wait "$devpid" 2>/dev/null || true
	grep -E '^dev: .*(done in|failed after)' "$tmp/dev.log" | sed 's/^/    /' >&2
	echo "$(secs "$t0" "$t3") total: clone $(secs "$t0" "$t1")s, make dev to its banner $(secs "$t1" "$t2")s, tour to the guest's shell $(secs "$t2" "$t3")s"
	rm -rf "$tmp"
}

results=()
for i in $(seq "$runs"); do
	r="$(one)"
	echo "run $i: ${r%% *}s ${r#* }"
	results+=("${r%% *}")
done
printf '%s\n' "${results[@]}" | sort -n | awk -v cold="$cold" '
	{ v[NR] = $1 }
	END {
		mode = cold ? "first-run build included (--cold)" : "caches warm (first-run build excluded)"
		med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
		printf "fresh clone to a shell in the guest, %s, %d runs: min %.1fs, median %.1fs, max %.1fs\n", mode, NR, v[1], med, v[NR]
	}'
