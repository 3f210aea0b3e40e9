package hypervisortest

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
)

// Run runs the acceptance suite against the driver the harness makes.
//
// The contract it checks, beyond the Driver doc comments:
//   - a created VM is listed as stopped; Start makes it running, Stop and
//     Kill make it stopped (Kill may say crashed), Pause/Resume toggle
//     paused; starting a running VM or stopping a stopped one is either a
//     no-op or ErrBadState, never a state change;
//   - every operation on an unknown id wraps ErrNotFound;
//   - Create of an existing id wraps ErrExists and changes nothing;
//   - a failed Create leaves nothing behind (not listed, CheckClean);
//   - Delete (also of a running VM) leaves nothing behind, and the id can
//     be created again;
//   - Resize of a running VM either applies live (listed with the new
//     size) or wraps ErrNeedsRestart and changes nothing; Resize of a
//     stopped VM always applies and holds after the next Start;
//   - SetControls is recorded: List shows the controls in Info.Config;
//   - Stats counters never go down;
//   - a reopened driver lists the VMs of the old one in the same state,
//     running ones still running (re-attach), and can operate them;
//   - snapshots: create, list, duplicate refused, revert, delete,
//     ErrSnapshotFound for unknown names;
//   - migration between two drivers of New moves a running VM;
//   - snapshots and migration are optional: a driver whose harness names
//     them in Unsupported may answer ErrUnsupported (the case is then
//     skipped); any other driver that does fails;
//   - a driver that offers hypervisor.Fencer stops every running and
//     paused VM with KillAll, names those, leaves stopped ones alone, and
//     can start them again;
//   - cold migration moves a stopped VM: the result says Cold with no
//     downtime, the source lists nothing (CheckClean), the target lists it
//     stopped and can start it; a stopped VM that ran moves back the same
//     way.
func Run(t *testing.T, harness Harness) {
	if harness.New == nil {
		t.Fatal("hypervisortest: Harness.New is required")
	}
	h := harness.withDefaults()
	cases := []struct {
		name string
		fn   func(e *env)
	}{
		{"Lifecycle", testLifecycle},
		{"PauseResume", testPauseResume},
		{"Kill", testKill},
		{"KillAll", testKillAll},
		{"DeleteLeavesNothing", testDelete},
		{"CreateTwice", testCreateTwice},
		{"MissingID", testMissing},
		{"FailedCreateLeavesNothing", testFailedCreate},
		{"Resize", testResize},
		{"ResizeStopped", testResizeStopped},
		{"Snapshots", testSnapshots},
		{"MemorySnapshot", testMemorySnapshot},
		{"SetControls", testControls},
		{"StatsMonotonic", testStats},
		{"Inventory", testInventory},
		{"ReopenReattaches", testReopen},
		{"Migration", testMigration},
		{"ColdMigration", testColdMigration},
		{"Backup", testBackup},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if h.Parallel {
				t.Parallel()
			}
			c.fn(newEnv(t, h))
		})
	}
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: got error %v, want %v", what, err, want)
	}
}

