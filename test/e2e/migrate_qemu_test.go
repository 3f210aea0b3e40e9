package e2e

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/hypervisor/qemu/guest"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/pki"
)

// Live migration through server + agents + real QEMU (TCG), issue 5.
//
// One cluster serves every case: `vpool server` and two `vpool agent
// --driver qemu` processes (q1, q2) with separate state directories and one
// shared pool directory (--pool shared=DIR on both). The guests boot the
// test guest through per-host image directories whose kernel command line
// carries the guest's switches: tick-guest prints a TICK every second (the
// driver measures the guest-visible gap from them), dirty-guest also
// rewrites memory faster than the slow transfers of the failure cases
// send it, so that those never converge before the kill.

const (
	tickImage  = "tick-guest"
	dirtyImage = "dirty-guest"
	// slowBandwidth keeps a transfer of the test guest (~65 MiB of
	// non-zero memory) busy for ~16 s: long enough to act mid-transfer.
	slowBandwidth = "4MiB"
)

var qhosts = []string{"q1", "q2"}

// TestMigrationQEMU moves real QEMU guests between two agents: live with a
// local disk, live on shared storage, a drain of three VMs, a server
// restart mid-transfer, the failures (target QEMU, target agent, source
// QEMU killed mid-transfer) and a cold move, checking both hosts for
// leftovers after each. The kill steps and the cold one need only the
// cluster: -run 'TestMigrationQEMU/(kill|cold)' runs them alone.
func TestMigrationQEMU(t *testing.T) {
	needBinary(t)
	needQEMU(t)
	cl := startQCluster(t)
	steps := []struct {
		name string
		run  func(*testing.T, *qcluster)
	}{
		{"live-local-disk", testMigrateLocal},
		{"live-shared-storage", testMigrateShared},
		{"drain", testDrainQEMU},
		{"server-restart-mid-transfer", testMigrateServerRestart},
		{"delete-leaves-nothing", testDeleteMigrated},
		{"kill-target-qemu", func(t *testing.T, cl *qcluster) { testKillMidTransfer(t, cl, killTargetQEMU) }},
		{"kill-target-agent", func(t *testing.T, cl *qcluster) { testKillMidTransfer(t, cl, killTargetAgent) }},
		{"kill-source-qemu", func(t *testing.T, cl *qcluster) { testKillMidTransfer(t, cl, killSourceQEMU) }},
		{"cold-local-disk", testMigrateCold},
		{"hosts-clean", testHostsClean},
	}
	for _, st := range steps {
		if !t.Run(st.name, func(t *testing.T) { st.run(t, cl) }) {
			return // later steps build on this one's state
		}
	}
}

