package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/hypervisor/qemu/guest"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/testenv"
)

// ticks returns the highest TICK number in a serial log (0 for none).
func ticks(path string) int {
	n := 0
	for _, l := range guest.Lines(path, "TICK ") {
		f := strings.Fields(l[strings.Index(l, "TICK "):])
		if len(f) >= 2 {
			if v, err := strconv.Atoi(f[1]); err == nil && v > n {
				n = v
			}
		}
	}
	return n
}

// waitTicks waits until the guest has ticked past n.
func waitTicks(t *testing.T, path string, n int) int {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if got := ticks(path); got > n {
			return got
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("guest did not tick past %d (log %s)", n, path)
	return 0
}

func TestGuestLifecycle(t *testing.T) {
	t.Parallel()
	g := heavy(t)
	d := newDriver(t, testConfig(t, ""))
	ctx := context.Background()
	cfg := vmConfig(g, "life", "vpool.tick=1")
	mustDo(t, "Create", d.Create(ctx, cfg))
	t0 := time.Now()
	mustDo(t, "Start", d.Start(ctx, cfg.ID))
	line := waitReady(t, d, cfg.ID)
	t.Logf("create-to-ready %v (accel %s, network %s): %s", time.Since(t0).Round(time.Millisecond), d.Accel(), d.Network(), line)

	log := d.SerialLog(cfg.ID)
	n := waitTicks(t, log, 0)
	mustDo(t, "Pause", d.Pause(ctx, cfg.ID))
	if st := state(t, d, cfg.ID); st != hypervisor.StatePaused {
		t.Fatalf("state %s after Pause", st)
	}
	paused := ticks(log)
	time.Sleep(2500 * time.Millisecond)
	if got := ticks(log); got > paused+1 { // one tick may be in flight
		t.Fatalf("paused guest ticked from %d to %d", paused, got)
	}
	mustDo(t, "Resume", d.Resume(ctx, cfg.ID))
	waitTicks(t, log, max(n, paused)+1)

	mustDo(t, "Stop", d.Stop(ctx, cfg.ID, 20*time.Second))
	if got := guest.Lines(log, guest.PoweroffMarker); len(got) == 0 {
		t.Errorf("graceful stop did not go through the guest's power button handling")
	}
	if st := state(t, d, cfg.ID); st != hypervisor.StateStopped {
		t.Fatalf("state %s after Stop", st)
	}
}

func TestStopFallsBackWhenGuestIgnoresPowerButton(t *testing.T) {
	t.Parallel()
	g := heavy(t)
	d := newDriver(t, testConfig(t, ""))
	ctx := context.Background()
	cfg := vmConfig(g, "deaf", "vpool.acpi=0")
	mustDo(t, "Create", d.Create(ctx, cfg))
	mustDo(t, "Start", d.Start(ctx, cfg.ID))
	waitReady(t, d, cfg.ID)
	mustDo(t, "Stop", d.Stop(ctx, cfg.ID, time.Second))
	if st := state(t, d, cfg.ID); st != hypervisor.StateStopped {
		t.Fatalf("state %s after Stop", st)
	}
	if len(guest.Lines(d.SerialLog(cfg.ID), guest.PoweroffMarker)) != 0 {
		t.Fatal("guest powered off although it ignores the button")
	}
}

func TestReattachAndOrphanCleanup(t *testing.T) {
	t.Parallel()
	g := heavy(t)
	cfgD := testConfig(t, shortTempDir(t))
	d := newDriver(t, cfgD)
	ctx := context.Background()
	keep, orphan := vmConfig(g, "keep"), vmConfig(g, "orphan")
	for _, c := range []hypervisor.VMConfig{keep, orphan} {
		mustDo(t, "Create", d.Create(ctx, c))
		mustDo(t, "Start", d.Start(ctx, c.ID))
	}
	waitReady(t, d, keep.ID)
	infos, err := d.List(ctx)
	mustDo(t, "List", err)
	pid := infos[0].Pid
	// The orphan loses its record; a stray disk dir and VM dir appear.
	mustDo(t, "remove record", os.Remove(d.recordPath(orphan.ID)))
	stray := filepath.Join(d.cfg.Pools["default"], "test.stray")
	os.MkdirAll(stray, 0o700)
	os.WriteFile(filepath.Join(stray, ownerFile), []byte(d.cfg.StateDir+"\n"), 0o600)
	os.MkdirAll(d.vmDir("test.stray"), 0o700)
	foreign := filepath.Join(d.cfg.Pools["default"], "test.foreign") // another driver's: untouched
	os.MkdirAll(foreign, 0o700)
	orphanPids := d.ourQEMUs()[orphan.ID]
	d.Close() // the agent dies; QEMUs live on

	d2 := newDriver(t, cfgD)
	infos, err = d2.List(ctx)
	mustDo(t, "List", err)
	if len(infos) != 1 || infos[0].ID != keep.ID || infos[0].State != hypervisor.StateRunning || infos[0].Pid != pid {
		t.Fatalf("after re-attach List = %+v, want %s running as pid %d", infos, keep.ID, pid)
	}
	for _, p := range orphanPids {
		deadline := time.Now().Add(10 * time.Second)
		for pidAlive(p) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if pidAlive(p) {
			t.Errorf("orphan QEMU %d still alive", p)
		}
	}
	for _, dir := range []string{stray, d.vmDir("test.stray"), d.vmDir(orphan.ID)} {
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("orphan %s not removed", dir)
		}
	}
	if _, err := os.Stat(foreign); err != nil {
		t.Errorf("a directory this driver does not own was removed: %v", err)
	}
	// The re-attached VM is fully operable.
	st, err := d2.Stats(ctx, keep.ID)
	if err != nil || st.CPUTimeNs <= 0 {
		t.Fatalf("Stats after re-attach = %+v, %v", st, err)
	}
	mustDo(t, "Stop", d2.Stop(ctx, keep.ID, 20*time.Second))
}