func testLifecycle(e *env) {
	d := *e.driver()
	cfg := e.created(d, "life")
	in := e.wantState(d, cfg.ID, hypervisor.StateStopped)
	if in.Config.ID != cfg.ID || in.Config.Name != cfg.Name || in.Config.Project != cfg.Project {
		e.t.Fatalf("listed config %+v does not match created %+v", in.Config, cfg)
	}
	if in.VCPUs != cfg.Spec.VCPUs || in.Memory != cfg.Spec.Memory {
		e.t.Fatalf("listed size %d/%s, want %d/%s", in.VCPUs, in.Memory, cfg.Spec.VCPUs, cfg.Spec.Memory)
	}
	if err := d.Start(e.ctx, cfg.ID); err != nil {
		e.t.Fatalf("Start: %v", err)
	}
	e.h.WaitReady(e.t, d, cfg.ID)
	in = e.wantState(d, cfg.ID, hypervisor.StateRunning)
	if in.StartedAt.IsZero() {
		e.t.Errorf("running VM has no StartedAt")
	}
	if err := d.Start(e.ctx, cfg.ID); err != nil && !errors.Is(err, hypervisor.ErrBadState) {
		e.t.Fatalf("Start of a running VM: %v (want nil or ErrBadState)", err)
	}
	e.wantState(d, cfg.ID, hypervisor.StateRunning)
	if err := d.Stop(e.ctx, cfg.ID, e.h.StopTimeout); err != nil {
		e.t.Fatalf("Stop: %v", err)
	}
	e.wantState(d, cfg.ID, hypervisor.StateStopped)
	if err := d.Stop(e.ctx, cfg.ID, e.h.StopTimeout); err != nil && !errors.Is(err, hypervisor.ErrBadState) {
		e.t.Fatalf("Stop of a stopped VM: %v (want nil or ErrBadState)", err)
	}
	e.wantState(d, cfg.ID, hypervisor.StateStopped)
	// Start again after a stop.
	if err := d.Start(e.ctx, cfg.ID); err != nil {
		e.t.Fatalf("Start after Stop: %v", err)
	}
	e.h.WaitReady(e.t, d, cfg.ID)
	e.wantState(d, cfg.ID, hypervisor.StateRunning)
}

func testPauseResume(e *env) {
	d := *e.driver()
	stopped := e.created(d, "pr-stopped")
	if err := d.Pause(e.ctx, stopped.ID); !errors.Is(err, hypervisor.ErrBadState) {
		e.t.Fatalf("Pause of a stopped VM: %v, want ErrBadState", err)
	}
	cfg := e.running(d, "pr")
	if err := d.Pause(e.ctx, cfg.ID); err != nil {
		e.t.Fatalf("Pause: %v", err)
	}
	e.wantState(d, cfg.ID, hypervisor.StatePaused)
	if err := d.Resume(e.ctx, cfg.ID); err != nil {
		e.t.Fatalf("Resume: %v", err)
	}
	e.wantState(d, cfg.ID, hypervisor.StateRunning)
	// A paused VM can be stopped.
	if err := d.Pause(e.ctx, cfg.ID); err != nil {
		e.t.Fatalf("Pause: %v", err)
	}
	if err := d.Stop(e.ctx, cfg.ID, e.h.StopTimeout); err != nil {
		e.t.Fatalf("Stop of a paused VM: %v", err)
	}
	e.wantState(d, cfg.ID, hypervisor.StateStopped)
}

func testKill(e *env) {
	d := *e.driver()
	cfg := e.running(d, "kill")
	if err := d.Kill(e.ctx, cfg.ID); err != nil {
		e.t.Fatalf("Kill: %v", err)
	}
	e.wantState(d, cfg.ID, hypervisor.StateStopped, hypervisor.StateCrashed)
	if err := d.Start(e.ctx, cfg.ID); err != nil {
		e.t.Fatalf("Start after Kill: %v", err)
	}
	e.h.WaitReady(e.t, d, cfg.ID)
	e.wantState(d, cfg.ID, hypervisor.StateRunning)
}

func testKillAll(e *env) {
	d := *e.driver()
	f, ok := d.(hypervisor.Fencer)
	if !ok {
		e.skipUnsupported(FeatureKillAll, hypervisor.ErrUnsupported)
	}
	run := e.running(d, "ka-run")
	paused := e.running(d, "ka-paused")
	if err := d.Pause(e.ctx, paused.ID); err != nil {
		e.t.Fatalf("Pause: %v", err)
	}
	stopped := e.created(d, "ka-stopped")
	killed, err := f.KillAll(e.ctx)
	if err != nil {
		e.t.Fatalf("KillAll: %v", err)
	}
	var ids []string
	for _, in := range killed {
		ids = append(ids, in.ID)
	}
	slices.Sort(ids)
	want := []string{run.ID, paused.ID}
	slices.Sort(want)
	if !slices.Equal(ids, want) {
		e.t.Fatalf("KillAll killed %v, want %v", ids, want)
	}
	e.wantState(d, run.ID, hypervisor.StateStopped, hypervisor.StateCrashed)
	e.wantState(d, paused.ID, hypervisor.StateStopped, hypervisor.StateCrashed)
	e.wantState(d, stopped.ID, hypervisor.StateStopped)
	if again, err := f.KillAll(e.ctx); err != nil || len(again) != 0 {
		e.t.Fatalf("KillAll with nothing running: killed %v, error %v", again, err)
	}
	if err := d.Start(e.ctx, run.ID); err != nil {
		e.t.Fatalf("Start after KillAll: %v", err)
	}
	e.h.WaitReady(e.t, d, run.ID)
	e.wantState(d, run.ID, hypervisor.StateRunning)
}

