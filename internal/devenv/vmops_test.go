package devenv_test

import (
	"bufio"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/client"
	"github.com/vpool/vpool/internal/devenv"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store/memstore"
)

// TestVMOperations drives resize, snapshots, disk hot-plug and the serial
// console through the API, the server, a sim agent and its driver.
func TestVMOperations(t *testing.T) {
	st := memstore.New()
	t.Cleanup(func() { st.Close() })
	cl := startCluster(t, devenv.ServerConfig{Store: st}, 1)
	ctx := context.Background()
	p := api.DefaultProject
	if _, err := cl.c.CreateVM(ctx, p, api.VMCreateRequest{Name: "ops", Spec: model.VMSpec{
		VCPUs: 2, Memory: model.GiB, Disks: []model.Disk{{Name: "root", Size: model.GiB}}}}); err != nil {
		t.Fatal(err)
	}
	vm := cl.waitPhase("ops", model.PhaseRunning)
	host := vm.Status.Host

	t.Run("resize", func(t *testing.T) { testResize(t, cl, host) })
	t.Run("snapshots", func(t *testing.T) { testSnapshots(t, cl, host) })
	t.Run("disks", func(t *testing.T) { testDisks(t, cl, host) })
	t.Run("console", func(t *testing.T) { testConsole(t, cl) })

	// Deleting the VM takes its snapshot records with it.
	if _, err := cl.c.CreateSnapshot(ctx, p, "ops", api.SnapshotCreateRequest{Name: "last"}); err != nil {
		t.Fatal(err)
	}
	if err := cl.c.DeleteVM(ctx, p, "ops"); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := cl.c.WaitVM(wctx, p, "ops", func(v *model.VM) bool { return v == nil }, nil); err != nil {
		t.Fatal(err)
	}
	if kvs, _, _ := st.List(ctx, "/vpool/snapshots/"); len(kvs) != 0 {
		t.Errorf("snapshot records left after the VM went: %d", len(kvs))
	}
}

