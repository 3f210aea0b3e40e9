package partition

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/client"
	"github.com/vpool/vpool/internal/controller"
	"github.com/vpool/vpool/internal/devenv"
	"github.com/vpool/vpool/internal/hypervisor/qemu/guest"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/server"
	"github.com/vpool/vpool/internal/store/memstore"
	"github.com/vpool/vpool/internal/testenv"
)

// BenchmarkHostFailoverQEMU is BenchmarkHostFailover's real-QEMU half: a
// VM booting vpool's test guest from a disk on a shared pool runs on h1;
// h1 dies (its agent and its QEMU get SIGKILL); the time is measured to
// the guest's ready marker on h2's serial console (rto-s), with the
// parts: the host suspect and fenced (from the server's events), and the
// restart (fenced → guest ready: create adopting the disk, QEMU start,
// boot). Agents run as `vpool agent` processes (driver qemu); the server
// runs in the test process, with the default HA timings; h2 has the
// image cached before (a throwaway VM), so no download is counted.
//
// Two cases: self-fence as above (the VM restarts after the fence
// timeout and margin), and fence-command: h1 hangs (SIGSTOP to its agent
// and its QEMU: it cannot fence itself) and the server's fence command
// (controller.ExecFence running a script, ha.fenceCommandMillis at the
// suspect timeout) powers it off — SIGKILL to those processes — and
// reports success; the VM restarts at once.
func BenchmarkHostFailoverQEMU(b *testing.B) {
	if testing.Short() {
		testenv.SkipOrFail(b, "runs agents and QEMU as processes; skipped with -short")
	}
	for _, tool := range []string{"qemu-system-x86_64", "qemu-img"} {
		testenv.MustHaveTool(b, tool, "apt-get install qemu-system-x86 qemu-utils")
	}
	dir, ok := devenv.FindTestGuest(devenv.GuestCacheRoot())
	if !ok {
		testenv.SkipOrFail(b, "no test guest under %s (scripts/build-guest.sh)", devenv.GuestCacheRoot())
	}
	needBinary(b)
	guest.AcquireSlot(b)
	b.Run("self-fence", func(b *testing.B) { benchQEMUFailover(b, dir, false) })
	b.Run("fence-command", func(b *testing.B) { benchQEMUFailover(b, dir, true) })
}

func benchQEMUFailover(b *testing.B, dir string, command bool) {
	var rto, detect, fence, restart []float64
	for range b.N {
		r := qemuFailover(b, dir, command)
		b.Logf("run: rto %.2f s (detect %.2f, fence %.2f, restart %.2f)", r[0], r[1], r[2], r[3])
		rto, detect, fence, restart = append(rto, r[0]), append(detect, r[1]), append(fence, r[2]), append(restart, r[3])
	}
	for _, m := range []struct {
		xs   []float64
		unit string
	}{{rto, "rto"}, {detect, "detect"}, {fence, "fence"}, {restart, "restart"}} {
		sort.Float64s(m.xs)
		b.ReportMetric(m.xs[len(m.xs)/2], m.unit+"-s")
		b.ReportMetric(m.xs[0], m.unit+"-min-s")
		b.ReportMetric(m.xs[len(m.xs)-1], m.unit+"-max-s")
	}
	b.ReportMetric(0, "ns/op")
}

// fenceScript is the benchmark's fence command: it powers host $1 off by
// killing the processes listed in $1.pids beside it (its agent and its
// QEMU), as a BMC's "chassis power off" would, and reports success.
const fenceScript = `#!/bin/sh
set -e
cd "$(dirname "$0")"
for pid in $(cat "$1.pids"); do kill -KILL "$pid" 2>/dev/null || true; done
date +%s.%N > "$1.fenced"
`

