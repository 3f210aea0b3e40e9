#!/usr/bin/env python3
"""lag_join2.py TESTOUT TAIL TRACE...: for the ticks around each run's
worst console gap (the driver's debug log: host stamps relative to the
stop, and the stop's wall time), when each reached the UART (trace),
when the file's size covered it and a read returned it (the real-time
observer), and when the driver's tick watcher saw it."""
import re, sys
from datetime import datetime
rx = re.compile(r'@(\d+)\.(\d+):serial_write\s+\S*\s*addr\s+0x0*([0-9a-f]+)\s+val\s+0x([0-9a-f]+)')
uart = {}
for path in sys.argv[3:]:
    cur, t0 = bytearray(), None
    for l in open(path, errors='replace'):
        m = rx.search(l)
        if not m or int(m.group(3), 16) != 0:
            continue
        t = int(m.group(1)) + int(m.group(2)) / 1e6
        v = int(m.group(4), 16)
        if not cur:
            t0 = t
        if v == 10:
            f = cur.decode(errors='replace').split()
            if len(f) >= 3 and f[0] == 'TICK':
                uart.setdefault((int(f[1]), f[2]), t0)
            cur = bytearray()
        else:
            cur.append(v)
obs = {}
for l in open(sys.argv[2]):
    p, n, up, st, rd = l.split()
    obs.setdefault((int(n), up), (float(st), float(rd)))
def dur(s):
    m = re.fullmatch(r'(-?)([\d.]+)(ms|s|µs)', s)
    v = float(m.group(2)) * {'ms': 1e-3, 's': 1, 'µs': 1e-6}[m.group(3)]
    return -v if m.group(1) else v
for l in open(sys.argv[1]):
    if 'ticks around the switchover' not in l:
        continue
    stop = datetime.fromisoformat(re.search(r'stoppedAt=(\S+)', l).group(1).replace('Z', '+00:00')).timestamp()
    worst = re.search(r' worst=(\S+)', l).group(1)
    around = re.search(r'aroundWorst="([^"]*)"', l).group(1).split()
    print(f'run: worst console gap {worst}; per tick: driver saw / UART / file size / RT read (s after the first tick\'s UART write)')
    base = None
    for t in around:
        m = re.fullmatch(r'(\d+)@(\S+)/up([\d.]+)', t)
        n, rel, up = int(m.group(1)), m.group(2), m.group(3)
        drv = stop + dur(rel)
        u = uart.get((n, up)); o = obs.get((n, up), (None, None))
        if base is None:
            base = u if u else drv
        fmt = lambda x: f'{x - base:7.3f}' if x else '    n/a'
        print(f'  tick {n} up {up}: driver {fmt(drv)}  UART {fmt(u)}  size {fmt(o[0])}  read {fmt(o[1])}')
