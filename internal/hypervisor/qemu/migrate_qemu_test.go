package qemu

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/hypervisor/qemu/guest"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/qmp"
)

// migPair makes a source and a target driver on fresh state dirs, with
// TLS material from one test CA when withTLS, sharing pool "default" when
// shared is set.
func migPair(t testing.TB, withTLS bool, shared string) (src, dst *Driver) {
	t.Helper()
	group := testCgroup(t, "")
	return migPairIn(t, withTLS, shared, group, group)
}

// migPairIn is migPair with the VMs' groups of the two hosts named: one
// machine's in the benchmarks, two (as on two hosts) where a test looks
// at one host's weights.
// tweak, when given, changes both drivers' configuration before New.
func migPairIn(t testing.TB, withTLS bool, shared, srcGroup, dstGroup string, tweak ...func(*Config)) (src, dst *Driver) {
	t.Helper()
	var dirs map[string]string
	if withTLS {
		dirs = testCA(t, "src", "dst")
	}
	groups := map[string]string{"src": srcGroup, "dst": dstGroup}
	mk := func(host string) *Driver {
		cfg := testConfig(t, "")
		cfg.CgroupName = groups[host]
		cfg.MigrationTLSDir = dirs[host]
		if shared != "" {
			cfg.Pools = map[string]string{"default": shared}
		}
		for _, f := range tweak {
			f(&cfg)
		}
		return newDriver(t, cfg)
	}
	return mk("src"), mk("dst")
}

// testCgroup names a VMs' group of this test process's own: a driver
// that another process starts on the machine resets the weight of its
// group ("vpool"), which would end this test's migration boosts early.
// The group goes at the end of the test, after the drivers' clean-up.
func testCgroup(t testing.TB, suffix string) string {
	name := fmt.Sprintf("vpool-test-%d%s", os.Getpid(), suffix)
	t.Cleanup(func() {
		if cg, err := detectCgroups(name, 0); err == nil { // 0: finds, sets no weight
			for _, dir := range cg.dirs("") {
				os.Remove(dir)
			}
		}
	})
	return name
}

// bootGuest creates and starts cfg on d and waits for the guest.
func bootGuest(t testing.TB, d *Driver, cfg hypervisor.VMConfig) {
	t.Helper()
	ctx := context.Background()
	mustDo(t, "Create", d.Create(ctx, cfg))
	mustDo(t, "Start", d.Start(ctx, cfg.ID))
	waitReady(t, d, cfg.ID)
}

func pidOf(t testing.TB, d *Driver, id string) int {
	t.Helper()
	v, err := d.get(id)
	mustDo(t, "get", err)
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.proc == nil {
		t.Fatalf("%s has no process", id)
	}
	return v.proc.pid
}