func qemuFailover(b *testing.B, guestDir string, command bool) [4]float64 {
	base, err := os.MkdirTemp("", "vphb")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(base)
	pool := filepath.Join(base, "pool")
	os.MkdirAll(pool, 0o755)
	st := memstore.New()
	defer st.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cc := controller.Config{ResyncInterval: time.Second}
	if command {
		script := filepath.Join(base, "fence.sh")
		if err := os.WriteFile(script, []byte(fenceScript), 0o755); err != nil {
			b.Fatal(err)
		}
		cc.Fencer = &controller.ExecFence{Command: "sh " + script + " {{.Name}}", Timeout: 5 * time.Second}
	}
	termStart := time.Now()
	srv, err := devenv.StartServer(ctx, devenv.ServerConfig{Store: st, DataDir: filepath.Join(base, "srv"), Listen: "127.0.0.1:0",
		AgentListen: "127.0.0.1:0", Controller: cc})
	if err != nil {
		cancel()
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() { cancel(); <-done }()
	c, err := client.New(srv.URL(), srv.AdminToken(), client.WithPollInterval(50*time.Millisecond, 200*time.Millisecond))
	if err != nil {
		b.Fatal(err)
	}
	cmdline := "console=ttyS0"
	if raw, err := os.ReadFile(filepath.Join(guestDir, "cmdline")); err == nil {
		cmdline = strings.TrimSpace(string(raw))
	}
	hp := model.DefaultHAPolicy()
	if command {
		hp.FenceCommandMillis = hp.SuspectMillis
		p := model.DefaultPolicy()
		p.HA = &hp
		if _, err := c.SetPolicy(ctx, p); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := srv.ImportLocalImage(ctx, api.ImageImportRequest{Name: "busybox", Cmdline: cmdline},
		[]server.LocalFile{{Role: model.ImageKernel, Path: filepath.Join(guestDir, "vmlinux")}, {Role: model.ImageInitrd, Path: filepath.Join(guestDir, "initramfs.cpio.gz")}}); err != nil {
		b.Fatal(err)
	}
	eventually(b, "image ready", time.Minute, func() bool { im, err := c.GetImage(ctx, "busybox"); return err == nil && im.Phase == model.ImageReady })
	tok, err := srv.NewJoinToken(ctx, time.Hour, 2)
	if err != nil {
		b.Fatal(err)
	}
	d1, d2 := filepath.Join(base, "h1"), filepath.Join(base, "h2")
	a1 := agentProc(b, "", "h1", "https://"+srv.AgentAddr(), tok.Token, d1, pool, "home=yes")
	a2 := agentProc(b, "", "h2", "https://"+srv.AgentAddr(), tok.Token, d2, pool)
	defer func() { // this run's host h2 and its QEMU end with the run
		a2.Process.Signal(syscall.SIGKILL)
		for _, pid := range qemuFor(filepath.Join(pool, "default.w1"), d2)[d2] {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}()
	eventually(b, "two ready hosts", time.Minute, func() bool {
		hs, err := c.ListHosts(ctx)
		n := 0
		for _, h := range hs {
			if h.State == model.HostReady {
				n++
			}
		}
		return err == nil && n == 2
	})
	// h2 caches the image first (as a cluster's hosts would have it): the
	// figure is the failover, not an image download.
	warm := model.VMSpec{VCPUs: 1, Memory: 128 * model.MiB, Image: "busybox", Placement: model.Placement{Host: "h2"}}
	if _, err := c.CreateVM(ctx, api.DefaultProject, api.VMCreateRequest{Name: "warm", Spec: warm}); err != nil {
		b.Fatal(err)
	}
	eventually(b, "image cached on h2", 3*time.Minute, func() bool {
		v, err := c.GetVM(ctx, api.DefaultProject, "warm")
		return err == nil && v.Status.Phase == model.PhaseRunning
	})
	if err := c.DeleteVM(ctx, api.DefaultProject, "warm"); err != nil {
		b.Fatal(err)
	}
	spec := model.VMSpec{VCPUs: 1, Memory: 128 * model.MiB, Image: "busybox", Disks: []model.Disk{{Name: "root", Size: 64 * model.MiB, Pool: "shared"}},
		Placement: model.Placement{PreferredLabels: map[string]string{"home": "yes"}}}
	if _, err := c.CreateVM(ctx, api.DefaultProject, api.VMCreateRequest{Name: "w1", Spec: spec}); err != nil {
		b.Fatal(err)
	}
	eventually(b, "guest ready on h1", 3*time.Minute, func() bool { return readyIn(d1) })
	diskDir := filepath.Join(pool, "default.w1")
	procs := append([]int{a1.Process.Pid}, qemuFor(diskDir, d1)[d1]...)
	defer func() { // none left behind, stopped or not
		for _, pid := range procs {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}()
	sig := syscall.SIGKILL // the host dies: its agent and its QEMU
	if command {
		if wait := hp.Fence() - time.Since(termStart); wait > 0 {
			time.Sleep(wait) // no fence command within a fence timeout of the leader taking office
		}
		var pids []string
		for _, p := range procs {
			pids = append(pids, strconv.Itoa(p))
		}
		if err := os.WriteFile(filepath.Join(base, "h1.pids"), []byte(strings.Join(pids, " ")), 0o644); err != nil {
			b.Fatal(err)
		}
		sig = syscall.SIGSTOP // the host hangs: it cannot fence itself, its QEMU holds the disk
	}
	t0 := time.Now()
	for _, pid := range procs {
		syscall.Kill(pid, sig)
	}
	eventually(b, "guest ready on h2", 3*time.Minute, func() bool { return readyIn(d2) })
	ready := time.Since(t0)
	if command {
		if _, err := os.Stat(filepath.Join(base, "h1.fenced")); err != nil {
			b.Fatalf("the fence command did not run: %v", err)
		}
	}
	agentTimeline(b, d2+".log", t0)
	var suspect, fenced time.Time
	evs, err := c.ListEvents(ctx, 0, "")
	if err != nil {
		b.Fatal(err)
	}
	for _, e := range evs {
		switch {
		case e.Object == "host/h1" && e.Kind == "host.suspect":
			suspect = e.Time
		case e.Object == "host/h1" && e.Kind == "host.fenced":
			fenced = e.Time
		}
	}
	if q := qemuFor(diskDir, d1, d2); len(q[d1]) != 0 || len(q[d2]) != 1 {
		b.Fatalf("QEMU after the failover: %v", q)
	}
	return [4]float64{ready.Seconds(), suspect.Sub(t0).Seconds(), fenced.Sub(t0).Seconds(), t0.Add(ready).Sub(fenced).Seconds()}
}

// agentTimeline logs the lines of an agent's log about w1 from t0 on,
// with their time from t0 (the restart's steps on the new host).
func agentTimeline(b *testing.B, logFile string, t0 time.Time) {
	raw, err := os.ReadFile(logFile)
	if err != nil {
		return
	}
	var out []string
	for _, line := range strings.Split(string(raw), "\n") {
		if !strings.Contains(line, "w1") || !strings.HasPrefix(line, "time=") {
			continue
		}
		ts, _, _ := strings.Cut(strings.TrimPrefix(line, "time="), " ")
		at, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil || at.Before(t0) {
			continue
		}
		out = append(out, fmt.Sprintf("%+.2f %s", at.Sub(t0).Seconds(), tail(line, 160)))
	}
	b.Logf("h2's agent from the failure:\n%s", strings.Join(out, "\n"))
}

// readyIn reports whether a serial log under an agent's state dir holds
// the guest's ready marker.
func readyIn(stateDir string) bool {
	found := false
	filepath.Walk(stateDir, func(p string, info os.FileInfo, err error) error {
		if err != nil || found || info.IsDir() || info.Name() != "serial.log" {
			return nil
		}
		if raw, err := os.ReadFile(p); err == nil && strings.Contains(string(raw), guest.ReadyMarker) {
			found = true
		}
		return nil
	})
	return found
}