func testDelete(e *env) {
	d := *e.driver()
	a := e.running(d, "del-running")
	b := e.created(d, "del-stopped")
	if err := d.Snapshot(e.ctx, b.ID, "s1", false); err != nil && !errors.Is(err, hypervisor.ErrUnsupported) {
		e.t.Fatalf("Snapshot: %v", err)
	}
	for _, id := range []string{a.ID, b.ID} {
		if err := d.Delete(e.ctx, id); err != nil {
			e.t.Fatalf("Delete(%s): %v", id, err)
		}
		e.wantGone(d, id)
	}
	infos, err := d.List(e.ctx)
	if err != nil {
		e.t.Fatalf("List: %v", err)
	}
	if len(infos) != 0 {
		e.t.Fatalf("List after deleting everything: %d VMs left: %+v", len(infos), infos)
	}
	wantErr(e.t, "Delete twice", d.Delete(e.ctx, a.ID), hypervisor.ErrNotFound)
	// The id is free again, without old snapshots.
	e.created(d, "del-stopped")
	snaps, err := d.Snapshots(e.ctx, b.ID)
	if err != nil {
		e.t.Fatalf("Snapshots: %v", err)
	}
	if len(snaps) != 0 {
		e.t.Fatalf("recreated VM inherited snapshots %+v", snaps)
	}
}

func testCreateTwice(e *env) {
	d := *e.driver()
	cfg := e.running(d, "twice")
	before := e.info(d, cfg.ID)
	other := cfg
	other.Spec.VCPUs = cfg.Spec.VCPUs + 1
	wantErr(e.t, "Create of an existing id", d.Create(e.ctx, other), hypervisor.ErrExists)
	after := e.wantState(d, cfg.ID, hypervisor.StateRunning)
	if after.VCPUs != before.VCPUs || !after.StartedAt.Equal(before.StartedAt) {
		e.t.Fatalf("failed Create changed the VM: before %+v after %+v", before, after)
	}
}

func testMissing(e *env) {
	d := *e.driver()
	const id = "test.missing"
	ctx := e.ctx
	ops := []struct {
		name string
		err  error
	}{
		{"Start", d.Start(ctx, id)},
		{"Stop", d.Stop(ctx, id, e.h.StopTimeout)},
		{"Kill", d.Kill(ctx, id)},
		{"Pause", d.Pause(ctx, id)},
		{"Resume", d.Resume(ctx, id)},
		{"Delete", d.Delete(ctx, id)},
		{"Resize", d.Resize(ctx, id, 2, 256*model.MiB)},
		{"SetControls", d.SetControls(ctx, id, model.Controls{CPUShares: 10})},
		{"Snapshot", d.Snapshot(ctx, id, "s", false)},
		{"RevertSnapshot", d.RevertSnapshot(ctx, id, "s")},
		{"DeleteSnapshot", d.DeleteSnapshot(ctx, id, "s")},
	}
	_, err := d.Stats(ctx, id)
	ops = append(ops, struct {
		name string
		err  error
	}{"Stats", err})
	_, err = d.Snapshots(ctx, id)
	ops = append(ops, struct {
		name string
		err  error
	}{"Snapshots", err})
	_, err = d.MigrateOut(ctx, id, "nowhere", hypervisor.MigrateOptions{}, nil)
	if !errors.Is(err, hypervisor.ErrUnsupported) {
		ops = append(ops, struct {
			name string
			err  error
		}{"MigrateOut", err})
	}
	for _, op := range ops {
		if !errors.Is(op.err, hypervisor.ErrNotFound) {
			e.t.Errorf("%s on a missing id: got %v, want ErrNotFound", op.name, op.err)
		}
	}
}