// cpuRate measures the QEMU process's CPU use in cores over window.
func cpuRate(t *testing.T, d *Driver, id string, window time.Duration) float64 {
	t.Helper()
	ctx := context.Background()
	a, err := d.Stats(ctx, id)
	mustDo(t, "Stats", err)
	time.Sleep(window)
	b, err := d.Stats(ctx, id)
	mustDo(t, "Stats", err)
	return float64(b.CPUTimeNs-a.CPUTimeNs) / float64(b.At.Sub(a.At).Nanoseconds())
}

// readRate measures the guest's disk reads in bytes/s over window.
func readRate(t *testing.T, d *Driver, id string, window time.Duration) float64 {
	t.Helper()
	ctx := context.Background()
	a, err := d.Stats(ctx, id)
	mustDo(t, "Stats", err)
	time.Sleep(window)
	b, err := d.Stats(ctx, id)
	mustDo(t, "Stats", err)
	return float64(b.DiskRead-a.DiskRead) / b.At.Sub(a.At).Seconds()
}

func TestResourceControlsTakeEffect(t *testing.T) {
	g := heavy(t)
	d := newDriver(t, testConfig(t, ""))
	if d.cg == nil || !d.cg.cpuC {
		testenv.SkipOrFail(t, "no writable cgroup cpu controller here")
	}
	ctx := context.Background()
	// The guest burns CPU rewriting memory and reads its disk in a loop.
	cfg := vmConfig(g, "ctl", "vpool.dirty=8", "vpool.diskread=1")
	mustDo(t, "Create", d.Create(ctx, cfg))
	mustDo(t, "Start", d.Start(ctx, cfg.ID))
	waitReady(t, d, cfg.ID)

	t.Run("cpu quota", func(t *testing.T) {
		free := cpuRate(t, d, cfg.ID, 3*time.Second)
		mustDo(t, "SetControls", d.SetControls(ctx, cfg.ID, model.Controls{CPULimit: 100}))
		time.Sleep(500 * time.Millisecond)
		capped := cpuRate(t, d, cfg.ID, 3*time.Second)
		t.Logf("QEMU CPU: %.2f cores free, %.2f cores under a 0.1-CPU quota", free, capped)
		if capped > 0.2 || capped > free/2 {
			t.Errorf("quota did not bite: %.2f cores before, %.2f after", free, capped)
		}
		mustDo(t, "SetControls", d.SetControls(ctx, cfg.ID, model.Controls{}))
	})
	t.Run("memory limit of the guest's size", func(t *testing.T) {
		// The limit is the guest's; QEMU's own overhead comes on top, so
		// the write is accepted and the QEMU keeps running under it.
		mustDo(t, "SetControls", d.SetControls(ctx, cfg.ID, model.Controls{MemoryLimit: cfg.Spec.Memory}))
		dir := filepath.Join(d.cg.mem, cfg.ID)
		file := "memory.limit_in_bytes"
		if d.cg.v2 {
			file = "memory.max"
		}
		if got, want := strings.TrimSpace(readAll(filepath.Join(dir, file))), strconv.FormatInt(int64(cfg.Spec.Memory+d.cfg.VMOverhead), 10); got != want {
			t.Errorf("%s = %s, want the guest's memory plus the overhead, %s", file, got, want)
		}
		time.Sleep(2 * time.Second)
		if st := state(t, d, cfg.ID); st != hypervisor.StateRunning {
			t.Fatalf("under a memory limit of its size the VM is %s", st)
		}
		mustDo(t, "SetControls", d.SetControls(ctx, cfg.ID, model.Controls{}))
	})
	t.Run("disk throttle", func(t *testing.T) {
		free := readRate(t, d, cfg.ID, 3*time.Second)
		const limit = 4 << 20
		mustDo(t, "SetControls", d.SetControls(ctx, cfg.ID, model.Controls{DiskBps: limit}))
		time.Sleep(time.Second)
		throttled := readRate(t, d, cfg.ID, 4*time.Second)
		t.Logf("guest disk reads: %.1f MiB/s free, %.1f MiB/s throttled to 4 MiB/s", free/(1<<20), throttled/(1<<20))
		if throttled > 1.5*limit || free < 2*throttled {
			t.Errorf("throttle did not bite: %.1f MiB/s before, %.1f after (limit 4)", free/(1<<20), throttled/(1<<20))
		}
	})
}

