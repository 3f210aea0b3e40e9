package qemu

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
)

// The guest-visible gap of a migration. The test guest (vpool.tick=1)
// prints "TICK <n> <uptime>" on its serial console every second. A
// tickWatcher tails a serial log and stamps every complete TICK line with
// the host time it appeared; the source watches its log until the
// switchover, the target watches its own from the resume on. GuestGap
// then finds the longest interval between consecutive ticks beyond the
// guest's normal tick period: the time the guest's output stood still.

// Tick is one TICK line of a guest's serial console.
type Tick struct {
	N      int64         // the guest's tick counter
	Uptime time.Duration // the guest's /proc/uptime when it printed
	At     time.Time     // when the host saw the line
}

// ParseTick parses a line holding "TICK <n> <uptime>" (At is left zero).
func ParseTick(line string) (Tick, bool) {
	i := strings.Index(line, "TICK ")
	if i < 0 {
		return Tick{}, false
	}
	f := strings.Fields(line[i:])
	if len(f) < 3 {
		return Tick{}, false
	}
	n, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return Tick{}, false
	}
	up, err := strconv.ParseFloat(f[2], 64)
	if err != nil {
		return Tick{}, false
	}
	return Tick{N: n, Uptime: time.Duration(up * float64(time.Second))}, true
}

// GuestGap returns the longest stall in ticks (from both sides of a
// migration, on one clock): the largest interval between consecutive
// observed ticks minus what their counters say it should be (Δn × the
// median single-tick interval, which absorbs the guest's own loop
// overhead). Missing ticks (a line split across the switchover) are thus
// not counted as a stall. It returns 0 with fewer than three ticks.
func GuestGap(ticks []Tick) time.Duration {
	ts := slices.Clone(ticks)
	slices.SortFunc(ts, func(a, b Tick) int { return int(a.N - b.N) })
	ts = slices.CompactFunc(ts, func(a, b Tick) bool { return a.N == b.N })
	if len(ts) < 3 {
		return 0
	}
	var single []time.Duration
	for i := 1; i < len(ts); i++ {
		if ts[i].N-ts[i-1].N == 1 {
			single = append(single, ts[i].At.Sub(ts[i-1].At))
		}
	}
	if len(single) == 0 {
		return 0
	}
	slices.Sort(single)
	period := single[len(single)/2]
	var gap time.Duration
	for i := 1; i < len(ts); i++ {
		dn := time.Duration(ts[i].N - ts[i-1].N)
		gap = max(gap, ts[i].At.Sub(ts[i-1].At)-dn*period)
	}
	return gap
}

// guestGapAtLeast is GuestGap, except when the target's ticks did not all
// come: then the guest stood still at least from its last tick until
// waited (when the target stopped waiting, on the same clock), less one
// tick period, and the larger of the two is the gap. A zero waited means
// every tick came.
func guestGapAtLeast(ticks []Tick, waited time.Time, period time.Duration) time.Duration {
	gap := GuestGap(ticks)
	if waited.IsZero() || len(ticks) == 0 {
		return gap
	}
	last := slices.MaxFunc(ticks, func(a, b Tick) int { return a.At.Compare(b.At) })
	return max(gap, waited.Sub(last.At)-period)
}

// guestClockGap is the longest time the guest stood still around a
// migration by its own clock: the ticks' uptimes, which run with the
// host's time except while QEMU holds the vCPUs, so QEMU's pause is added
// to the interval across the switchover (the source's last tick to the
// target's first). A guest that does not run (no CPU, throttled, its
// timer interrupt late) prints its ticks late by its own clock and shows
// here; the lag of its serial console does not: under load the lines of
// ticks the guest printed on time reached the host seconds later, in
// bursts, while the guest ran on (docs/migration-slo.md, The console
// lag). src are the source's ticks, dst the target's.
func guestClockGap(src, dst []Tick, pause time.Duration) time.Duration {
	sortN := func(ts []Tick) []Tick {
		ts = slices.Clone(ts)
		slices.SortFunc(ts, func(a, b Tick) int { return int(a.N - b.N) })
		return slices.CompactFunc(ts, func(a, b Tick) bool { return a.N == b.N })
	}
	src, dst = sortN(src), sortN(dst)
	var single []time.Duration
	for _, ts := range [][]Tick{src, dst} {
		for i := 1; i < len(ts); i++ {
			if ts[i].N-ts[i-1].N == 1 {
				single = append(single, ts[i].Uptime-ts[i-1].Uptime)
			}
		}
	}
	if len(single) == 0 {
		return pause
	}
	slices.Sort(single)
	period := single[len(single)/2]
	stall := func(a, b Tick) time.Duration { return b.Uptime - a.Uptime - time.Duration(b.N-a.N)*period }
	var gap time.Duration
	for _, ts := range [][]Tick{src, dst} {
		for i := 1; i < len(ts); i++ {
			gap = max(gap, stall(ts[i-1], ts[i]))
		}
	}
	if len(src) > 0 && len(dst) > 0 {
		if a, b := src[len(src)-1], dst[0]; b.N > a.N {
			gap = max(gap, stall(a, b)+pause)
		}
	}
	return max(gap, pause)
}

