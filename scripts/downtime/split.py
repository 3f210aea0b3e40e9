#!/usr/bin/env python3
"""Where a migration's downtime goes, from QEMU's downtime trace events
(qemu-trace.sh): one line per switch-over with, in ms, the source's
stop split into the vCPUs' stop (vm_state_notify), the drain until the
mirror's NBD FLUSH is sent, and the flush until it is answered and all
disks are flushed (vm_stop_flush_all), the rest of the stop, the last RAM pass (iterable state), the device
state (non-iterable), the end of the downtime, the three slowest
devices, and on the target the time from the source's downtime end to
the stream loaded (dst-precopy-loadvm-completed).

Use: split.py TRACE_FILE...   (docs/migration-slo.md)"""
import re
import sys

LINE = re.compile(r"^(\d+)@(\d+)\.(\d+):(\S+)\s*(.*)$")


def events(path):
    out = []
    with open(path, errors="replace") as f:
        for line in f:
            m = LINE.match(line.strip())
            if m:
                t = int(m.group(2)) + int(m.group(3)) / 1e6
                out.append((t, m.group(4), m.group(5)))
    return out


def main(paths):
    srcs, dsts = [], []
    for p in paths:
        ev = events(p)
        cur = None
        for t, name, args in ev:
            if name == "vmstate_downtime_checkpoint" and args == "src-downtime-start":
                cur = {"start": t, "devs": {}}
            elif cur is not None and name == "vm_stop_flush_all":
                cur.setdefault("flushed", t)
            elif cur is not None and name == "vm_state_notify" and args.startswith("running 0"):
                cur.setdefault("vcpus", t)
            elif cur is not None and name == "nbd_send_request" and "(flush)" in args and "flushed" not in cur:
                cur.setdefault("nbdflush", t)
            elif cur is not None and name in ("nbd_receive_simple_reply", "nbd_receive_reply_chunk_header") and "nbdflush" in cur and "flushed" not in cur:
                # QEMU 10 answers with structured replies (the chunk header)
                cur["nbdreply"] = t
            elif cur is not None and name == "vmstate_downtime_checkpoint" and args.startswith("src-"):
                cur[args] = t
                if args == "src-downtime-end":
                    srcs.append(cur)
                    cur = None
            elif cur is not None and name == "vmstate_downtime_save":
                m = re.search(r"idstr=(\S+).*downtime=(\d+)", args)
                if m:
                    cur["devs"][m.group(1)] = cur["devs"].get(m.group(1), 0) + int(m.group(2))
            elif name == "vmstate_downtime_checkpoint" and args == "dst-precopy-loadvm-completed":
                dsts.append(t)
    ms = lambda a, b: (b - a) * 1000 if a and b else float("nan")
    print("downtime  vcpus  drain  nbd-flush  flush-rest  stop-rest  ram  devices  end  loaded-on-target  slowest devices (ms)")
    for s in sorted(srcs, key=lambda s: s["start"]):
        st = s["start"]
        fl = s.get("flushed")
        vs = s.get("src-vm-stopped")
        it = s.get("src-iterable-saved")
        ni = s.get("src-non-iterable-saved")
        end = s.get("src-downtime-end")
        loaded = min((d for d in dsts if d >= st), default=None)
        devs = sorted(s["devs"].items(), key=lambda kv: -kv[1])[:3]
        vc, nf, nr = s.get("vcpus"), s.get("nbdflush"), s.get("nbdreply")
        print("%7.1f %6.1f %6.1f %9.1f %10.1f %9.1f %5.1f %7.1f %5.1f %13.1f    %s" % (
            ms(st, end), ms(st, vc), ms(vc, nf), ms(nf, nr), ms(nr or nf, fl), ms(fl or st, vs), ms(vs, it), ms(it, ni), ms(ni, end),
            ms(end, loaded), ", ".join("%s %.1f" % (k, v / 1000) for k, v in devs)))


if __name__ == "__main__":
    main(sys.argv[1:])