// migrationOnlyKey says whether host's migration TLS material (what its
// QEMUs load) is its migration-only certificate, not its agent identity.
func migrationOnlyKey(t *testing.T, cl *qcluster, host string) bool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(cl.state[host], "qemu", "migration-tls", "server-cert.pem"))
	if err != nil {
		t.Fatalf("%s: %v", host, err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM certificate", host)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return slices.Contains(c.Subject.OrganizationalUnit, pki.RoleMigration)
}

// testMigrateLocal: g1 (local disk) moves q1 → q2 live with TLS; it runs
// on q2, keeps ticking, and q1 keeps nothing of it.
func testMigrateLocal(t *testing.T, cl *qcluster) {
	cl.createOn(t, "q1", "g1", tickImage, "128MiB", "1GiB")
	base := guest.TickStall(filepath.Join(cl.vmDir("q1", "g1"), "serial.log"), 0) // the stall q1 imposes anyway
	var done model.Migration
	mustJSON(t, cl.s.cli(t, "vm", "migrate", "g1", "--to", "q2", "--wait", "--timeout", "3m", "-o", "json"), &done)
	m := cl.showMigration(t, done.Name)
	r := m.Result
	t.Logf("g1 moved: %+v", r)
	switch {
	case m.Phase != model.MigrationCompleted || m.Mode != model.MigrationLive || m.Source != "q1" || m.Target != "q2":
		t.Fatalf("migration %s: %s %s %s→%s", m.Name, m.Phase, m.Mode, m.Source, m.Target)
	case r == nil || !r.TLS:
		t.Fatalf("the streams were not TLS: %+v", r)
	case r.DowntimeMs <= 0 || r.TotalMs <= 0 || r.RAMBytes <= 0 || r.BytesSent != r.RAMBytes+r.DiskBytes:
		t.Fatalf("result lacks downtime/bytes: %+v", r)
	case len(r.SharedDisks) != 0:
		t.Fatalf("a local disk was treated as shared: %+v", r)
	case !migrationOnlyKey(t, cl, "q1") || !migrationOnlyKey(t, cl, "q2"):
		t.Fatal("the hosts' QEMUs were given the hosts' own keys: want their migration-only certificates (docs/security.md VP-11)")
	case r.GuestGapBy != "guest-ticks":
		t.Fatalf("guest gap %d ms by %q, want measured from the guest's ticks", r.GuestGapMs, r.GuestGapBy)
	}
	// Measured on one clock and bounded by QEMU's pause, the default cap
	// and the guest's stall before (guest.CheckGap says why): a guest that
	// stands still after arriving fails, a busy host does not.
	ms := func(n int64) time.Duration { return time.Duration(n) * time.Millisecond }
	if err := guest.CheckGap(ms(r.GuestGapMs), ms(r.PauseMs), ms(model.DefaultDowntimeLimitMs), guest.Slack(base)); err != nil {
		t.Fatalf("g1 moved: %v", err)
	}
	cl.assertMovedTo(t, "g1", "q2")
	if d := filepath.Join(cl.state["q2"], "qemu", "pools", "default", vmIDOf("g1")); !exists(d) {
		t.Fatalf("the local disk did not arrive on q2 (%s)", d)
	}
	cl.waitMigration(t, m.Name, "source cleaned", 30*time.Second, func(m *model.Migration) bool { return m.SourceCleaned })
}

// assertMovedTo checks that name runs on to and only there, ticking on,
// and that the host it left keeps nothing of it.
func (cl *qcluster) assertMovedTo(t *testing.T, name, to string) {
	t.Helper()
	vm := cl.vm(t, name)
	if vm.Status.Host != to || vm.Status.Phase != model.PhaseRunning || vm.Status.Migration != "" {
		t.Fatalf("%s after migration: host %q phase %s migration %q", name, vm.Status.Host, vm.Status.Phase, vm.Status.Migration)
	}
	if pid := cl.qemuPid(t, to, name); !alive(pid) {
		t.Fatalf("%s has no QEMU process on %s", name, to)
	}
	if exists(filepath.Join(cl.vmDir(to, name), "incoming")) {
		t.Fatalf("%s is still marked incoming on %s", name, to)
	}
	cl.assertClean(t, other(to), name)
	cl.waitTick(t, to, name, cl.waitTick(t, to, name, 0))
}

// testMigrateShared: g2's disk lies in the shared pool; only memory moves
// and the disk file stays where it is, now owned by q2.
func testMigrateShared(t *testing.T, cl *qcluster) {
	cl.createOn(t, "q1", "g2", tickImage, "128MiB", "size=1GiB,pool=shared")
	diskDir := filepath.Join(cl.shared, vmIDOf("g2"))
	files, _ := filepath.Glob(filepath.Join(diskDir, "*.qcow2"))
	if len(files) != 1 || cl.sharedOwner("g2") != "q1" {
		t.Fatalf("g2's shared disk: files %v, owner %q", files, cl.sharedOwner("g2"))
	}
	st, err := os.Stat(files[0])
	if err != nil {
		t.Fatal(err)
	}
	var done model.Migration
	mustJSON(t, cl.s.cli(t, "vm", "migrate", "g2", "--to", "q2", "--wait", "--timeout", "3m", "-o", "json"), &done)
	m := cl.showMigration(t, done.Name)
	r := m.Result
	t.Logf("g2 moved: %+v", r)
	if m.Phase != model.MigrationCompleted || r == nil || !r.TLS || r.DiskBytes != 0 || len(r.SharedDisks) != 1 || r.RAMBytes <= 0 {
		t.Fatalf("shared-storage migration: phase %s, result %+v", m.Phase, r)
	}
	cl.assertMovedTo(t, "g2", "q2")
	st2, err := os.Stat(files[0])
	if err != nil || !os.SameFile(st, st2) {
		t.Fatalf("the shared disk file did not stay in place: %v", err)
	}
	if owner := cl.sharedOwner("g2"); owner != "q2" {
		t.Fatalf("the shared disk's owner after migration: %q", owner)
	}
}

// testDrainQEMU: g3 joins g1 and g2 on q2; draining q2 moves all three
// live to q1, q2 ends in maintenance with no VM, undrain makes it ready.
func testDrainQEMU(t *testing.T, cl *qcluster) {
	cl.createOn(t, "q2", "g3", tickImage, "128MiB", "1GiB")
	names := []string{"g1", "g2", "g3"}
	cl.s.cli(t, "host", "drain", "q2", "--wait", "--timeout", "4m")
	h := cl.host(t, "q2")
	if h.State != model.HostMaintenance || h.VMs != 0 || h.Drain == nil || !h.Drain.Done {
		t.Fatalf("q2 after the drain: state %s, %d VMs, drain %+v", h.State, h.VMs, h.Drain)
	}
	var ms []model.Migration
	mustJSON(t, cl.s.cli(t, "migration", "list", "-A", "-o", "json"), &ms)
	var moved []string
	for _, m := range ms {
		if m.Drain != "q2" {
			continue
		}
		if m.Phase != model.MigrationCompleted || m.Mode != model.MigrationLive || m.Target != "q1" || m.Result == nil || !m.Result.TLS {
			t.Fatalf("drain migration of %s: %s %s → %s, result %+v", m.VM, m.Phase, m.Mode, m.Target, m.Result)
		}
		moved = append(moved, m.VM)
	}
	slices.Sort(moved)
	if !slices.Equal(moved, names) {
		t.Fatalf("the drain moved %v, want %v", moved, names)
	}
	for _, n := range names {
		cl.assertMovedTo(t, n, "q1")
	}
	var uh model.Host
	mustJSON(t, cl.s.cli(t, "host", "undrain", "q2", "-o", "json"), &uh)
	if uh.State != model.HostReady || uh.Drain != nil {
		t.Fatalf("q2 after undrain: %s, drain %+v", uh.State, uh.Drain)
	}
}

// copyWatch samples, until stopped, how many QEMU processes of a VM run
// a guest across the hosts (an incoming one, still marked, does not yet).
// Two at once for longer than the switchover's instant is an error.
type copyWatch struct {
	stop, done chan struct{}
	worst      time.Duration // read after done
	seen       string
}

func (cl *qcluster) watchCopies(name string) *copyWatch {
	w := &copyWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		var since time.Time
		for {
			var running []string
			for _, h := range qhosts {
				for _, pid := range qemuProcs(cl.state[h])[vmIDOf(name)] {
					if !exists(filepath.Join(cl.vmDir(h, name), "incoming")) {
						running = append(running, fmt.Sprintf("%s:%d", h, pid))
					}
				}
			}
			switch {
			case len(running) < 2:
				since = time.Time{}
			case since.IsZero():
				since = time.Now()
			default:
				if d := time.Since(since); d > w.worst {
					w.worst, w.seen = d, strings.Join(running, ", ")
				}
			}
			select {
			case <-w.stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return w
}

// finish stops the watch and fails when two copies ran for a second or more.
func (w *copyWatch) finish(t *testing.T, name string) {
	t.Helper()
	close(w.stop)
	<-w.done
	if w.worst >= time.Second {
		t.Fatalf("%s ran twice for %s (%s)", name, w.worst, w.seen)
	}
}

// testMigrateServerRestart: the server is killed -9 while g1 transfers
// q1 → q2 and restarted on its data dir; the migration completes (or
// fails cleanly) with one copy of g1 running throughout.
func testMigrateServerRestart(t *testing.T, cl *qcluster) {
	m := cl.migrate(t, "g1", "q2", "--bandwidth", slowBandwidth)
	w := cl.watchCopies("g1")
	cl.waitTransferring(t, m.Name)
	cl.s.kill9()
	t.Logf("server killed mid-transfer")
	cl.restartServer()
	m = cl.waitFinal(t, m.Name)
	w.finish(t, "g1")
	t.Logf("after the server restart: %s", describeMig(&m))
	switch m.Phase {
	case model.MigrationCompleted:
		cl.assertMovedTo(t, "g1", "q2")
	case model.MigrationFailed:
		if m.Reason == "" {
			t.Fatal("failed without a reason")
		}
		cl.assertMovedTo(t, "g1", "q1") // stayed: running there, q2 clean
	default:
		t.Fatalf("migration ended %s", m.Phase)
	}
	cl.s.waitHosts(t, len(qhosts))
}

// testDeleteMigrated deletes the moved VMs: neither host keeps anything,
// the shared pool included.
func testDeleteMigrated(t *testing.T, cl *qcluster) {
	cl.s.cli(t, "vm", "delete", "g1", "g2", "g3", "--wait", "--timeout", "2m")
	for _, n := range []string{"g1", "g2", "g3"} {
		for _, h := range qhosts {
			cl.assertClean(t, h, n)
		}
	}
	if d := filepath.Join(cl.shared, vmIDOf("g2")); exists(d) {
		t.Fatalf("deleting g2 left its shared disk directory %s", d)
	}
}

type killWhat int

const (
	killTargetQEMU killWhat = iota
	killTargetAgent
	killSourceQEMU
)

// testKillMidTransfer migrates d1 (a dirtying guest, slowly) to the other
// host and kills one part mid-transfer: the migration fails with a
// reason, the target keeps nothing, and the VM stays on the source —
// running in the same process when the source was not hit.
func testKillMidTransfer(t *testing.T, cl *qcluster, what killWhat) {
	src := "q1"
	if vm, err := cl.s.c.GetVM(context.Background(), api.DefaultProject, "d1"); err == nil {
		src = vm.Status.Host
	} else {
		cl.createOn(t, src, "d1", dirtyImage, "192MiB", "1GiB")
		waitSerial(t, filepath.Join(cl.vmDir(src, "d1"), "serial.log"), "DIRTY 1")
	}
	dst := other(src)
	srcPid := cl.qemuPid(t, src, "d1")
	allocBefore := cl.host(t, dst).Allocated
	m := cl.migrate(t, "d1", dst, "--bandwidth", slowBandwidth)
	cl.waitTransferring(t, m.Name)
	switch what {
	case killTargetQEMU:
		pid := cl.qemuPid(t, dst, "d1")
		t.Logf("killing the target QEMU (pid %d)", pid)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	case killTargetAgent:
		t.Logf("killing agent %s (its QEMU %d lives on)", dst, cl.qemuPid(t, dst, "d1"))
		cl.agents[dst].kill9()
	case killSourceQEMU:
		t.Logf("killing the source QEMU (pid %d)", srcPid)
		_ = syscall.Kill(srcPid, syscall.SIGKILL)
	}
	m = cl.waitFinal(t, m.Name)
	t.Logf("migration %s: %s", m.Name, describeMig(&m))
	if m.Phase != model.MigrationFailed || m.Reason == "" {
		t.Fatalf("migration %s ended %s (reason %q), want failed with a reason", m.Name, m.Phase, m.Reason)
	}
	if what == killTargetAgent {
		left := cl.leftovers(dst, "d1")
		t.Logf("while %s's agent is down it keeps: %v", dst, left)
		cl.startAgent(dst, "")
		cl.s.waitHosts(t, len(qhosts))
	}
	cl.assertClean(t, dst, "d1")
	cl.waitMigration(t, m.Name, "target cleaned", 60*time.Second, func(m *model.Migration) bool { return m.TargetCleaned })
	eventually(t, dst+"'s hold released", 30*time.Second, func() bool { return cl.host(t, dst).Allocated == allocBefore })
	if shown := cl.showMigration(t, m.Name); shown.Phase != model.MigrationFailed || shown.Reason != m.Reason {
		t.Fatalf("migration show: %s %q", shown.Phase, shown.Reason)
	}
	vm := cl.vm(t, "d1")
	if vm.Status.Host != src || vm.Status.Migration != "" {
		t.Fatalf("d1 after the failed migration: host %q, migration %q", vm.Status.Host, vm.Status.Migration)
	}
	if what != killSourceQEMU {
		if pid := cl.qemuPid(t, src, "d1"); pid != srcPid || !alive(pid) || vm.Status.Phase != model.PhaseRunning {
			t.Fatalf("d1 on %s: QEMU %d → %d, phase %s; want the same process running", src, srcPid, pid, vm.Status.Phase)
		}
		cl.waitTick(t, src, "d1", cl.lastTick(src, "d1"))
		return
	}
	cl.assertSourceRecovered(t, src, srcPid)
}

// assertSourceRecovered: after its QEMU was killed, d1 stays assigned to
// src and recovers there (its agent restarts a crashed VM: a new QEMU
// process, a fresh boot); it never appears elsewhere.
func (cl *qcluster) assertSourceRecovered(t *testing.T, src string, oldPid int) {
	t.Helper()
	var vm model.VM
	eventually(t, "d1 recovered on "+src, 90*time.Second, func() bool {
		vm = cl.vm(t, "d1")
		pid := cl.qemuPid(t, src, "d1")
		return vm.Status.Phase == model.PhaseRunning && pid != 0 && pid != oldPid
	})
	t.Logf("d1 after its source QEMU died: phase %s on %s, message %q, lastError %q",
		vm.Status.Phase, vm.Status.Host, vm.Status.Message, vm.Status.LastError)
	if vm.Status.Host != src {
		t.Fatalf("d1 moved to %s", vm.Status.Host)
	}
	cl.waitTick(t, src, "d1", 0)
	if left := cl.leftovers(other(src), "d1"); len(left) > 0 {
		t.Fatalf("%s keeps %v", other(src), left)
	}
}

// testMigrateCold stops d1, writes a pattern into its local disk, and
// moves it cold: the disk's data arrives, d1 is stopped on the target,
// the source keeps nothing, and d1 boots there.
func testMigrateCold(t *testing.T, cl *qcluster) {
	src := cl.vm(t, "d1").Status.Host
	dst := other(src)
	cl.s.cli(t, "vm", "stop", "d1", "--wait", "--timeout", "2m")
	disk := func(host string) string {
		files, _ := filepath.Glob(filepath.Join(cl.state[host], "qemu", "pools", "default", vmIDOf("d1"), "*.qcow2"))
		if len(files) != 1 {
			t.Fatalf("d1's disk layers on %s: %v", host, files)
		}
		return files[0]
	}
	qemuIO(t, disk(src), "write -P 0x5a 1M 2M")
	var m model.Migration
	mustJSON(t, cl.s.cli(t, "vm", "migrate", "d1", "--to", dst, "--wait", "--timeout", "3m", "-o", "json"), &m)
	t.Logf("d1 moved cold: %+v", m.Result)
	if m.Phase != model.MigrationCompleted || m.Mode != model.MigrationCold || m.Result == nil || m.Result.DiskBytes < 2<<20 {
		t.Fatalf("cold migration: %s %s, result %+v", m.Phase, m.Mode, m.Result)
	}
	vm := cl.vm(t, "d1")
	if vm.Status.Host != dst || vm.Status.Phase != model.PhaseStopped {
		t.Fatalf("d1 after the cold move: %s on %q", vm.Status.Phase, vm.Status.Host)
	}
	eventually(t, "no QEMU of the stopped d1 on "+dst, 30*time.Second, func() bool {
		return len(qemuProcs(cl.state[dst])[vmIDOf("d1")]) == 0
	})
	qemuIO(t, disk(dst), "read -P 0x5a 1M 2M")
	cl.assertClean(t, src, "d1")
	cl.s.cli(t, "vm", "start", "d1", "--wait", "--timeout", "2m")
	cl.waitTick(t, dst, "d1", 0)
}

// qemuIO runs a qemu-io command on a qcow2 file no QEMU has open.
func qemuIO(t *testing.T, file, cmd string) {
	t.Helper()
	out, err := exec.Command("qemu-io", "-f", "qcow2", "-c", cmd, file).CombinedOutput()
	if err != nil || strings.Contains(string(out), "Pattern verification failed") {
		t.Fatalf("qemu-io -c %q %s: %v\n%s", cmd, file, err, out)
	}
}

// waitSerial waits for a marker in a serial log.
func waitSerial(t *testing.T, path, marker string) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), marker) {
			return
		}
		if time.Now().After(deadline) {
			if len(b) > 3000 {
				b = b[len(b)-3000:]
			}
			t.Fatalf("no %s in %s after 60s; its tail:\n%s", marker, path, b)
		}
	}
}

