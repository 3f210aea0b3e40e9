#!/bin/sh
# QEMU with the serial device's trace events, host-timestamped (-msg
# timestamp=on), into $VPOOL_TRACE_DIR (default /tmp), one file per QEMU.
# Use: VPOOL_TEST_QEMU=$PWD/scripts/console-lag/qemu-trace.sh (an absolute
# path) with VPOOL_TEST_LOG=1 on the migration benchmark, beside
# tail_ticks.py under chrt; then lag_join.py (docs/migration-slo.md,
# The console lag).
dir=
prev=
for a in "$@"; do
	[ "$prev" = "-pidfile" ] && dir=$(dirname "$a")
	prev=$a
done
if [ -n "$dir" ]; then
	exec qemu-system-x86_64 "$@" -msg timestamp=on -trace "enable=serial_*,file=${VPOOL_TRACE_DIR:-/tmp}/$(date +%H%M%S)-$$.log"
fi
exec qemu-system-x86_64 "$@"
