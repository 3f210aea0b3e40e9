#!/usr/bin/env bash
# Builds the "with qemu-ga" variant of vpool's test guest: the default
# guest of scripts/build-guest.sh (same kernel, same /init) plus Debian's
# real QEMU guest agent (the qemu-guest-agent package's qemu-ga, with the
# shared libraries ldd names) and the ext4 module (ext2 data file
# systems for the freeze tests). The default guest is not changed: this
# is a second image beside it, cached the same way.
#
# Output (cached, keyed by this script's hash and the base guest's):
#   ${XDG_CACHE_HOME:-$HOME/.cache}/vpool/guest/qga-<hash>/{vmlinux,initramfs.cpio.gz,cmdline,kernel-version}
# The last line on stdout is the output directory; progress on stderr.
#
# Added to the base guest's /init, before VPOOL-GUEST-READY:
#   - qemu-ga runs on the virtio-serial port named org.qemu.guest_agent.0
#     when the VM has one (found through /sys/class/virtio-ports; there
#     is no udev), printing VPOOL-GUEST-QGA <port> on the console;
#   - vpool.datafs=/dev/vdX   mount an ext2 file system of that disk on
#                             /data (made with mke2fs when the disk has
#                             none) and print VPOOL-GUEST-DATAFS;
#   - vpool.nowriteback=1     no periodic writeback of dirty pages: a
#                             file written without sync stays in the page
#                             cache until something flushes it (a freeze)
set -euo pipefail

log() { echo "build-guest-qga: $*" >&2; }

self="$(readlink -f "${BASH_SOURCE[0]}")"
base="$("$(dirname "$self")/build-guest.sh" | tail -n1)"
[ -s "$base/initramfs.cpio.gz" ] || { log "the base guest did not build"; exit 1; }
hash="$( (cat "$self"; basename "$base") | sha256sum | cut -c1-16)"
root="${VPOOL_GUEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vpool/guest}"
out="$root/qga-$hash"

ready() { [ -s "$out/vmlinux" ] && [ -s "$out/initramfs.cpio.gz" ] && [ -s "$out/cmdline" ]; }
if ready; then
	touch "$out"
	echo "$out"
	exit 0
fi
for tool in apt-get dpkg cpio gzip ldd; do
	command -v "$tool" >/dev/null 2>&1 || { log "missing tool: $tool"; exit 1; }
done
exec 9>"$root/.lock-qga"
flock 9
if ready; then
	echo "$out"
	exit 0
fi
work="$(mktemp -d "$root/.build-qga.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cd "$work"
chmod 0777 "$work" # apt downloads as _apt

kver="$(cat "$base/kernel-version")"
kpkg="linux-image-$kver"
log "downloading qemu-guest-agent and $kpkg (for ext4)"
if ! apt-get download qemu-guest-agent "$kpkg" >&2 2>apt.err; then
	if [ "$(id -u)" = 0 ]; then
		apt-get update -qq >&2
		apt-get download qemu-guest-agent "$kpkg" >&2 ||
			{ log "cannot download $kpkg (the base guest's kernel; gone from the mirror?): remove $base to rebuild the base guest"; exit 1; }
	else
		cat apt.err >&2
		log "apt-get download failed: run 'apt-get update' as root"
		exit 1
	fi
fi
mkdir qga kernel ird
dpkg -x ./qemu-guest-agent_*.deb qga
dpkg -x ./"$kpkg"_*.deb kernel
(cd ird && gzip -dc "$base/initramfs.cpio.gz" | cpio -id --quiet)

# qemu-ga and every library it loads, at the paths ldd resolves them to.
ga="qga/usr/sbin/qemu-ga"
[ -x "$ga" ] || { log "no qemu-ga in the package"; exit 1; }
if ldd "$ga" | grep -q 'not found'; then
	ldd "$ga" >&2
	log "qemu-ga needs libraries this machine lacks (apt-get install qemu-guest-agent pulls them in)"
	exit 1
fi
install -D -m0755 "$ga" ird/usr/sbin/qemu-ga
for lib in $(ldd "$ga" | grep -o '/[^ ]*'); do
	install -D -m0755 "$(readlink -f "$lib")" "ird$lib"
done

# ext4 (it mounts ext2) and its dependencies, appended to the load order.
mdir="kernel/lib/modules/$kver"
declare -A have=()
while read -r m; do have[${m%.ko}]=1; done <ird/lib/modules/order
addmod() {
	local name="${1//-/_}" path deps d
	[ -n "${have[$name]:-}" ] && return 0
	path="$(find "$mdir/kernel" \( -name "$name.ko" -o -name "${name//_/-}.ko" \) -print -quit)"
	have[$name]=1
	[ -n "$path" ] || { log "module $name not found (built in?)"; return 0; }
	deps="$(tr '\0' '\n' <"$path" | sed -n 's/^depends=//p' | head -n1)"
	for d in ${deps//,/ }; do addmod "$d"; done
	cp "$path" ird/lib/modules/
	basename "$path" >>ird/lib/modules/order
}
# ext4 asks the crypto API for crc32c by name (no depends= entry, and no
# modprobe in the guest to load it on demand): load it first.
addmod crc32c_generic
addmod ext4

# The /init additions, before the ready marker.
cat >qga-init.sh <<'EOF'
# --- vpool qemu-ga variant (scripts/build-guest-qga.sh) ---
for kv in $(cat /proc/cmdline); do
	case "$kv" in
	vpool.nowriteback=1) echo 0 >/proc/sys/vm/dirty_writeback_centisecs; echo 360000 >/proc/sys/vm/dirty_expire_centisecs ;;
	vpool.datafs=*)
		dev=${kv#*=}; mkdir -p /data
		if ! mount -t ext2 "$dev" /data 2>/dev/null; then
			mke2fs -q "$dev" >/dev/null 2>&1 && mount -t ext2 "$dev" /data
		fi
		grep -q ' /data ' /proc/mounts && echo "VPOOL-GUEST-DATAFS $dev" >/dev/console
		;;
	esac
done
for n in /sys/class/virtio-ports/*/name; do
	[ -r "$n" ] && [ "$(cat "$n")" = org.qemu.guest_agent.0 ] || continue
	port=/dev/$(basename "$(dirname "$n")")
	mkdir -p /var/run /usr/local/var/run
	/usr/sbin/qemu-ga -d -m virtio-serial -p "$port" -f /run/qemu-ga.pid -t /run -l /tmp/qemu-ga.log && echo "VPOOL-GUEST-QGA $port" >/dev/console
done
# --- end of the qemu-ga variant ---
EOF
grep -q '^echo "VPOOL-GUEST-READY' ird/init || { log "the base /init has no ready line"; exit 1; }
awk 'FNR == NR { add = add $0 "\n"; next } /^echo "VPOOL-GUEST-READY/ { printf "%s", add } { print }' qga-init.sh ird/init >init.new
install -m0755 init.new ird/init

log "packing initramfs"
(cd ird && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet | gzip -9n) >initramfs.cpio.gz
stage="$(mktemp -d "$root/.stage-qga.XXXXXX")"
mv initramfs.cpio.gz "$stage/"
for f in vmlinux cmdline kernel-version; do ln "$base/$f" "$stage/$f" 2>/dev/null || cp "$base/$f" "$stage/$f"; done
rm -rf "$out"
mv "$stage" "$out"
find "$root" -mindepth 1 -maxdepth 1 -type d -name 'qga-*' ! -name "qga-$hash" -mtime +0 -exec rm -rf {} +
log "guest with qemu-ga ready in $out ($(du -sh "$out" | cut -f1))"
echo "$out"