// testHostsClean deletes the last VM and checks that both hosts hold no
// QEMU, VM directory or disk, and that every migration ended.
func testHostsClean(t *testing.T, cl *qcluster) {
	cl.s.cli(t, "vm", "delete", "d1", "--wait", "--timeout", "2m")
	for _, h := range qhosts {
		cl.assertClean(t, h, "d1")
		if ps := qemuProcs(cl.state[h]); len(ps) > 0 {
			t.Errorf("%s still runs QEMU: %v", h, ps)
		}
		for _, d := range []string{filepath.Join(cl.state[h], "qemu", "vms"), filepath.Join(cl.state[h], "qemu", "pools", "default")} {
			if ents, _ := os.ReadDir(d); len(ents) > 0 {
				t.Errorf("%s: %s holds %d entries", h, d, len(ents))
			}
		}
	}
	if ents, _ := os.ReadDir(cl.shared); len(ents) > 0 {
		t.Errorf("the shared pool holds %d entries", len(ents))
	}
	var ms []model.Migration
	mustJSON(t, cl.s.cli(t, "migration", "list", "-A", "-o", "json"), &ms)
	for _, m := range ms {
		if !m.Phase.Final() {
			t.Errorf("migration %s of %s is still %s", m.Name, m.VM, m.Phase)
		}
	}
	t.Logf("%d migrations, all final", len(ms))
}