// makeBaseImage writes a sparse 2 GiB qcow2 image with some data in it.
func makeBaseImage(t testing.TB, d *Driver, dir string) string {
	t.Helper()
	raw := filepath.Join(dir, "base.raw")
	f, err := os.Create(raw)
	mustDo(t, "create", err)
	mustDo(t, "truncate", f.Truncate(2<<30))
	chunk := []byte(strings.Repeat("vpool-base-image ", 1<<16))
	for _, off := range []int64{0, 512 << 20, 1 << 30} {
		_, err := f.WriteAt(chunk, off)
		mustDo(t, "write", err)
	}
	f.Close()
	base := filepath.Join(dir, "base.qcow2")
	_, err = d.img(context.Background(), nil, "convert", "-O", "qcow2", raw, base)
	mustDo(t, "convert", err)
	os.Remove(raw)
	return base
}

func TestLinkedClone(t *testing.T) {
	t.Parallel()
	guest.Require(t)
	d := newDriver(t, testConfig(t, ""))
	// Readable by every VM user in place, as the agent's image cache is
	// (a base they cannot read is copied first: vmuser.go).
	images := shortTempDir(t)
	mustDo(t, "chmod", os.Chmod(images, 0o755))
	base := makeBaseImage(t, d, images)
	ctx := context.Background()
	cfg := hypervisor.VMConfig{ID: "test.clone", Name: "clone", Project: "test",
		Spec:  model.VMSpec{VCPUs: 1, Memory: 128 * model.MiB, Disks: []model.Disk{{Name: "root", Size: model.GiB}}},
		Image: &hypervisor.Image{Name: "base", Disk: base, Format: "qcow2"}}
	t0 := time.Now()
	mustDo(t, "Create", d.Create(ctx, cfg))
	took := time.Since(t0)
	v, _ := d.get(cfg.ID)
	layer := v.rec.Disks[0].Layers[0].File
	ii, err := d.imageInfo(ctx, layer)
	mustDo(t, "info", err)
	used := diskUsage(v.rec.Disks)
	t.Logf("linked clone of a 2 GiB image: created in %v, %d KiB on disk", took.Round(time.Millisecond), used>>10)
	if ii.VirtualSize != 2<<30 || ii.Backing != base {
		t.Fatalf("clone is %d bytes over %q, want 2GiB over %s", ii.VirtualSize, ii.Backing, base)
	}
	if used > 1<<20 {
		t.Fatalf("clone takes %d bytes: not thin", used)
	}
	// Grow the clone offline; shrinking is refused.
	mustDo(t, "ResizeDisk", d.ResizeDisk(ctx, cfg.ID, "root", 3*model.GiB))
	if ii, err := d.imageInfo(ctx, layer); err != nil || ii.VirtualSize != 3<<30 {
		t.Fatalf("after ResizeDisk the clone is %d bytes (%v), want 3GiB", ii.VirtualSize, err)
	}
	if err := d.ResizeDisk(ctx, cfg.ID, "root", model.GiB); !errors.Is(err, hypervisor.ErrUnsupported) {
		t.Fatalf("shrinking a disk: %v, want ErrUnsupported", err)
	}
	// A bad image base fails cleanly.
	bad := cfg
	bad.ID, bad.Name = "test.bad", "bad"
	bad.Image = &hypervisor.Image{Disk: filepath.Join(t.TempDir(), "missing.qcow2")}
	if err := d.Create(ctx, bad); !errors.Is(err, ErrBadImage) {
		t.Fatalf("Create over a missing image: %v, want ErrBadImage", err)
	}
	if _, err := os.Stat(d.vmDir(bad.ID)); !os.IsNotExist(err) {
		t.Fatal("failed Create left its VM directory")
	}
}

