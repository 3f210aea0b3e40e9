#!/usr/bin/env bash
# Builds vpool's tiny test guest from Debian packages only: the Debian
# kernel (unpacked with dpkg -x; its xz payload extracted to an
# uncompressed vmlinux, which boots through the PVH entry in ~4 s under
# TCG) and busybox-static in a gzip'd cpio initramfs. A tiny static C
# program that dirties memory is compiled with gcc when gcc is present
# (busybox dd into tmpfs otherwise), and so is a precise ticker; their
# sources are scripts/guest/*.c.
#
# Output (cached, keyed by this script's hash):
#   ${XDG_CACHE_HOME:-$HOME/.cache}/vpool/guest/<hash>/vmlinux
#   ${XDG_CACHE_HOME:-$HOME/.cache}/vpool/guest/<hash>/initramfs.cpio.gz
#   ${XDG_CACHE_HOME:-$HOME/.cache}/vpool/guest/<hash>/cmdline   (default kernel command line)
#   ${XDG_CACHE_HOME:-$HOME/.cache}/vpool/guest/<hash>/kernel-version
# The last line on stdout is the output directory; progress goes to stderr.
# VPOOL_GUEST_CACHE overrides the cache root.
#
# The guest's /init (busybox sh) prints VPOOL-GUEST-READY on ttyS0 and
# obeys these kernel command-line switches:
#   vpool.tick=1          print "TICK <n> <uptime>" every second
#   vpool.tickms=<ms>     ... every <ms> instead (with gcc; implies tick=1):
#                         the guest-gap measurements use 100
#   vpool.dirty=<MiB>     rewrite <MiB> of memory in a loop ("DIRTY <pass>")
#   vpool.dirtyrate=<MiB/s> optional cap on the dirtying rate
#   vpool.verify=1        with vpool.dirty: stamp every page with its pass
#                         and check the previous stamp first, and checksum
#                         a static region ("VERIFY <pass> ... fails=<n>",
#                         "VERIFY-FAIL ..."): a lost write is seen
#   vpool.diskread=1      read /dev/vda in a loop, uncached
#                         ("DISKREAD <bytes> <centiseconds>" per pass)
#   vpool.net=dhcp|static configure eth0 (static: vpool.ip=CIDR vpool.gw=IP)
#   vpool.acpi=0          ignore the ACPI power button (to test stop fallbacks)
#   vpool.watchdog=<s>    arm /dev/watchdog (an i6300esb, when the VM has one)
#                         with a <s> second timeout and never feed it again
#                         ("VPOOL-GUEST-WATCHDOG-ARMED"): the device fires
# The ACPI power button powers the guest off (busybox acpid); hot-added
# vCPUs and DIMMs are brought online by the guest.
set -euo pipefail

log() { echo "build-guest: $*" >&2; }

self="$(readlink -f "${BASH_SOURCE[0]}")"
src="$(dirname "$self")/guest"
hash="$(cat "$self" "$src"/*.c | sha256sum | cut -c1-16)"
root="${VPOOL_GUEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vpool/guest}"
out="$root/$hash"

if [ -s "$out/vmlinux" ] && [ -s "$out/initramfs.cpio.gz" ] && [ -s "$out/cmdline" ]; then
	touch "$out" # in use: other versions' builds spare it for a day
	echo "$out"
	exit 0
fi

for tool in apt-get dpkg cpio gzip xz; do
	command -v "$tool" >/dev/null 2>&1 || { log "missing tool: $tool (apt-get install cpio xz-utils)"; exit 1; }
done

mkdir -p "$root"
# One build at a time (test packages run in parallel); re-check after the wait.
exec 9>"$root/.lock"
flock 9
if [ -s "$out/vmlinux" ] && [ -s "$out/initramfs.cpio.gz" ] && [ -s "$out/cmdline" ]; then
	echo "$out"
	exit 0
fi
work="$(mktemp -d "$root/.build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cd "$work"

# download fetches a Debian package into the work dir; when the package
# lists are missing and we are root, it refreshes them once.
download() {
	if apt-get download "$@" >&2 2>"$work/apt.err"; then
		return 0
	fi
	if [ "$(id -u)" = 0 ]; then
		log "apt-get download $* failed; running apt-get update"
		apt-get update -qq >&2
		apt-get download "$@" >&2
		return $?
	fi
	cat "$work/apt.err" >&2
	log "apt-get download $* failed: run 'apt-get update' as root"
	return 1
}

# The metapackage linux-image-amd64 depends on the real versioned kernel.
kpkg="$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')"
if [ -z "$kpkg" ]; then
	[ "$(id -u)" = 0 ] && apt-get update -qq >&2
	kpkg="$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')"
fi
[ -n "$kpkg" ] || { log "cannot resolve the kernel package behind linux-image-amd64"; exit 1; }
log "downloading $kpkg and busybox-static"
# apt runs downloads as _apt; let it write here.
chmod 0777 "$work"
download "$kpkg" busybox-static

