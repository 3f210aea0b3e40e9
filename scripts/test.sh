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
# Its "with qemu-ga" variant (guest-agent tests; ~30 s, cached).
if [ -x scripts/build-guest-qga.sh ]; then
	scripts/build-guest-qga.sh >&2
fi

# In CI nothing heavy may be skipped: tests that need QEMU, several
# processes or a browser fail instead of skipping when a tool is missing.
if [ "${CI:-}" = true ] || [ "$(id -u)" = 0 ]; then
	export VPOOL_REQUIRE_HEAVY=1
fi

# go.mod and go.sum must be exactly what `go mod tidy` makes of the code:
# direct dependencies marked direct, nothing missing, nothing stale. Any
# module any branch adds is covered: tidy computes the answer from the
# imports, nothing here lists modules. -diff (Go 1.23+; go.mod asks for
# more) changes no file and exits non-zero when there is a difference; a
# failure without a diff (no network, a broken go.mod) is reported as such.
if ! tidy=$(go mod tidy -diff 2>&1); then
	if grep -q '^diff ' <<<"$tidy"; then
		echo "go.mod/go.sum are not tidy: run 'go mod tidy' and commit the result:" >&2
	else
		echo "go mod tidy -diff failed (not a tidiness verdict):" >&2
	fi
	echo "$tidy" >&2
	exit 1
fi

unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.git/*'))
if [ -n "$unformatted" ]; then
	echo "gofmt: these files need formatting:" >&2
	echo "$unformatted" >&2
	exit 1
fi
go vet ./...
go test -count=1 -timeout 40m "$@" ./...