func testFailedCreate(e *env) {
	d := *e.driver()
	bad := e.h.BadConfig(e.t, "bad")
	if err := d.Create(e.ctx, bad); err == nil {
		e.t.Fatalf("Create(%+v) succeeded, want an error", bad.Spec)
	}
	e.wantGone(d, bad.ID)
	// The id is usable afterwards.
	good := e.h.Config(e.t, "bad")
	if good.ID != bad.ID {
		e.t.Fatalf("harness: Config and BadConfig give different ids for one name (%s, %s)", good.ID, bad.ID)
	}
	if err := d.Create(e.ctx, good); err != nil {
		e.t.Fatalf("Create after a failed Create: %v", err)
	}
}

func testResize(e *env) {
	d := *e.driver()
	cfg := e.running(d, "resize")
	before := e.info(d, cfg.ID)
	vcpus, mem := cfg.Spec.VCPUs+1, cfg.Spec.Memory*2
	err := d.Resize(e.ctx, cfg.ID, vcpus, mem)
	after := e.wantState(d, cfg.ID, hypervisor.StateRunning)
	switch {
	case err == nil:
		if after.VCPUs != vcpus || after.Memory != mem {
			e.t.Fatalf("live Resize succeeded but VM lists %d/%s, want %d/%s", after.VCPUs, after.Memory, vcpus, mem)
		}
	case errors.Is(err, hypervisor.ErrNeedsRestart):
		if after.VCPUs != before.VCPUs || after.Memory != before.Memory || !after.StartedAt.Equal(before.StartedAt) {
			e.t.Fatalf("Resize said ErrNeedsRestart but changed the VM: before %+v after %+v", before, after)
		}
	default:
		e.t.Fatalf("Resize of a running VM: %v (want nil or ErrNeedsRestart)", err)
	}
}

func testResizeStopped(e *env) {
	d := *e.driver()
	cfg := e.created(d, "resize-off")
	vcpus, mem := cfg.Spec.VCPUs+1, cfg.Spec.Memory*2
	if err := d.Resize(e.ctx, cfg.ID, vcpus, mem); err != nil {
		e.t.Fatalf("Resize of a stopped VM: %v", err)
	}
	in := e.wantState(d, cfg.ID, hypervisor.StateStopped)
	if in.VCPUs != vcpus || in.Memory != mem {
		e.t.Fatalf("stopped VM lists %d/%s after Resize, want %d/%s", in.VCPUs, in.Memory, vcpus, mem)
	}
	if err := d.Start(e.ctx, cfg.ID); err != nil {
		e.t.Fatalf("Start after Resize: %v", err)
	}
	e.h.WaitReady(e.t, d, cfg.ID)
	in = e.wantState(d, cfg.ID, hypervisor.StateRunning)
	if in.VCPUs != vcpus || in.Memory != mem {
		e.t.Fatalf("started VM lists %d/%s, want the resized %d/%s", in.VCPUs, in.Memory, vcpus, mem)
	}
}