// lastAt is when the last of ticks was seen (zero: none).
func lastAt(ticks []Tick) time.Time {
	var at time.Time
	for _, t := range ticks {
		if t.At.After(at) {
			at = t.At
		}
	}
	return at
}

// tickPeriod is the guest's tick period: the median interval between
// consecutive ticks (1 s, the test guest's default, when unknown).
func tickPeriod(ticks []Tick) time.Duration {
	var single []time.Duration
	for i := 1; i < len(ticks); i++ {
		if ticks[i].N-ticks[i-1].N == 1 {
			single = append(single, ticks[i].At.Sub(ticks[i-1].At))
		}
	}
	if len(single) == 0 {
		return time.Second
	}
	slices.Sort(single)
	return max(single[len(single)/2], time.Millisecond)
}

// gapWindow is how long after the resume the target's ticks must cover:
// a stall that begins a moment after the guest first ran again is part
// of the migration's gap.
const gapWindow = time.Second

// targetOffset is the target's clock less ours, from the "time" round
// trip with the shortest of three (the error is at most half of it; on a
// loaded host one round trip can take tens of ms).
func (m *outgoing) targetOffset() (time.Duration, bool) {
	var best, offset time.Duration
	for i := 0; i < 3; i++ {
		t0 := m.d.clock.Now()
		tr, err := m.ctl.call(ctlMsg{Op: "time"}, 10*time.Second)
		if err != nil {
			return 0, false
		}
		t1 := m.d.clock.Now()
		if rtt := t1.Sub(t0); i == 0 || rtt < best {
			best, offset = rtt, time.Unix(0, tr.Now).Sub(t0.Add(rtt/2))
		}
	}
	return offset, true
}

// measureGap fills the result's Pause (the source's STOP to the target's
// RESUME, the target's clock moved to ours: targetOffset) and GuestGap:
// from the guest's ticks when it prints them (ours until the switchover,
// the target's for gapWindow after the resume), else the Pause, labelled
// as such.
func (m *outgoing) measureGap() {
	src := m.ticks.Stop()
	if m.ctl == nil {
		return
	}
	offset, ok := m.targetOffset()
	if !ok {
		return
	}
	if !m.stopped.IsZero() && !m.resumed.IsZero() {
		m.res.Pause = m.resumed.Add(-offset).Sub(m.stopped)
		m.res.GuestGap, m.res.GuestGapBy = m.res.Pause, hypervisor.GapByQEMUPause
	}
	if len(src) == 0 {
		return
	}
	period := tickPeriod(src)
	want := max(3, int(gapWindow/period)+2)
	rep, err := m.ctl.call(ctlMsg{Op: "ticks", Want: want}, 10*time.Second)
	if err != nil {
		return
	}
	all := src
	for _, t := range rep.Ticks {
		t.At = t.At.Add(-offset)
		all = append(all, t)
	}
	var waited time.Time
	if len(rep.Ticks) < want && rep.Now != 0 {
		waited = time.Unix(0, rep.Now).Add(-offset)
	}
	m.res.ConsoleGap = guestGapAtLeast(all, waited, period)
	m.res.GuestGap, m.res.GuestGapBy = m.res.ConsoleGap, hypervisor.GapByGuestTicks
	if m.res.Pause > 0 { // the guest's clock and QEMU's pause (else the hosts' stamps)
		m.res.GuestGap = guestClockGap(src, all[len(src):], m.res.Pause)
		if !waited.IsZero() { // the target's ticks did not all come
			m.res.GuestGap = max(m.res.GuestGap, waited.Sub(lastAt(all))-period)
		}
	}
	if m.d.log.Enabled(context.Background(), slog.LevelDebug) {
		var sb strings.Builder
		for _, t := range all[max(0, len(src)-3):min(len(all), len(src)+6)] {
			fmt.Fprintf(&sb, " %d@%s/up%.3f", t.N, t.At.Sub(m.stopped).Round(time.Millisecond), t.Uptime.Seconds())
		}
		ts := slices.Clone(all)
		slices.SortFunc(ts, func(a, b Tick) int { return int(a.N - b.N) })
		worst, at, wi := time.Duration(0), time.Duration(0), 0
		for i := 1; i < len(ts); i++ {
			if g := ts[i].At.Sub(ts[i-1].At) - time.Duration(ts[i].N-ts[i-1].N)*period; g > worst {
				worst, at, wi = g, ts[i].At.Sub(m.stopped), i
			}
		}
		var around strings.Builder
		for _, t := range ts[max(0, wi-2):min(len(ts), wi+4)] {
			fmt.Fprintf(&around, " %d@%s/up%.3f", t.N, t.At.Sub(m.stopped).Round(time.Millisecond), t.Uptime.Seconds())
		}
		m.d.log.Debug("qemu: ticks around the switchover (host time since the stop / guest uptime)", "vm", m.v.rec.Config.ID,
			"ticks", sb.String(), "resumedAfterStop", m.resumed.Add(-offset).Sub(m.stopped), "worst", worst, "worstEndsAfterStop", at, "aroundWorst", around.String(),
			"first", all[0].At.Sub(m.stopped), "stoppedAt", m.stopped.UTC().Format(time.RFC3339Nano))
	}
}