mkdir kernel bb
dpkg -x ./"$kpkg"_*.deb kernel
dpkg -x ./busybox-static_*.deb bb
kver="$(ls kernel/lib/modules | head -n1)"
vmlinuz="kernel/boot/vmlinuz-$kver"
[ -f "$vmlinuz" ] || { log "no $vmlinuz in $kpkg"; exit 1; }

# Extract the uncompressed vmlinux like the kernel's extract-vmlinux: find
# the xz stream magic (FD 37 7A 58 5A 00) and decompress from there.
log "extracting vmlinux from $vmlinuz"
found=""
for off in $(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$vmlinuz" | cut -d: -f1); do
	# tail may die of SIGPIPE once xz has its stream: judge by the output.
	{ tail -c +"$((off + 1))" "$vmlinuz" || true; } | xz -dc --single-stream >vmlinux 2>/dev/null || true
	if [ -s vmlinux ] &&
		[ "$(head -c4 vmlinux | od -An -tx1 | tr -d ' \n')" = 7f454c46 ]; then
		found=1
		break
	fi
done
[ -n "$found" ] || { log "no xz-compressed ELF payload found in $vmlinuz"; exit 1; }

# The initramfs tree.
ird="$work/initramfs"
mkdir -p "$ird"/{bin,sbin,dev,proc,sys,tmp,run,etc/acpi/PWRF,lib/modules,usr/bin,usr/sbin,var/log}
cp bb/bin/busybox "$ird/bin/busybox"
for app in $("$ird/bin/busybox" --list); do
	[ "$app" = busybox ] || ln -sf busybox "$ird/bin/$app"
done

# Kernel modules the guest needs, with their dependencies (read from each
# module's .modinfo "depends=" field), loaded in dependency order.
mdir="kernel/lib/modules/$kver"
declare -A loaded=()
order=()
modpath() { find "$mdir/kernel" -name "$1.ko" -print -quit; }
addmod() {
	local name="${1//-/_}" path deps d
	[ -n "${loaded[$name]:-}" ] && return 0
	path="$(modpath "$name")"
	if [ -z "$path" ]; then path="$(modpath "${name//_/-}")"; fi
	[ -n "$path" ] || { log "module $name not found (built in?)"; loaded[$name]=builtin; return 0; }
	loaded[$name]=1
	deps="$(tr '\0' '\n' <"$path" | sed -n 's/^depends=//p' | head -n1)"
	for d in ${deps//,/ }; do addmod "$d"; done
	cp "$path" "$ird/lib/modules/"
	order+=("$(basename "$path")")
}
for m in virtio_pci virtio_blk virtio_net virtio_balloon virtio_console button evdev i6300esb; do addmod "$m"; done
printf '%s\n' "${order[@]}" >"$ird/lib/modules/order"

# Memory dirtier and ticker: static C when gcc is present.
if command -v gcc >/dev/null 2>&1; then
	gcc -static -O2 -o "$ird/bin/vpool-dirty" "$src/dirty.c"
	gcc -static -O2 -o "$ird/bin/vpool-tick" "$src/tick.c"
else
	log "gcc not found: vpool.dirty uses a busybox dd loop"
	cat >"$ird/bin/vpool-dirty" <<'EOF'
#!/bin/sh
mib=${1:-64}; pass=0
mkdir -p /run/dirty && mount -t tmpfs -o size=$((mib + 1))m dirty /run/dirty
while :; do
	dd if=/dev/urandom of=/run/dirty/d bs=1M count="$mib" conv=notrunc 2>/dev/null
	pass=$((pass + 1)); echo "DIRTY $pass"
done
EOF
	chmod 0755 "$ird/bin/vpool-dirty"
fi

cat >"$ird/etc/acpi/PWRF/00000080" <<'EOF'
#!/bin/sh
echo "VPOOL-GUEST-POWEROFF" >/dev/console
sync
poweroff -f
EOF
chmod 0755 "$ird/etc/acpi/PWRF/00000080"

cat >"$ird/etc/udhcpc.script" <<'EOF'
#!/bin/sh
case "$1" in
bound|renew)
	ip addr flush dev "$interface"
	ip addr add "$ip/${mask:-24}" dev "$interface"
	[ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
	echo "VPOOL-GUEST-NET $interface $ip" >/dev/console
	;;
esac
EOF
chmod 0755 "$ird/etc/udhcpc.script"

cat >"$ird/init" <<'EOF'
#!/bin/sh
# vpool test guest init (see scripts/build-guest.sh for the switches).
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
while read -r m; do insmod "/lib/modules/$m" 2>/dev/null; done </lib/modules/order
hostname vpool-guest

tick=0 tickms=1000 dirty=0 dirtyrate=0 verify=0 diskread=0 net="" ip="" gw="" acpi=1 watchdog=0
for kv in $(cat /proc/cmdline); do
	case "$kv" in
	vpool.tick=*) tick=${kv#*=} ;;
	vpool.dirty=*) dirty=${kv#*=} ;;
	vpool.tickms=*) tickms=${kv#*=} tick=1 ;;
	vpool.dirtyrate=*) dirtyrate=${kv#*=} ;;
	vpool.verify=*) verify=${kv#*=} ;;
	vpool.diskread=*) diskread=${kv#*=} ;;
	vpool.net=*) net=${kv#*=} ;;
	vpool.ip=*) ip=${kv#*=} ;;
	vpool.gw=*) gw=${kv#*=} ;;
	vpool.acpi=*) acpi=${kv#*=} ;;
	vpool.watchdog=*) watchdog=${kv#*=} ;;
	esac
done

[ "$acpi" = 1 ] && acpid -c /etc/acpi 2>/dev/null

# Bring hot-added vCPUs and memory online (no udev here).
(while :; do
	for c in /sys/devices/system/cpu/cpu*/online; do
		[ "$(cat "$c" 2>/dev/null)" = 0 ] && echo 1 >"$c" 2>/dev/null && echo "VPOOL-GUEST-CPU-ONLINE ${c%/online}" >/dev/console
	done
	for m in /sys/devices/system/memory/memory*/state; do
		[ "$(cat "$m" 2>/dev/null)" = offline ] && echo online >"$m" 2>/dev/null && echo "VPOOL-GUEST-MEM-ONLINE ${m%/state}" >/dev/console
	done
	sleep 1
done) &

if [ -n "$net" ]; then
	ip link set lo up
	ip link set eth0 up 2>/dev/null
	case "$net" in
	dhcp) udhcpc -i eth0 -s /etc/udhcpc.script -q -n -t 5 -T 1 >/dev/null 2>&1 & ;;
	static)
		ip addr add "$ip" dev eth0
		[ -n "$gw" ] && ip route add default via "$gw"
		echo "VPOOL-GUEST-NET eth0 $ip" >/dev/console
		;;
	esac
fi

echo "VPOOL-GUEST-READY cpus=$(nproc) mem=$(sed -n 's/MemTotal: *//p' /proc/meminfo)" >/dev/console

if [ "$tick" = 1 ] && [ -x /bin/vpool-tick ]; then
	vpool-tick "$tickms" >/dev/console 2>&1 &
elif [ "$tick" = 1 ]; then
	(n=0; while :; do n=$((n + 1)); echo "TICK $n $(cut -d' ' -f1 /proc/uptime)" >/dev/console; sleep 1; done) &
fi
if [ "$dirty" != 0 ]; then
	vpool-dirty "$dirty" "$dirtyrate" "$verify" >/dev/console 2>&1 &
fi
if [ "$diskread" = 1 ] && [ -b /dev/vda ]; then
	(while :; do
		t0=$(cut -d' ' -f1 /proc/uptime)
		n=$(dd if=/dev/vda of=/dev/null bs=1M count=16 iflag=direct 2>&1 | sed -n 's/^\([0-9]*\)+.*records in.*/\1/p')
		b=$(( ${n:-0} * 1048576 ))
		t1=$(cut -d' ' -f1 /proc/uptime)
		echo "DISKREAD $b $(( (${t1%.*}${t1#*.}) - (${t0%.*}${t0#*.}) ))" >/dev/console
	done) &
fi

if [ "$watchdog" != 0 ] && [ -c /dev/watchdog ]; then
	# Armed by the first write, then fed once a day: it fires after the timeout.
	watchdog -T "$watchdog" -t 86400 /dev/watchdog && echo "VPOOL-GUEST-WATCHDOG-ARMED $watchdog" >/dev/console
fi

# An interactive shell on the serial console, respawned.
while :; do
	setsid cttyhack sh -l </dev/console >/dev/console 2>&1
	sleep 1
done
EOF
chmod 0755 "$ird/init"

log "packing initramfs (kernel $kver)"
(cd "$ird" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet | gzip -9n) >initramfs.cpio.gz

stage="$(mktemp -d "$root/.stage.XXXXXX")"
mv vmlinux initramfs.cpio.gz "$stage/"
echo "$kver" >"$stage/kernel-version"
echo "console=ttyS0 quiet" >"$stage/cmdline"
rm -rf "$out"
mv "$stage" "$out"
# Builds of other script versions are ~70 MB each: drop those unused for a
# day (worktrees of other branches may still use the recent ones).
find "$root" -mindepth 1 -maxdepth 1 -type d ! -name "$hash" ! -name '.*' -mtime +0 -exec rm -rf {} +
log "guest ready in $out ($(du -sh "$out" | cut -f1))"
echo "$out"