func testSnapshots(e *env) {
	d := *e.driver()
	cfg := e.created(d, "snap")
	if err := d.Snapshot(e.ctx, cfg.ID, "s1", false); err != nil {
		e.skipUnsupported(FeatureSnapshots, err)
		e.t.Fatalf("Snapshot: %v", err)
	}
	if err := d.Snapshot(e.ctx, cfg.ID, "s1", false); err == nil {
		e.t.Fatalf("Snapshot with a used name succeeded, want an error")
	}
	if err := d.Snapshot(e.ctx, cfg.ID, "s2", false); err != nil {
		e.t.Fatalf("Snapshot s2: %v", err)
	}
	snaps, err := d.Snapshots(e.ctx, cfg.ID)
	if err != nil {
		e.t.Fatalf("Snapshots: %v", err)
	}
	names := map[string]bool{}
	for _, s := range snaps {
		names[s.Name] = true
		if s.CreatedAt.IsZero() {
			e.t.Errorf("snapshot %s has no CreatedAt", s.Name)
		}
	}
	if len(snaps) != 2 || !names["s1"] || !names["s2"] {
		e.t.Fatalf("Snapshots = %+v, want s1 and s2", snaps)
	}
	if err := d.RevertSnapshot(e.ctx, cfg.ID, "s1"); err != nil {
		e.t.Fatalf("RevertSnapshot: %v", err)
	}
	e.wantState(d, cfg.ID, hypervisor.StateStopped)
	wantErr(e.t, "RevertSnapshot of an unknown name", d.RevertSnapshot(e.ctx, cfg.ID, "nope"), hypervisor.ErrSnapshotFound)
	wantErr(e.t, "DeleteSnapshot of an unknown name", d.DeleteSnapshot(e.ctx, cfg.ID, "nope"), hypervisor.ErrSnapshotFound)
	for _, n := range []string{"s1", "s2"} {
		if err := d.DeleteSnapshot(e.ctx, cfg.ID, n); err != nil {
			e.t.Fatalf("DeleteSnapshot(%s): %v", n, err)
		}
	}
	snaps, err = d.Snapshots(e.ctx, cfg.ID)
	if err != nil {
		e.t.Fatalf("Snapshots: %v", err)
	}
	if len(snaps) != 0 {
		e.t.Fatalf("Snapshots after deleting all = %+v", snaps)
	}
	// The VM still starts after snapshot work.
	if err := d.Start(e.ctx, cfg.ID); err != nil {
		e.t.Fatalf("Start after snapshots: %v", err)
	}
	e.h.WaitReady(e.t, d, cfg.ID)
}

func testMemorySnapshot(e *env) {
	d := *e.driver()
	cfg := e.running(d, "memsnap")
	if err := d.Snapshot(e.ctx, cfg.ID, "live", true); err != nil {
		e.skipUnsupported(FeatureMemorySnapshots, err)
		e.t.Fatalf("Snapshot with memory: %v", err)
	}
	e.wantState(d, cfg.ID, hypervisor.StateRunning)
	snaps, err := d.Snapshots(e.ctx, cfg.ID)
	if err != nil {
		e.t.Fatalf("Snapshots: %v", err)
	}
	if len(snaps) != 1 || snaps[0].Name != "live" || !snaps[0].Memory {
		e.t.Fatalf("Snapshots = %+v, want one memory snapshot named live", snaps)
	}
	if err := d.RevertSnapshot(e.ctx, cfg.ID, "live"); err != nil {
		e.t.Fatalf("RevertSnapshot of a memory snapshot: %v", err)
	}
	e.wantState(d, cfg.ID, hypervisor.StateRunning)
	if err := d.DeleteSnapshot(e.ctx, cfg.ID, "live"); err != nil {
		e.t.Fatalf("DeleteSnapshot: %v", err)
	}
}

func testControls(e *env) {
	d := *e.driver()
	cfg := e.running(d, "controls")
	c := model.Controls{CPUShares: 512, CPULimit: 500, MemoryLimit: cfg.Spec.Memory, DiskIOPS: 1000, DiskBps: 50 << 20}
	if err := d.SetControls(e.ctx, cfg.ID, c); err != nil {
		e.t.Fatalf("SetControls: %v", err)
	}
	in := e.wantState(d, cfg.ID, hypervisor.StateRunning)
	if in.Config.Spec.Controls != c {
		e.t.Fatalf("listed controls %+v, want %+v", in.Config.Spec.Controls, c)
	}
	// Controls set while stopped hold after the next start.
	if err := d.Stop(e.ctx, cfg.ID, e.h.StopTimeout); err != nil {
		e.t.Fatalf("Stop: %v", err)
	}
	c2 := model.Controls{CPUShares: 2048}
	if err := d.SetControls(e.ctx, cfg.ID, c2); err != nil {
		e.t.Fatalf("SetControls on a stopped VM: %v", err)
	}
	if err := d.Start(e.ctx, cfg.ID); err != nil {
		e.t.Fatalf("Start: %v", err)
	}
	e.h.WaitReady(e.t, d, cfg.ID)
	if in := e.info(d, cfg.ID); in.Config.Spec.Controls != c2 {
		e.t.Fatalf("listed controls after restart %+v, want %+v", in.Config.Spec.Controls, c2)
	}
}

