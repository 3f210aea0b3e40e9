#!/usr/bin/env python3
"""tail_ticks.py OUT [SECONDS]: beside the driver's tick watcher, an
independent reader of every /tmp/vpq*/vms/test.bench/serial.log: every
2 ms it stats the file (no read, no atime update) and notes when the size
grew, and reads the new bytes. For each TICK line it writes
'path tickN uptime seen_by_stat seen_by_read', where seen_by_stat is when
the file's size first covered the line's end."""
import glob, os, sys, time
out = open(sys.argv[1], 'a', buffering=1)
offs, part, sizes = {}, {}, {}
end = time.time() + float(sys.argv[2]) if len(sys.argv) > 2 else 1e18
def covered(p, off):
    for t, sz in sizes.get(p, []):
        if sz >= off:
            return t
    return 0.0
while time.time() < end:
    for p in glob.glob('/tmp/vpq*/vms/test.bench/serial.log'):
        try:
            sz = os.stat(p).st_size
        except OSError:
            continue
        now = time.time()
        h = sizes.setdefault(p, [])
        if not h or sz > h[-1][1]:
            h.append((now, sz))
            if len(h) > 4000:
                del h[:2000]
        if sz <= offs.get(p, 0):
            continue
        try:
            with open(p, 'rb') as f:
                f.seek(offs.get(p, 0))
                b = f.read()
        except OSError:
            continue
        now = time.time()
        base = offs.get(p, 0) - len(part.get(p, b''))
        offs[p] = offs.get(p, 0) + len(b)
        b = part.get(p, b'') + b
        lines = b.split(b'\n')
        part[p] = lines[-1]
        pos = base
        for l in lines[:-1]:
            pos += len(l) + 1
            f = l.split()
            if len(f) >= 3 and f[0] == b'TICK':
                out.write(f'{p} {f[1].decode()} {f[2].decode()} {covered(p, pos):.6f} {now:.6f}\n')
    time.sleep(0.002)