func TestEncryptedDisk(t *testing.T) {
	t.Parallel()
	g := heavy(t)
	d := newDriver(t, testConfig(t, ""))
	ctx := context.Background()
	cfg := vmConfig(g, "luks")
	cfg.Spec.Disks = []model.Disk{{Name: "root", Size: 256 * model.MiB, Encrypted: true}}
	mustDo(t, "Create", d.Create(ctx, cfg))
	key, err := d.keys.VolumeKey(ctx, cfg.ID, "root", false)
	mustDo(t, "VolumeKey", err)
	v, _ := d.get(cfg.ID)
	out, err := d.img(ctx, nil, "info", "-U", v.rec.Disks[0].Layers[0].File)
	mustDo(t, "info", err)
	if !strings.Contains(string(out), "encrypted: yes") {
		t.Fatalf("disk is not encrypted:\n%s", out)
	}
	mustDo(t, "Start", d.Start(ctx, cfg.ID))
	waitReady(t, d, cfg.ID)
	infos, _ := d.List(ctx)
	argv, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", infos[0].Pid))
	for _, f := range []string{string(argv), readAll(d.recordPath(cfg.ID)), readAll(filepath.Join(d.vmDir(cfg.ID), "qemu.log"))} {
		if strings.Contains(f, string(key)) {
			t.Fatal("the volume key leaked into argv, the record or the log")
		}
	}
	// Encrypted layers through a live snapshot and an offline merge.
	mustDo(t, "Snapshot", d.Snapshot(ctx, cfg.ID, "s1", false))
	mustDo(t, "Stop", d.Stop(ctx, cfg.ID, 20*time.Second))
	mustDo(t, "DeleteSnapshot", d.DeleteSnapshot(ctx, cfg.ID, "s1"))
	if n := len(v.rec.Disks[0].Layers); n != 1 {
		t.Fatalf("%d layers after merging the only snapshot, want 1", n)
	}
	mustDo(t, "Start", d.Start(ctx, cfg.ID))
	waitReady(t, d, cfg.ID)
	// Live growth of the encrypted disk.
	mustDo(t, "ResizeDisk", d.ResizeDisk(ctx, cfg.ID, "root", 512*model.MiB))
	if ii, err := d.imageInfo(ctx, v.rec.Disks[0].layer(v.rec.Disks[0].Active).File); err != nil || ii.VirtualSize != 512<<20 {
		t.Fatalf("after a live ResizeDisk the disk is %d bytes (%v), want 512MiB", ii.VirtualSize, err)
	}
}

