#!/usr/bin/env bash
# Installs what vpool's dev run and test suite need on a fresh Debian
# machine: Debian packages through apt-get (when root) and Go modules
# through the module proxy. Idempotent: installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
	export PATH=/usr/local/go/bin:$PATH
fi

want=()
pkg() { dpkg -s "$1" >/dev/null 2>&1 || want+=("$1"); }
for p in qemu-system-x86 qemu-utils busybox-static cpio xz-utils iproute2 nftables; do pkg "$p"; done
if [ "${VPOOL_DEPS:-test}" = test ]; then
	pkg chromium # the dashboard's browser tests
fi

if [ ${#want[@]} -gt 0 ]; then
	if [ "$(id -u)" = 0 ]; then
		echo "deps: installing ${want[*]}" >&2
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq >/dev/null
		apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
	else
		echo "deps: missing Debian packages: ${want[*]} (run as root, or: sudo apt-get install ${want[*]})" >&2
	fi
fi

go mod download