// assertGone checks that d keeps nothing of id: no record, VM directory,
// disk directory it owns, socket or QEMU process.
func assertGone(t testing.TB, d *Driver, id string) {
	t.Helper()
	if _, err := d.get(id); err == nil {
		t.Errorf("%s: the driver still has a record", id)
	}
	if _, err := os.Stat(d.vmDir(id)); err == nil {
		t.Errorf("%s: VM directory %s left behind", id, d.vmDir(id))
	}
	for _, pool := range poolDirs(d.cfg.Pools) {
		dir := filepath.Join(pool, id)
		if !d.ownsDir(dir, id) {
			continue // another host's (shared storage)
		}
		if _, err := os.Stat(dir); err == nil {
			t.Errorf("%s: disk directory %s left behind", id, dir)
		}
	}
	for _, name := range []string{"qmp.sock", "console.sock"} {
		if _, err := os.Stat(d.socketPath(id, name)); err == nil {
			t.Errorf("%s: socket %s left behind", id, name)
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	needle := filepath.Join(d.vmDir(id), "qemu.pid")
	for _, p := range procs {
		if b, err := os.ReadFile(p); err == nil && strings.Contains(string(b), needle) {
			t.Errorf("%s: QEMU still running: %s", id, p)
		}
	}
}

// waitGone waits until d has dropped id by itself.
func waitGone(t testing.TB, d *Driver, id string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if _, err := d.get(id); err != nil {
			return
		}
	}
	t.Fatalf("%s: the target never dropped its copy", id)
}

func TestMigrationTLSWithDiskAndGuestGap(t *testing.T) {
	t.Parallel()
	g := heavy(t)
	src, dst := migPair(t, true, "")
	ctx := context.Background()
	cfg := vmConfig(g, "migtls", "vpool.tickms=100")
	bootGuest(t, src, cfg)
	waitTicks(t, src.SerialLog(cfg.ID), 20) // 2 s of ticks: the stall the host imposes anyway
	base := guest.TickStall(src.SerialLog(cfg.ID), 0)
	addr, err := dst.MigrateIn(ctx, cfg)
	mustDo(t, "MigrateIn", err)
	if !strings.Contains(addr, "tls=127.0.0.1") {
		t.Fatalf("address %s does not ask for TLS", addr)
	}
	// No port in the address is free for another process to take: QEMU
	// already listens on the NBD port, and the memory stream's port is
	// chosen by QEMU later (the old address named a port that the driver
	// had bound and released: "Address already in use" when taken).
	a, err := parseMigAddr(addr)
	mustDo(t, "parse address", err)
	if a.mig != 0 {
		t.Fatalf("address %s names the memory port before QEMU bound it", addr)
	}
	if ln, err := net.Listen("tcp", net.JoinHostPort(a.host, strconv.Itoa(a.nbd))); err == nil {
		ln.Close()
		t.Fatalf("the NBD port %d of %s was free to take", a.nbd, addr)
	}
	var stages []string
	res, err := src.MigrateOut(ctx, cfg.ID, addr, hypervisor.MigrateOptions{}, func(p hypervisor.MigrationProgress) {
		if len(stages) == 0 || stages[len(stages)-1] != p.Stage {
			stages = append(stages, p.Stage)
		}
	})
	mustDo(t, "MigrateOut", err)
	t.Logf("result %+v, stages %v", res, stages)
	// The gap is measured from the guest's ticks (never 0), on one clock,
	// and bounded by QEMU's pause, the default cap and the guest's stall
	// before (guest.CheckGap: a guest that stands still after arriving, as
	// TCG guests did on loaded hosts, fails here; a busy host does not).
	gapErr := guest.CheckGap(res.GuestGap, res.Pause, DefaultDowntimeLimit, guest.Slack(base))
	if !res.TLS || res.RAMBytes == 0 || res.Bytes != res.RAMBytes+res.DiskBytes || gapErr != nil ||
		res.GuestGapBy != hypervisor.GapByGuestTicks {
		var st struct{ Status string }
		var regs, lapic string
		if v, _ := dst.get(cfg.ID); v != nil && v.proc != nil {
			v.proc.qmp.Execute(ctx, "query-status", nil, &st)
			v.proc.qmp.Execute(ctx, "human-monitor-command", qmp.Args{"command-line": "info registers"}, &regs)
			v.proc.qmp.Execute(ctx, "human-monitor-command", qmp.Args{"command-line": "info lapic"}, &lapic)
		}
		waited := time.Now()
		for time.Since(waited) < 90*time.Second && readAll(dst.SerialLog(cfg.ID)) == "" {
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("result %+v (%v); target QEMU %q; first output %s after the migration; registers:\n%s\nlapic:\n%s\nserial log tail:\n%s",
			res, gapErr, st.Status, time.Since(waited).Round(time.Millisecond), regs, lapic, tail(readAll(dst.SerialLog(cfg.ID)), 3000))
	}
	if len(stages) < 3 || stages[0] != hypervisor.MigrationStageDisks || stages[len(stages)-1] != hypervisor.MigrationStageSwitchover {
		t.Fatalf("stages %v", stages)
	}
	// The migration's TLS settings went with it: they would apply to the
	// next outgoing stream, a memory snapshot's included (which failed
	// with "Expected TLS credentials for a client endpoint").
	var params struct {
		TLSCreds string `json:"tls-creds"`
	}
	v, _ := dst.get(cfg.ID)
	mustDo(t, "query-migrate-parameters", v.proc.qmp.Execute(ctx, "query-migrate-parameters", nil, &params))
	if params.TLSCreds != "" {
		t.Fatalf("target tls-creds = %q after the arrival", params.TLSCreds)
	}
	mustDo(t, "memory snapshot after a TLS migration", dst.Snapshot(ctx, cfg.ID, "after-migration", true))
	if _, err := os.Stat(filepath.Join(dst.vmDir(cfg.ID), incomingMarker)); err == nil {
		t.Fatal("incoming marker left after arrival")
	}
	after := waitTicks(t, dst.SerialLog(cfg.ID), 0)
	waitTicks(t, dst.SerialLog(cfg.ID), after)
	assertGone(t, src, cfg.ID)
	// The guest's memory statistics keep coming on the target.
	lastUpdate := func() int64 {
		var r struct {
			LastUpdate int64 `json:"last-update"`
		}
		mustDo(t, "guest-stats", v.proc.qmp.Execute(ctx, "qom-get", qmp.Args{"path": balloonPath, "property": "guest-stats"}, &r))
		return r.LastUpdate
	}
	first := lastUpdate()
	for deadline := time.Now().Add(20 * time.Second); lastUpdate() == first; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the balloon's guest stats stopped after the migration (last update %d)", first)
		}
	}
}