// tickWatcher tails a serial log and stamps TICK lines.
type tickWatcher struct {
	path string
	now  func() time.Time
	stop chan struct{}
	done chan struct{}

	mu    sync.Mutex
	ticks []Tick
	seen  chan struct{} // closed and replaced on every new tick
}

// tickPoll is how often the log is read: the gap's resolution.
const tickPoll = 5 * time.Millisecond

// watchTicks starts tailing path from its current end (fromEnd) or from
// its start.
func watchTicks(path string, fromEnd bool, now func() time.Time) *tickWatcher {
	w := &tickWatcher{path: path, now: now, stop: make(chan struct{}), done: make(chan struct{}), seen: make(chan struct{})}
	var off int64
	if fromEnd {
		if st, err := os.Stat(path); err == nil {
			off = st.Size()
		}
	}
	go w.run(off)
	return w
}

func (w *tickWatcher) run(off int64) {
	defer close(w.done)
	var partial []byte
	t := time.NewTicker(tickPoll)
	defer t.Stop()
	for {
		if f, err := os.Open(w.path); err == nil {
			if st, err := f.Stat(); err == nil && st.Size() < off {
				off, partial = 0, nil // a new log (QEMU restarted)
			}
			if _, err := f.Seek(off, io.SeekStart); err == nil {
				b, _ := io.ReadAll(f)
				off += int64(len(b))
				partial = w.feed(append(partial, b...))
			}
			f.Close()
		}
		select {
		case <-w.stop:
			return
		case <-t.C:
		}
	}
}

// feed records the complete lines of b and returns the incomplete rest.
func (w *tickWatcher) feed(b []byte) []byte {
	i := bytes.LastIndexByte(b, '\n')
	if i < 0 {
		return b
	}
	at := w.now()
	sc := bufio.NewScanner(bytes.NewReader(b[:i]))
	for sc.Scan() {
		if tk, ok := ParseTick(strings.TrimSpace(sc.Text())); ok {
			tk.At = at
			w.mu.Lock()
			w.ticks = append(w.ticks, tk)
			close(w.seen)
			w.seen = make(chan struct{})
			w.mu.Unlock()
		}
	}
	return append([]byte(nil), b[i+1:]...)
}

// Ticks returns the ticks seen so far.
func (w *tickWatcher) Ticks() []Tick {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.ticks)
}

// waitTicks waits until n ticks were seen or limit passes.
func (w *tickWatcher) waitTicks(n int, limit time.Duration) []Tick {
	deadline := time.After(limit)
	for {
		w.mu.Lock()
		got, seen := len(w.ticks), w.seen
		w.mu.Unlock()
		if got >= n {
			return w.Ticks()
		}
		select {
		case <-seen:
		case <-deadline:
			return w.Ticks()
		}
	}
}

// Stop ends the tailing and returns every tick seen.
func (w *tickWatcher) Stop() []Tick {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
	return w.Ticks()
}

// guestTicksIn returns the TICK lines in the last 16 KiB of a log.
func guestTicksIn(path string) []Tick {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > 16<<10 {
		f.Seek(st.Size()-16<<10, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	var out []Tick
	for _, line := range strings.Split(string(b), "\n") {
		if t, ok := ParseTick(strings.TrimSpace(line)); ok {
			out = append(out, t)
		}
	}
	return out
}
