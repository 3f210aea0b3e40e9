#!/bin/sh
# QEMU with the downtime trace events (QEMU's own checkpoints of a
# migration's switch-over: vm stopped, RAM saved, device state saved,
# downtime end on the source; loaded and resumed on the target, and the
# time each device's state took), host-timestamped (-msg timestamp=on),
# into $VPOOL_TRACE_DIR (default /tmp), one file per QEMU.
# Use: VPOOL_TEST_QEMU=$PWD/scripts/downtime/qemu-trace.sh (an absolute
# path) on the migration benchmark; then split.py on the files
# (docs/migration-slo.md, "Where an idle guest's downtime goes").
dir=
prev=
for a in "$@"; do
	[ "$prev" = "-pidfile" ] && dir=$(dirname "$a")
	prev=$a
done
if [ -n "$dir" ]; then
	# Debian's QEMU traces to the log (-D), not to a trace file.
	exec qemu-system-x86_64 "$@" -msg timestamp=on \
		-D "${VPOOL_TRACE_DIR:-/tmp}/$(date +%H%M%S)-$$.log" \
		-trace "enable=vmstate_downtime_*" \
		-trace enable=vm_stop_flush_all -trace enable=migration_completion_vm_stop \
		-trace enable=multifd_send_sync_main -trace enable=savevm_send_switchover_start \
		-trace enable=vm_state_notify -trace enable=nbd_send_request \
		-trace enable=nbd_receive_simple_reply -trace enable=nbd_receive_reply_chunk_header \
		-trace enable=nbd_co_receive_request_decode_type
fi
exec qemu-system-x86_64 "$@"