func TestMigrationRefusesPlainToTLSTarget(t *testing.T) {
	t.Parallel()
	g := heavy(t)
	dirs := testCA(t, "dst")
	src := newDriver(t, testConfig(t, ""))
	dcfg := testConfig(t, "")
	dcfg.MigrationTLSDir = dirs["dst"]
	dst := newDriver(t, dcfg)
	ctx := context.Background()
	cfg := vmConfig(g, "migplain")
	bootGuest(t, src, cfg)
	addr, err := dst.MigrateIn(ctx, cfg)
	mustDo(t, "MigrateIn", err)
	_, err = src.MigrateOut(ctx, cfg.ID, addr, hypervisor.MigrateOptions{}, nil)
	if !errors.Is(err, ErrMigrationTLS) {
		t.Fatalf("MigrateOut to a TLS target without material: %v", err)
	}
	// The orchestration's clean-up of the target: Delete.
	mustDo(t, "Delete target", dst.Delete(ctx, cfg.ID))
	assertGone(t, dst, cfg.ID)
	if st := state(t, src, cfg.ID); st != hypervisor.StateRunning {
		t.Fatalf("source state %s", st)
	}
}

// killMidTransfer migrates a dirtying guest slowly and kills one side's
// QEMU once memory moves.
func killMidTransfer(t *testing.T, killSource bool) {
	g := heavy(t)
	src, dst := migPair(t, true, "")
	ctx := context.Background()
	cfg := vmConfig(g, "migkill", "vpool.dirty=48")
	cfg.Spec.Memory = 256 * model.MiB
	bootGuest(t, src, cfg)
	waitDirty(t, src, cfg.ID)
	addr, err := dst.MigrateIn(ctx, cfg)
	mustDo(t, "MigrateIn", err)
	victim, victimID := dst, cfg.ID
	if killSource {
		victim = src
	}
	pid := pidOf(t, victim, victimID)
	var once sync.Once
	opts := hypervisor.MigrateOptions{BandwidthBps: 16 << 20, NoEscalation: true, Timeout: 2 * time.Minute}
	_, err = src.MigrateOut(ctx, cfg.ID, addr, opts, func(p hypervisor.MigrationProgress) {
		if p.Transferred > 8<<20 {
			once.Do(func() { syscall.Kill(pid, syscall.SIGKILL) })
		}
	})
	if err == nil {
		t.Fatal("MigrateOut succeeded although a QEMU was killed")
	}
	t.Logf("MigrateOut: %v", err)
	waitGone(t, dst, cfg.ID) // the target drops its copy by itself
	assertGone(t, dst, cfg.ID)
	if killSource {
		if !strings.Contains(err.Error(), "source QEMU died") {
			t.Errorf("MigrateOut's error does not say the source died: %v", err)
		}
		if st := state(t, src, cfg.ID); st != hypervisor.StateCrashed && st != hypervisor.StateStopped {
			t.Fatalf("source state after its QEMU was killed: %s", st)
		}
		mustDo(t, "Delete source", src.Delete(ctx, cfg.ID))
		assertGone(t, src, cfg.ID)
		return
	}
	if st := state(t, src, cfg.ID); st != hypervisor.StateRunning {
		t.Fatalf("source state after the target died: %s", st)
	}
	// The source is clean for the next attempt: no migration parameters
	// or capabilities left that would leak into a memory snapshot.
	v, _ := src.get(cfg.ID)
	var caps []struct {
		Capability string `json:"capability"`
		State      bool   `json:"state"`
	}
	mustDo(t, "caps", v.proc.qmp.Execute(ctx, "query-migrate-capabilities", nil, &caps))
	for _, c := range caps {
		if c.State && (c.Capability == "postcopy-ram" || c.Capability == "auto-converge") {
			t.Errorf("capability %s left on", c.Capability)
		}
	}
	if err := v.proc.qmp.Execute(ctx, "query-block-jobs", nil, nil); err != nil && !qmp.IsClass(err, "") {
		t.Fatal(err)
	}
	// No NBD client node left: the next migration would fail to add it.
	var nodes []struct {
		NodeName string `json:"node-name"`
	}
	mustDo(t, "nodes", v.proc.qmp.Execute(ctx, "query-named-block-nodes", nil, &nodes))
	for _, n := range nodes {
		if strings.HasPrefix(n.NodeName, "nbd-") {
			t.Errorf("NBD client node %s left on the source", n.NodeName)
		}
	}
}

