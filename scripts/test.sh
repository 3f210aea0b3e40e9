#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what it needs, builds the
# test guest, checks formatting and vet, then runs every test (unit,
# in-process cluster, real QEMU, multi-process e2e, browser) once.
set -euo pipefail
cd "$(dirname "$0")/.."
VPOOL_DEPS=test scripts/deps.sh
if ! command -v go >/dev/null 2>&1; then export PATH=/usr/local/go/bin:$PATH; fi

if [ -x scripts/build-guest.sh ]; then
	scripts/build-guest.sh >&2
fi

# In CI nothing heavy may be skipped: tests that need QEMU, several
# processes or a browser fail instead of skipping when a tool is missing.
if [ "${CI:-}" = true ] || [ "$(id -u)" = 0 ]; then
	export VPOOL_REQUIRE_HEAVY=1
fi

unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.git/*'))
if [ -n "$unformatted" ]; then
	echo "gofmt: these files need formatting:" >&2
	echo "$unformatted" >&2
	exit 1
fi
go vet ./...
go test -count=1 -timeout 40m "$@" ./...
