package devenv_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/client"
	"github.com/vpool/vpool/internal/devenv"
	"github.com/vpool/vpool/internal/hypervisor/sim"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store/memstore"
)

// TestLifecycleHonesty drives one VM on a host whose guests ignore the
// power button (a hung guest): a graceful stop waits, a forced stop ends
// it at once; a restart moves the start time; a disk grows and its new
// size is reported; and every one of these transitions, a resize, a
// snapshot revert and the deletion leave an event.
func TestLifecycleHonesty(t *testing.T) {
	st := memstore.New()
	t.Cleanup(func() { st.Close() })
	cl := startCluster(t, devenv.ServerConfig{Store: st}, 0)
	cl.hosts["hung"] = sim.MustHost(sim.Config{Name: "hung", CPUs: 8, Memory: 16 * model.GiB, StopDelay: time.Hour})
	cl.startAgent("hung")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl.eventually("host ready", func() bool {
		h, err := cl.c.GetHost(ctx, "hung")
		return err == nil && h.State == model.HostReady
	})
	p := api.DefaultProject
	if _, err := cl.c.CreateVM(ctx, p, api.VMCreateRequest{Name: "web1", Spec: model.VMSpec{
		VCPUs: 1, Memory: 512 * model.MiB, Disks: []model.Disk{{Name: "root", Size: model.GiB}}}}); err != nil {
		t.Fatal(err)
	}
	cl.waitPhase("web1", model.PhaseRunning)

	// Stop: graceful with a long timeout hangs on the guest; forced wins.
	if _, err := cl.c.StopVMWith(ctx, p, "web1", api.VMStopRequest{TimeoutSeconds: 600}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if vm, _ := cl.c.GetVM(ctx, p, "web1"); vm.Status.Phase != model.PhaseStopping {
		t.Fatalf("a guest that ignores the button is %s after a graceful stop began, want stopping", vm.Status.Phase)
	}
	if _, err := cl.c.StopVMWith(ctx, p, "web1", api.VMStopRequest{Force: true}); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if _, err := cl.c.WaitVM(wctx, p, "web1", client.InPhase(model.PhaseStopped), nil); err != nil {
		t.Fatalf("a forced stop did not end the graceful one: %v", err)
	}
	if _, err := cl.c.StopVMWith(ctx, p, "web1", api.VMStopRequest{Force: true, TimeoutSeconds: 5}); !client.HasCode(err, api.CodeInvalidField) {
		t.Fatalf("force with a timeout = %v, want invalid_field", err)
	}

	// Start, then restart: the start time moves.
	if _, err := cl.c.StartVM(ctx, p, "web1"); err != nil {
		t.Fatal(err)
	}
	started := cl.waitPhase("web1", model.PhaseRunning).Status.StartedAt
	vm, err := cl.c.RestartVM(ctx, p, "web1")
	if err != nil {
		t.Fatal(err)
	}
	nonce := vm.Spec.RestartNonce
	vm, err = cl.c.WaitVM(wctx, p, "web1", func(v *model.VM) bool {
		return v.Status.AppliedRestartNonce >= nonce && v.Status.Phase == model.PhaseRunning
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if started == nil || vm.Status.StartedAt == nil || !vm.Status.StartedAt.After(*started) {
		t.Fatalf("start time after a restart: %v, before %v", vm.Status.StartedAt, started)
	}

	// Grow the disk: the host reports the new size; shrinking is refused.
	if _, err := cl.c.ResizeDisk(ctx, p, "web1", "root", 2*model.GiB); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.c.WaitVM(wctx, p, "web1", func(v *model.VM) bool {
		return len(v.Status.Disks) == 1 && v.Status.Disks[0].Size == 2*model.GiB
	}, nil); err != nil {
		t.Fatalf("the grown disk was not reported: %v", err)
	}
	if _, err := cl.c.ResizeDisk(ctx, p, "web1", "root", model.GiB); !client.HasCode(err, api.CodeInvalidField) {
		t.Fatalf("shrink = %v, want invalid_field", err)
	}
	lifecycleOps(t, cl, ctx)
	want := []string{"vm.stop", "vm.stop", "vm.start", "vm.restart", "vm.restarted", "vm.disk-resize", "vm.disk-resized",
		"vm.resize", "vm.resized", "snapshot.ready", "snapshot.revert", "snapshot.reverted", "snapshot.deleting", "snapshot.deleted",
		"vm.deleting", "vm.deleted"}
	evs, err := cl.c.ListEvents(ctx, 0, p)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range evs {
		if e.Kind != "vm.phase" && e.Kind != "vm.created" && e.Kind != "snapshot.created" && !strings.HasPrefix(e.Kind, "project.") {
			got = append(got, e.Kind)
		}
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("events:\n got %v\nwant %v", got, want)
	}
}

// lifecycleOps resizes, snapshots, reverts and deletes the VM, waiting
// for each.
func lifecycleOps(t *testing.T, cl *cluster, ctx context.Context) {
	p := api.DefaultProject
	two := 2
	if _, err := cl.c.PatchVM(ctx, p, "web1", api.VMPatchRequest{VCPUs: &two}); err != nil {
		t.Fatal(err)
	}
	cl.eventually("resize answered", func() bool {
		v, err := cl.c.GetVM(ctx, p, "web1")
		return err == nil && v.Status.Resize != nil && v.Status.Resize.Phase != model.ResizePending
	})
	if _, err := cl.c.CreateSnapshot(ctx, p, "web1", api.SnapshotCreateRequest{Name: "s1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.c.WaitSnapshot(ctx, p, "web1", "s1", model.SnapshotPending); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.c.RevertSnapshot(ctx, p, "web1", "s1"); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.c.WaitSnapshot(ctx, p, "web1", "s1", model.SnapshotReverting); err != nil {
		t.Fatal(err)
	}
	if err := cl.c.DeleteSnapshot(ctx, p, "web1", "s1"); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.c.WaitSnapshot(ctx, p, "web1", "s1", model.SnapshotDeleting); err != nil && !client.IsNotFound(err) {
		t.Fatal(err)
	}
	if err := cl.c.DeleteVM(ctx, p, "web1"); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := cl.c.WaitVM(wctx, p, "web1", client.Gone, nil); err != nil {
		t.Fatal(err)
	}
}
