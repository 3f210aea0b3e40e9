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
# gcc and libc6-dev build the test guest's static C helpers (scripts/guest);
# dnsmasq-base: the DHCP server of vpool networks (the binary only, no
# system service); haproxy: the data path of load balancers (docs/loadbalancing.md;
# the agent runs it, the package's service is not used); qemu-guest-agent:
# its libraries, which scripts/build-guest-qga.sh copies with qemu-ga into
# the "with qemu-ga" test guest (the host's service never starts: it is
# bound to the guest-side virtio port).
for p in busybox-static cpio xz-utils iproute2 nftables gcc libc6-dev dnsmasq-base haproxy qemu-guest-agent; do pkg "$p"; done
if [ "${VPOOL_DEPS:-test}" = test ]; then
	pkg chromium # the dashboard's browser tests
fi

# QEMU 9.0 or later. Under TCG, 7.2 (bookworm's own) loses guest writes
# made after a migration dirty-bitmap sync through a TLB entry that was
# already writable (fixed in 9.0: "physmem: Fix migration dirty bitmap
# coherency with TCG memory access"); migrated guests then crash. Bookworm
# gets QEMU from bookworm-backports. See docs/migration-qemu.md.
qemu_major() { qemu-system-x86_64 --version 2>/dev/null | sed -n 's/^QEMU emulator version \([0-9]*\)\..*/\1/p'; }
qemu=()
if ! dpkg -s qemu-utils >/dev/null 2>&1 || [ "$(qemu_major)" = "" ] || [ "$(qemu_major)" -lt 9 ]; then
	qemu=(qemu-system-x86 qemu-utils)
fi

if [ ${#want[@]} -gt 0 ] || [ ${#qemu[@]} -gt 0 ]; then
	if [ "$(id -u)" = 0 ]; then
		export DEBIAN_FRONTEND=noninteractive
		from=()
		if [ ${#qemu[@]} -gt 0 ] && grep -qs '^VERSION_CODENAME=bookworm' /etc/os-release; then
			if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
				printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
					>/etc/apt/sources.list.d/vpool-bookworm-backports.sources
			fi
			from=(-t bookworm-backports)
		fi
		echo "deps: installing ${want[*]} ${qemu[*]}" >&2
		apt-get update -qq >/dev/null
		if [ ${#want[@]} -gt 0 ]; then
			apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
		fi
		if [ ${#qemu[@]} -gt 0 ]; then
			apt-get install -y -qq --no-install-recommends "${from[@]}" "${qemu[@]}" >/dev/null
			echo "deps: $(qemu-system-x86_64 --version | head -1)" >&2
		fi
	else
		echo "deps: missing Debian packages: ${want[*]} ${qemu[*]} (QEMU 9.0 or later; run as root, or install them with sudo apt-get)" >&2
	fi
fi

go mod download