func testStats(e *env) {
	d := *e.driver()
	cfg := e.running(d, "stats")
	prev, err := d.Stats(e.ctx, cfg.ID)
	if err != nil {
		e.t.Fatalf("Stats: %v", err)
	}
	for i := 0; i < 3; i++ {
		e.h.Advance(e.t, 200*time.Millisecond)
		s, err := d.Stats(e.ctx, cfg.ID)
		if err != nil {
			e.t.Fatalf("Stats: %v", err)
		}
		if s.CPUTimeNs < prev.CPUTimeNs || s.DiskRead < prev.DiskRead || s.DiskWrite < prev.DiskWrite ||
			s.NetRx < prev.NetRx || s.NetTx < prev.NetTx || s.At.Before(prev.At) {
			e.t.Fatalf("Stats went backwards: %+v then %+v", prev, s)
		}
		if s.Memory < 0 || s.Memory > cfg.Spec.Memory*2 {
			e.t.Fatalf("Stats memory %s is absurd for a %s VM", s.Memory, cfg.Spec.Memory)
		}
		prev = s
	}
	if prev.At.IsZero() {
		e.t.Errorf("Stats.At is zero")
	}
}

func testInventory(e *env) {
	d := *e.driver()
	inv, err := d.Inventory(e.ctx)
	if err != nil {
		e.t.Fatalf("Inventory: %v", err)
	}
	if inv.CPUs <= 0 || inv.Memory <= 0 || inv.Accel == "" {
		e.t.Fatalf("Inventory = %+v: want CPUs, memory and accel", inv)
	}
	if d.Name() == "" {
		e.t.Fatalf("driver has no Name")
	}
}

func testReopen(e *env) {
	if e.h.Reopen == nil {
		e.t.Skip("harness has no Reopen")
	}
	p := e.driver()
	run := e.running(*p, "reopen-running")
	off := e.created(*p, "reopen-stopped")
	paused := e.running(*p, "reopen-paused")
	if err := (*p).Pause(e.ctx, paused.ID); err != nil {
		e.t.Fatalf("Pause: %v", err)
	}
	before := e.info(*p, run.ID)
	e.reopen(p)
	d := *p
	after := e.wantState(d, run.ID, hypervisor.StateRunning)
	if !after.StartedAt.Equal(before.StartedAt) || (before.Pid != 0 && after.Pid != before.Pid) {
		e.t.Fatalf("running VM was restarted by the reopen: before %+v after %+v", before, after)
	}
	if after.Config.ID != run.ID || after.Config.Project != run.Project || after.Config.Name != run.Name {
		e.t.Fatalf("re-attached config %+v does not match %+v", after.Config, run)
	}
	e.wantState(d, off.ID, hypervisor.StateStopped)
	e.wantState(d, paused.ID, hypervisor.StatePaused)
	// The new driver operates what it re-attached.
	if _, err := d.Stats(e.ctx, run.ID); err != nil {
		e.t.Fatalf("Stats after reopen: %v", err)
	}
	if err := d.Resume(e.ctx, paused.ID); err != nil {
		e.t.Fatalf("Resume after reopen: %v", err)
	}
	if err := d.Stop(e.ctx, run.ID, e.h.StopTimeout); err != nil {
		e.t.Fatalf("Stop after reopen: %v", err)
	}
	e.wantState(d, run.ID, hypervisor.StateStopped)
	if err := d.Delete(e.ctx, off.ID); err != nil {
		e.t.Fatalf("Delete after reopen: %v", err)
	}
	e.wantGone(d, off.ID)
}