func readAll(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

func TestLiveResize(t *testing.T) {
	t.Parallel()
	g := heavy(t)
	d := newDriver(t, testConfig(t, ""))
	ctx := context.Background()
	cfg := vmConfig(g, "grow", "ignore_loglevel")
	mustDo(t, "Create", d.Create(ctx, cfg))
	mustDo(t, "Start", d.Start(ctx, cfg.ID))
	waitReady(t, d, cfg.ID)
	mustDo(t, "Resize up", d.Resize(ctx, cfg.ID, 2, 256*model.MiB))
	// The 6.1 guest kernel takes about 12 s past "Will online and init
	// hotplugged CPU" before the online write returns, even on an idle
	// TCG host, and a loaded CI machine stretched that past 30 s. The
	// bound only catches a guest that never brings the vCPU up; the kernel
	// messages (ignore_loglevel) land in the failure output.
	wctx, cancel := context.WithTimeout(ctx, 120*time.Second)
	defer cancel()
	start := time.Now()
	for _, marker := range []string{"VPOOL-GUEST-CPU-ONLINE", "VPOOL-GUEST-MEM-ONLINE"} {
		if _, err := guest.WaitFor(wctx, d.SerialLog(cfg.ID), marker); err != nil {
			t.Fatalf("guest did not bring hot-added resources online: %v\nserial log tail:\n%s", err, tail(readAll(d.SerialLog(cfg.ID)), 3000))
		}
		t.Logf("%s after %s", marker, time.Since(start).Round(time.Millisecond))
	}
	mustDo(t, "Resize balloon down", d.Resize(ctx, cfg.ID, 2, 192*model.MiB))
	err := d.Resize(ctx, cfg.ID, 2, 4*model.GiB)
	if !errors.Is(err, hypervisor.ErrNeedsRestart) {
		t.Fatalf("Resize past maxmem: %v, want ErrNeedsRestart", err)
	}
	infos, _ := d.List(ctx)
	if infos[0].VCPUs != 2 || infos[0].Memory != 192*model.MiB {
		t.Fatalf("after resizes the VM lists %d/%s, want 2/192MiB", infos[0].VCPUs, infos[0].Memory)
	}
	// The hot-added vCPU can go again (the guest offlines and ejects it).
	mustDo(t, "Resize vCPUs down", d.Resize(ctx, cfg.ID, 1, 192*model.MiB))
	if infos, _ := d.List(ctx); infos[0].VCPUs != 1 {
		t.Fatalf("after unplug the VM lists %d vCPUs", infos[0].VCPUs)
	}
	if err := d.Resize(ctx, cfg.ID, 1, 128*model.MiB+64*model.MiB+1*model.MiB); err != nil {
		t.Fatalf("balloon to an odd size: %v", err)
	}
}

func TestMemorySnapshotResumesGuest(t *testing.T) {
	t.Parallel()
	g := heavy(t)
	d := newDriver(t, testConfig(t, ""))
	ctx := context.Background()
	cfg := vmConfig(g, "memsnap", "vpool.tick=1")
	mustDo(t, "Create", d.Create(ctx, cfg))
	mustDo(t, "Start", d.Start(ctx, cfg.ID))
	waitReady(t, d, cfg.ID)
	at := waitTicks(t, d.SerialLog(cfg.ID), 2)
	mustDo(t, "Snapshot", d.Snapshot(ctx, cfg.ID, "m1", true))
	later := waitTicks(t, d.SerialLog(cfg.ID), at+3)
	mustDo(t, "Revert", d.RevertSnapshot(ctx, cfg.ID, "m1"))
	first := waitTicks(t, d.SerialLog(cfg.ID), 0)
	if first > at+2 || first >= later {
		t.Fatalf("after revert the guest ticked %d; snapshot was at tick %d, last before revert %d", first, at, later)
	}
	if len(guest.Lines(d.SerialLog(cfg.ID), guest.ReadyMarker)) != 0 {
		t.Fatal("guest rebooted instead of resuming from the memory snapshot")
	}
}

func TestMigrationKeepsGuestRunning(t *testing.T) {
	t.Parallel()
	g := heavy(t)
	src := newDriver(t, testConfig(t, ""))
	dst := newDriver(t, testConfig(t, ""))
	ctx := context.Background()
	cfg := vmConfig(g, "mig", "vpool.tick=1")
	mustDo(t, "Create", src.Create(ctx, cfg))
	mustDo(t, "Start", src.Start(ctx, cfg.ID))
	waitReady(t, src, cfg.ID)
	before := waitTicks(t, src.SerialLog(cfg.ID), 1)
	addr, err := dst.MigrateIn(ctx, cfg)
	mustDo(t, "MigrateIn", err)
	var progress int
	res, err := src.MigrateOut(ctx, cfg.ID, addr, hypervisor.MigrateOptions{DowntimeLimit: 100 * time.Millisecond},
		func(hypervisor.MigrationProgress) { progress++ })
	mustDo(t, "MigrateOut", err)
	t.Logf("migrated %d MiB in %v, downtime %v, %d progress reports", res.Bytes>>20, res.Total, res.Downtime, progress)
	after := waitTicks(t, dst.SerialLog(cfg.ID), 0)
	waitTicks(t, dst.SerialLog(cfg.ID), after)
	if after < before {
		t.Fatalf("target guest ticks from %d, source was at %d: not the same guest", after, before)
	}
	if len(guest.Lines(dst.SerialLog(cfg.ID), guest.ReadyMarker)) != 0 {
		t.Fatal("the guest booted on the target instead of arriving")
	}
}

func TestBridgeNetworking(t *testing.T) {
	testenv.MustHaveRoot(t, "taps and bridges")
	t.Parallel()
	g := heavy(t)
	cfgD := testConfig(t, "")
	cfgD.Network, cfgD.Bridge = NetBridge, "vpqtest0"
	d := newDriver(t, cfgD)
	t.Cleanup(func() { ipCmd(context.Background(), "link", "del", "vpqtest0") })
	ctx := context.Background()
	cfg := vmConfig(g, "net", "vpool.net=static", "vpool.ip=10.231.0.2/24")
	mustDo(t, "Create", d.Create(ctx, cfg))
	mustDo(t, "Start", d.Start(ctx, cfg.ID))
	waitReady(t, d, cfg.ID)
	tap := d.tapName(cfg.ID, 0)
	master, err := os.Readlink("/sys/class/net/" + tap + "/master")
	if err != nil || filepath.Base(master) != "vpqtest0" {
		t.Fatalf("tap %s is not on the bridge: %q, %v", tap, master, err)
	}
	mustDo(t, "Kill", d.Kill(ctx, cfg.ID))
	if linkExists(tap) {
		t.Fatalf("tap %s left behind after the VM ended", tap)
	}
}