func TestMigrationKillTarget(t *testing.T) { t.Parallel(); killMidTransfer(t, false) }
func TestMigrationKillSource(t *testing.T) { t.Parallel(); killMidTransfer(t, true) }

func TestMigrationSharedStorage(t *testing.T) {
	t.Parallel()
	g := heavy(t)
	shared := shortTempDir(t)
	src, dst := migPair(t, false, shared)
	ctx := context.Background()
	cfg := vmConfig(g, "migshared", "vpool.tick=1")
	bootGuest(t, src, cfg)
	addr, err := dst.MigrateIn(ctx, cfg)
	mustDo(t, "MigrateIn", err)
	res, err := src.MigrateOut(ctx, cfg.ID, addr, hypervisor.MigrateOptions{}, nil)
	mustDo(t, "MigrateOut", err)
	t.Logf("result %+v", res)
	if len(res.SharedDisks) != 1 || res.SharedDisks[0] != "root" || res.DiskBytes != 0 {
		t.Fatalf("shared disks %v, disk bytes %d", res.SharedDisks, res.DiskBytes)
	}
	file := filepath.Join(shared, cfg.ID, "root.0.qcow2")
	if _, err := os.Stat(file); err != nil {
		t.Fatalf("the shared disk went with the source: %v", err)
	}
	assertOwner(t, dst, shared, cfg.ID)
	waitTicks(t, dst.SerialLog(cfg.ID), waitTicks(t, dst.SerialLog(cfg.ID), 0))
	assertGone(t, src, cfg.ID)
	deleteOwner(t, dst, cfg.ID, file)
}

// assertOwner fails unless d owns id's disks in the shared pool.
func assertOwner(t *testing.T, d *Driver, shared, id string) {
	t.Helper()
	o, ok, err := readOwner(filepath.Join(shared, id))
	if err != nil || !ok || o.Host != d.HostID() || o.VM != id || o.Epoch < 2 {
		t.Fatalf("owner after migration: %+v %v %v, want host %s, VM %s, epoch ≥ 2", o, ok, err, d.HostID(), id)
	}
}

// deleteOwner deletes id on its new owner d, which must remove the shared
// disk file.
func deleteOwner(t *testing.T, d *Driver, id, file string) {
	t.Helper()
	mustDo(t, "Delete", d.Delete(context.Background(), id))
	if _, err := os.Stat(file); err == nil {
		t.Fatal("Delete on the new owner left the shared disk")
	}
}

func TestMigrationSharedStorageFailureKeepsDisk(t *testing.T) {
	t.Parallel()
	g := heavy(t)
	shared := shortTempDir(t)
	src, dst := migPair(t, false, shared)
	ctx := context.Background()
	cfg := vmConfig(g, "migshfail")
	bootGuest(t, src, cfg)
	_, err := dst.MigrateIn(ctx, cfg)
	mustDo(t, "MigrateIn", err)
	// The orchestration gives up before MigrateOut: Delete on the target
	// must leave the source's shared disk alone.
	mustDo(t, "Delete target", dst.Delete(ctx, cfg.ID))
	assertGone(t, dst, cfg.ID)
	if _, err := os.Stat(filepath.Join(shared, cfg.ID, "root.0.qcow2")); err != nil {
		t.Fatalf("the target's Delete removed the source's shared disk: %v", err)
	}
	if st := state(t, src, cfg.ID); st != hypervisor.StateRunning {
		t.Fatalf("source state %s", st)
	}
}