// resizeAndWait patches the VM and waits for its agent's answer.
func resizeAndWait(t *testing.T, cl *cluster, name string, req api.VMPatchRequest) *model.VM {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	vm, err := cl.c.PatchVM(ctx, api.DefaultProject, name, req)
	if err != nil {
		t.Fatal(err)
	}
	op := vm.Status.Resize
	if op == nil || op.Phase != model.ResizePending {
		t.Fatalf("a resize of a placed VM should be pending, got %+v", op)
	}
	vm, err = cl.c.WaitVM(ctx, api.DefaultProject, name, func(v *model.VM) bool {
		return v.Status.Resize != nil && v.Status.Resize.ID == op.ID && v.Status.Resize.Phase != model.ResizePending
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return vm
}

func testResize(t *testing.T, cl *cluster, host string) {
	ctx := context.Background()
	usage := func() model.Usage {
		pv, err := cl.c.GetProject(ctx, api.DefaultProject)
		if err != nil {
			t.Fatal(err)
		}
		return pv.Usage
	}
	before := usage()
	four, two := 4, 2
	big := 2 * model.GiB
	// Growth is live on the sim driver.
	vm := resizeAndWait(t, cl, "ops", api.VMPatchRequest{VCPUs: &four, Memory: &big})
	if vm.Status.Resize.Phase != model.ResizeDone || vm.Spec.VCPUs != 4 {
		t.Fatalf("live grow: %+v, spec %d vCPUs", vm.Status.Resize, vm.Spec.VCPUs)
	}
	if in, _ := cl.driverInfo(host, api.DefaultProject, "ops"); in.VCPUs != 4 || in.Memory != big {
		t.Errorf("driver has %d vCPUs / %s, want 4 / %s", in.VCPUs, in.Memory, big)
	}
	if u := usage(); u.VCPUs != before.VCPUs+2 || u.Memory != before.Memory+model.GiB {
		t.Errorf("usage after grow: %+v (before %+v)", u, before)
	}
	// A shrink of a running VM needs a restart: refused, and the spec goes back.
	vm = resizeAndWait(t, cl, "ops", api.VMPatchRequest{VCPUs: &two})
	if vm.Status.Resize.Phase != model.ResizeRefused || vm.Spec.VCPUs != 4 ||
		!strings.Contains(vm.Status.Resize.Message, "--restart") {
		t.Fatalf("shrink without restart: %+v, spec %d vCPUs", vm.Status.Resize, vm.Spec.VCPUs)
	}
	if u := usage(); u.VCPUs != before.VCPUs+2 {
		t.Errorf("usage after a refused shrink: %+v", u)
	}
	// With a restart it is made while the VM is down.
	vm = resizeAndWait(t, cl, "ops", api.VMPatchRequest{VCPUs: &two, Restart: true})
	if vm.Status.Resize.Phase != model.ResizeDone || vm.Spec.VCPUs != 2 {
		t.Fatalf("shrink with restart: %+v", vm.Status.Resize)
	}
	cl.eventually("restarted with 2 vCPUs", func() bool {
		in, _ := cl.driverInfo(host, api.DefaultProject, "ops")
		v, err := cl.c.GetVM(ctx, api.DefaultProject, "ops")
		return in.VCPUs == 2 && in.State == "running" && err == nil && v.Status.AppliedRestartNonce == v.Spec.RestartNonce
	})
}

func testSnapshots(t *testing.T, cl *cluster, host string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p := api.DefaultProject
	for _, s := range []api.SnapshotCreateRequest{{Name: "disk1"}, {Name: "mem1", Memory: true}} {
		if _, err := cl.c.CreateSnapshot(ctx, p, "ops", s); err != nil {
			t.Fatal(err)
		}
		got, err := cl.c.WaitSnapshot(ctx, p, "ops", s.Name, model.SnapshotPending)
		if err != nil || got.Phase != model.SnapshotReady {
			t.Fatalf("snapshot %s: %v %+v", s.Name, err, got)
		}
	}
	if _, err := cl.c.CreateSnapshot(ctx, p, "ops", api.SnapshotCreateRequest{Name: "disk1"}); !client.HasCode(err, api.CodeConflict) {
		t.Errorf("a second snapshot of the same name: %v, want conflict", err)
	}
	list, err := cl.c.ListSnapshots(ctx, p, "ops")
	if err != nil || len(list) != 2 {
		t.Fatalf("list: %v %+v", err, list)
	}
	// Revert to the disk snapshot of a running VM: the sim driver wants it
	// stopped; the agent stops, reverts and starts it again.
	for _, name := range []string{"disk1", "mem1"} {
		if _, err := cl.c.RevertSnapshot(ctx, p, "ops", name); err != nil {
			t.Fatal(err)
		}
		if got, err := cl.c.WaitSnapshot(ctx, p, "ops", name, model.SnapshotReverting); err != nil || got.RevertedAt == nil {
			t.Fatalf("revert %s: %v %+v", name, err, got)
		}
	}
	cl.waitPhase("ops", model.PhaseRunning)
	if err := cl.c.DeleteSnapshot(ctx, p, "ops", "disk1"); err != nil {
		t.Fatal(err)
	}
	if got, err := cl.c.WaitSnapshot(ctx, p, "ops", "disk1", model.SnapshotDeleting); err != nil || got != nil {
		t.Fatalf("delete: %v %+v", err, got)
	}
	snaps, err := cl.hosts[host].Driver().Snapshots(ctx, p+".ops")
	if err != nil || len(snaps) != 1 || snaps[0].Name != "mem1" {
		t.Errorf("driver snapshots after delete: %v %+v", err, snaps)
	}
}

func testDisks(t *testing.T, cl *cluster, host string) {
	ctx := context.Background()
	p := api.DefaultProject
	pv, _ := cl.c.GetProject(ctx, p)
	if _, err := cl.c.AddDisk(ctx, p, "ops", api.DiskAddRequest{Name: "data", Size: 3 * model.GiB}); err != nil {
		t.Fatal(err)
	}
	hasDisk := func(name string) bool {
		in, _ := cl.driverInfo(host, p, "ops")
		for _, d := range in.Config.Spec.Disks {
			if d.Name == name {
				return true
			}
		}
		return false
	}
	cl.eventually("disk data plugged in", func() bool { return hasDisk("data") })
	if pv2, _ := cl.c.GetProject(ctx, p); pv2.Usage.Disk != pv.Usage.Disk+3*model.GiB {
		t.Errorf("disk usage %s, want %s", pv2.Usage.Disk, pv.Usage.Disk+3*model.GiB)
	}
	if _, err := cl.c.RemoveDisk(ctx, p, "ops", "root"); !client.HasCode(err, api.CodeConflict) {
		t.Errorf("removing the boot disk: %v, want conflict", err)
	}
	if _, err := cl.c.RemoveDisk(ctx, p, "ops", "data"); err != nil {
		t.Fatal(err)
	}
	cl.eventually("disk data unplugged", func() bool { return !hasDisk("data") })
	if pv2, _ := cl.c.GetProject(ctx, p); pv2.Usage.Disk != pv.Usage.Disk {
		t.Errorf("disk usage after removal %s, want %s", pv2.Usage.Disk, pv.Usage.Disk)
	}
}

func testConsole(t *testing.T, cl *cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := cl.c.ConsoleLog(ctx, api.DefaultProject, "ops", 0)
	if err != nil || !strings.Contains(l.Log, "VPOOL-GUEST-READY") {
		t.Fatalf("console log: %v %+v", err, l)
	}
	conn, err := cl.c.Console(ctx, api.DefaultProject, "ops")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("echo hi-from-test\n")); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(conn)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "hi-from-test" {
			return
		}
	}
	t.Fatalf("no echo on the console: %v", sc.Err())
}
