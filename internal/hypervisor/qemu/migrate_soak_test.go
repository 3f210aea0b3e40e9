package qemu

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/hypervisor/qemu/guest"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/qmp"
)

// soakMoves is how many moves TestMigrationSoak makes: VPOOL_SOAK_MOVES,
// else 4 (the suite's share, there and back twice; `make soak` asks for
// 50).
func soakMoves(t testing.TB) int {
	if s := os.Getenv("VPOOL_SOAK_MOVES"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("VPOOL_SOAK_MOVES=%q: want a positive number", s)
		}
		return n
	}
	return 4
}

// hostLoad runs the standard load beside a test: n shell busy loops
// (`while :; do :; done`), killed at the end of the test.
func hostLoad(t testing.TB, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		cmd := exec.Command("sh", "-c", "while :; do :; done")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatalf("busy loop: %v", err)
		}
		// An ordinary process, however the test itself runs.
		syscall.Setpriority(syscall.PRIO_PROCESS, cmd.Process.Pid, 0)
		t.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
		})
	}
}

var verifyRe = regexp.MustCompile(`(?m)^VERIFY (\d+) pages=(\d+) static=(\d+) fails=(\d+)`)

// verifyLines returns the guest's VERIFY reports (pass, fails) in a
// serial log, and its VERIFY-FAIL lines.
func verifyLines(path string) (passes, fails []int64, failLines []string) {
	b, _ := os.ReadFile(path)
	for _, m := range verifyRe.FindAllSubmatch(b, -1) {
		p, _ := strconv.ParseInt(string(m[1]), 10, 64)
		f, _ := strconv.ParseInt(string(m[4]), 10, 64)
		passes, fails = append(passes, p), append(fails, f)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "VERIFY-FAIL") {
			failLines = append(failLines, strings.TrimSpace(l))
		}
	}
	return passes, fails, failLines
}

// awaitVerified waits until the guest, now on d, has verified every page
// of its region on d: a VERIFY report for a pass after the first one it
// printed there (that pass ran wholly on d and checked every page's
// previous stamp). It fails the test on any failure the guest reports.
func awaitVerified(t testing.TB, d *Driver, id string, move int) int64 {
	t.Helper()
	log := d.SerialLog(id)
	deadline := time.Now().Add(90 * time.Second)
	for {
		passes, fails, failLines := verifyLines(log)
		if len(failLines) > 0 || (len(fails) > 0 && fails[len(fails)-1] > 0) {
			t.Fatalf("move %d: the guest found lost or damaged writes:\n%s", move, strings.Join(failLines, "\n"))
		}
		if len(passes) >= 2 && passes[len(passes)-1] > passes[0] {
			return passes[len(passes)-1]
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(log)
			t.Fatalf("move %d: no second VERIFY report on the target within 90s (a guest built without gcc cannot verify); log tail:\n%s",
				move, tail(string(b), 2000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestMigrationSoak moves a guest that writes a known pattern back and
// forth between two drivers under the standard load (two busy loops on
// the host), with TLS, and after every move waits until the guest has
// verified all its memory (per-page pass stamps and a checksummed static
// region, scripts/guest/dirty.c): a single lost write fails the test. It
// also bounds every move's guest gap by QEMU's pause, the cap and the
// guest's stall on the source before the move (guest.CheckGap) and logs
// the percentiles. 4 moves in the suite (~25 s
// on 2 cores), VPOOL_SOAK_MOVES=50 (make soak) for the 50.
func TestMigrationSoak(t *testing.T) {
	g := heavy(t)
	moves := soakMoves(t)
	hostLoad(t, 2)
	a, b := migPair(t, true, "")
	cfg := vmConfig(g, "soak", "vpool.tickms=100", "vpool.dirty=32", "vpool.dirtyrate=64", "vpool.verify=1")
	cfg.Spec.Memory = 192 * model.MiB
	bootGuest(t, a, cfg)
	ctx := context.Background()
	awaitVerified(t, a, cfg.ID, 0)
	var gaps, downs []time.Duration
	for i := 1; i <= moves; i++ {
		src, dst := a, b
		if i%2 == 0 {
			src, dst = b, a
		}
		base := guest.TickStall(src.SerialLog(cfg.ID), time.Second) // this host's stall, the move aside
		addr, err := dst.MigrateIn(ctx, cfg)
		mustDo(t, fmt.Sprintf("move %d: MigrateIn", i), err)
		// Odd moves over two multifd channels (the pages of one pass
		// arrive by several connections, and none may be lost or
		// reordered), even ones over one stream (the connection the
		// driver dials with its bounded send buffer, migrate_stream.go).
		channels := 2 - (i+1)%2
		res, err := src.MigrateOut(ctx, cfg.ID, addr, hypervisor.MigrateOptions{MultifdChannels: channels}, nil)
		mustDo(t, fmt.Sprintf("move %d: MigrateOut", i), err)
		t.Logf("move %d: downtime %v, pause %v, guest gap %v (stall before %v), total %v, %d channel(s), stage %s %v", i, res.Downtime, res.Pause, res.GuestGap,
			base, res.Total, res.MultifdChannels, res.Stage, res.Notes)
		if res.MultifdChannels != channels {
			t.Errorf("move %d: %d multifd channels, want %d", i, res.MultifdChannels, channels)
		}
		if err := guest.CheckGap(res.GuestGap, res.Pause, DefaultDowntimeLimit, guest.Slack(base)); err != nil {
			t.Errorf("move %d: %v\n%s", i, err, stallReport(dst, cfg.ID))
		}
		gaps, downs = append(gaps, res.GuestGap), append(downs, res.Downtime)
		awaitVerified(t, dst, cfg.ID, i)
		assertGone(t, src, cfg.ID)
	}
	t.Logf("%d moves: guest gap p50 %v p99 %v max %v; downtime p50 %v p99 %v", moves,
		percentile(gaps, 50), percentile(gaps, 99), slices.Max(gaps), percentile(downs, 50), percentile(downs, 99))
}

// percentile is the nearest-rank p-th percentile of ds.
func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (p*len(s) + 99) / 100
	return s[min(max(i, 1), len(s))-1]
}

// stallReport describes a target guest that stood still: the state of
// every thread of its QEMU (read first, without touching QEMU), then
// QEMU's status, the vCPU's registers and local APIC, and the log tail.
func stallReport(d *Driver, id string) string {
	var sb strings.Builder
	v, err := d.get(id)
	if err != nil || v.proc == nil {
		return "no target process"
	}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", v.proc.pid))
	for _, task := range tasks {
		stat, _ := os.ReadFile(filepath.Join(task, "stat"))
		wchan, _ := os.ReadFile(filepath.Join(task, "wchan"))
		fmt.Fprintf(&sb, "thread %s wchan %s\n", strings.TrimSpace(string(stat)), wchan)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var st struct{ Status string }
	v.proc.qmp.Execute(ctx, "query-status", nil, &st)
	fmt.Fprintf(&sb, "status %s\n", st.Status)
	for _, cmd := range []string{"info registers", "info lapic", "info pic", "info irq"} {
		var out string
		v.proc.qmp.Execute(ctx, "human-monitor-command", qmp.Args{"command-line": cmd}, &out)
		fmt.Fprintf(&sb, "%s:\n%s\n", cmd, out)
	}
	b, _ := os.ReadFile(d.SerialLog(id))
	fmt.Fprintf(&sb, "serial log tail:\n%s\n", tail(string(b), 1500))
	return sb.String()
}