func TestMigrationPostCopy(t *testing.T) {
	t.Parallel()
	g := heavy(t)
	src, dst := migPair(t, true, "")
	ctx := context.Background()
	cfg := vmConfig(g, "migpost", "vpool.tick=1", "vpool.dirty=64")
	cfg.Spec.Memory = 256 * model.MiB
	bootGuest(t, src, cfg)
	waitDirty(t, src, cfg.ID)
	addr, err := dst.MigrateIn(ctx, cfg)
	mustDo(t, "MigrateIn", err)
	// A 1 ms downtime limit never converges for a guest rewriting 64 MiB
	// at 32 MiB/s (bandwidth not raisable here): a VM that allows
	// post-copy goes there in one step rather than being throttled hard.
	opts := hypervisor.MigrateOptions{DowntimeLimit: time.Millisecond, BandwidthBps: 32 << 20, MaxBandwidthBps: 32 << 20,
		StageTimeout: 3 * time.Second, AllowPostCopy: true}
	// QEMU cannot combine post-copy with multifd: asking for both is
	// refused before anything moves.
	withChannels := opts
	withChannels.MultifdChannels = 2
	if _, err := src.MigrateOut(ctx, cfg.ID, addr, withChannels, nil); !errors.Is(err, hypervisor.ErrUnsupported) || !strings.Contains(err.Error(), "post-copy") {
		t.Fatalf("MigrateOut with post-copy and 2 channels = %v; want ErrUnsupported naming post-copy", err)
	}
	res, err := src.MigrateOut(ctx, cfg.ID, addr, opts, nil)
	mustDo(t, "MigrateOut", err)
	t.Logf("result %+v", res)
	if res.MultifdChannels != 1 {
		t.Errorf("post-copy allowed: %d multifd channels, want a single stream", res.MultifdChannels)
	}
	if !res.PostCopy || res.Stage != hypervisor.MigrationStagePostCopy || len(res.Notes) == 0 || !strings.HasPrefix(res.Notes[0], "postcopy: ") {
		t.Fatalf("result %+v, want post-copy reached in the first escalation", res)
	}
	waitTicks(t, dst.SerialLog(cfg.ID), waitTicks(t, dst.SerialLog(cfg.ID), 0))
	assertGone(t, src, cfg.ID)
}

func TestUnfinishedIncomingDroppedAtStart(t *testing.T) {
	t.Parallel()
	g := heavy(t)
	dir := shortTempDir(t)
	cfgD := testConfig(t, dir)
	d1, err := New(cfgD)
	mustDo(t, "New", err)
	cfg := vmConfig(g, "migorphan")
	_, err = d1.MigrateIn(context.Background(), cfg)
	mustDo(t, "MigrateIn", err)
	d1.Close() // the agent dies mid-migration; QEMU lives on
	d2 := newDriver(t, cfgD)
	assertGone(t, d2, cfg.ID)
}

// waitDirty waits until the guest's memory dirtier runs.
func waitDirty(t testing.TB, d *Driver, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := guest.WaitFor(ctx, d.SerialLog(id), "DIRTY 1"); err != nil {
		b, _ := os.ReadFile(d.SerialLog(id))
		t.Fatalf("the dirtier did not start: %v\n%s", err, tail(string(b), 1500))
	}
}

// A VM running one versioned machine type is refused by a target that
// runs another, before anything moves.
func TestMigrationRefusesOtherMachineType(t *testing.T) {
	t.Parallel()
	g := heavy(t)
	scfg := testConfig(t, "")
	scfg.Machine = "pc-q35-7.1" // older than the newest of QEMU 7.2 and later
	src, dst := newDriver(t, scfg), newDriver(t, testConfig(t, ""))
	ctx := context.Background()
	if inv, err := src.Inventory(ctx); err != nil || inv.Machine != "pc-q35-7.1" {
		t.Fatalf("source inventory machine %q (%v), want pc-q35-7.1", inv.Machine, err)
	}
	newest, err := dst.Inventory(ctx)
	mustDo(t, "Inventory", err)
	if newest.Machine == "q35" || !strings.HasPrefix(newest.Machine, "pc-q35-") {
		t.Fatalf("q35 resolved to %q, want a versioned pc-q35-X.Y", newest.Machine)
	}
	cfg := vmConfig(g, "migmachine")
	bootGuest(t, src, cfg)
	v, _ := src.get(cfg.ID)
	if got := runMachineType(v.rec.Run); got != "pc-q35-7.1" {
		t.Fatalf("the VM runs machine type %q, want pc-q35-7.1", got)
	}
	addr, err := dst.MigrateIn(ctx, cfg)
	mustDo(t, "MigrateIn", err)
	_, err = src.MigrateOut(ctx, cfg.ID, addr, hypervisor.MigrateOptions{}, nil)
	if err == nil || !strings.Contains(err.Error(), "--machine pc-q35-7.1") {
		t.Fatalf("MigrateOut to a %s target: %v, want a refusal naming --machine pc-q35-7.1", newest.Machine, err)
	}
	mustDo(t, "Delete target", dst.Delete(ctx, cfg.ID))
	assertGone(t, dst, cfg.ID)
	if st := state(t, src, cfg.ID); st != hypervisor.StateRunning {
		t.Fatalf("source state %s", st)
	}
}