func testMigration(e *env) {
	src := *e.driver()
	dst := *e.driver()
	cfg := e.running(src, "mig")
	addr, err := dst.MigrateIn(e.ctx, cfg)
	e.skipUnsupported(FeatureMigration, err)
	if err != nil {
		e.t.Fatalf("MigrateIn: %v", err)
	}
	var progress int
	res, err := src.MigrateOut(e.ctx, cfg.ID, addr, hypervisor.MigrateOptions{DowntimeLimit: 300 * time.Millisecond}, func(hypervisor.MigrationProgress) { progress++ })
	if err != nil {
		e.t.Fatalf("MigrateOut: %v", err)
	}
	if res.Bytes <= 0 || res.Downtime < 0 || res.Total < res.Downtime {
		e.t.Errorf("MigrationResult %+v is implausible", res)
	}
	e.wantGone(src, cfg.ID)
	in := e.wantState(dst, cfg.ID, hypervisor.StateRunning)
	if in.VCPUs != cfg.Spec.VCPUs || in.Memory != cfg.Spec.Memory || in.Config.Name != cfg.Name {
		e.t.Fatalf("migrated VM lists %+v, want the config %+v", in, cfg)
	}
	if _, err := dst.Stats(e.ctx, cfg.ID); err != nil {
		e.t.Fatalf("Stats on the target: %v", err)
	}
	// The VM can be migrated back.
	addr, err = src.MigrateIn(e.ctx, cfg)
	if err != nil {
		e.t.Fatalf("MigrateIn back: %v", err)
	}
	if _, err := dst.MigrateOut(e.ctx, cfg.ID, addr, hypervisor.MigrateOptions{}, nil); err != nil {
		e.t.Fatalf("MigrateOut back: %v", err)
	}
	e.wantState(src, cfg.ID, hypervisor.StateRunning)
	e.wantGone(dst, cfg.ID)
}

func testColdMigration(e *env) {
	src := *e.driver()
	dst := *e.driver()
	cfg := e.created(src, "cold")
	e.coldMove(src, dst, cfg)
	if err := dst.Start(e.ctx, cfg.ID); err != nil {
		e.t.Fatalf("Start on the target: %v", err)
	}
	e.h.WaitReady(e.t, dst, cfg.ID)
	e.wantState(dst, cfg.ID, hypervisor.StateRunning)
	// A VM that ran and was stopped moves back.
	if err := dst.Stop(e.ctx, cfg.ID, e.h.StopTimeout); err != nil {
		e.t.Fatalf("Stop on the target: %v", err)
	}
	e.coldMove(dst, src, cfg)
}

// coldMove migrates the stopped VM cfg from src to dst and checks the
// outcome.
func (e *env) coldMove(src, dst hypervisor.Driver, cfg hypervisor.VMConfig) {
	e.t.Helper()
	addr, err := dst.MigrateIn(e.ctx, cfg)
	e.skipUnsupported(FeatureMigration, err)
	if err != nil {
		e.t.Fatalf("MigrateIn: %v", err)
	}
	res, err := src.MigrateOut(e.ctx, cfg.ID, addr, hypervisor.MigrateOptions{}, nil)
	if err != nil {
		e.t.Fatalf("cold MigrateOut: %v", err)
	}
	if !res.Cold || res.Downtime != 0 || res.Total < 0 || res.Bytes < 0 || res.Bytes != res.DiskBytes {
		e.t.Errorf("cold MigrationResult %+v is implausible", res)
	}
	e.wantGone(src, cfg.ID)
	in := e.wantState(dst, cfg.ID, hypervisor.StateStopped)
	if in.VCPUs != cfg.Spec.VCPUs || in.Memory != cfg.Spec.Memory || in.Config.Name != cfg.Name {
		e.t.Fatalf("migrated VM lists %+v, want the config %+v", in, cfg)
	}
}

// skipUnsupported skips the case when err says the driver lacks f and
// the harness declares that; when the harness does not, the driver broke
// a feature it has, and the case fails. Other errors return to the caller.
func (e *env) skipUnsupported(f Feature, err error) {
	e.t.Helper()
	if !errors.Is(err, hypervisor.ErrUnsupported) {
		return
	}
	if e.h.lacks(f) {
		e.t.Skipf("driver does not support %s", f)
	}
	e.t.Fatalf("%s: %v (the harness does not declare %s unsupported)", f, err, f)
}
