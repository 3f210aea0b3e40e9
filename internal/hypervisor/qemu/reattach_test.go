package qemu

import (
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/qmp"
)

// agentGone closes d as a dying agent would (its QEMUs keep running) and
// makes its test clean-up forget them: a later driver owns them now.
func agentGone(d *Driver) {
	d.Close()
	d.mu.Lock()
	d.vms = map[string]*vm{}
	d.mu.Unlock()
}

// infoOfVM returns id's entry of d.List.
func infoOfVM(t *testing.T, d *Driver, id string) hypervisor.Info {
	t.Helper()
	infos, err := d.List(context.Background())
	mustDo(t, "List", err)
	for _, in := range infos {
		if in.ID == id {
			return in
		}
	}
	t.Fatalf("%s is not listed", id)
	return hypervisor.Info{}
}

// waitState waits (≤ 60 s) until d lists id in state want.
func waitState(t *testing.T, d *Driver, id string, want hypervisor.State) hypervisor.Info {
	t.Helper()
	var in hypervisor.Info
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if in = infoOfVM(t, d, id); in.State == want {
			return in
		}
	}
	t.Fatalf("%s is %s (%s), want %s", id, in.State, in.Reason, want)
	return in
}

// waitReached waits (≤ 60 s) while d lists id as unknown: re-attach
// tries once at start and then retries in the background, so a monitor
// slow to answer on a loaded machine (its last client just killed) is
// reached a retry later.
func waitReached(t *testing.T, d *Driver, id string) hypervisor.Info {
	t.Helper()
	var in hypervisor.Info
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if in = infoOfVM(t, d, id); in.State != hypervisor.StateUnknown {
			return in
		}
	}
	t.Fatalf("%s is still unreachable after 60 s (%s)", id, in.Reason)
	return in
}

// TestReattachNeverKillsAnUnreachableVM restarts the driver while the
// VM's QMP monitor is held by another client, then while its QEMU is
// stopped (SIGSTOP): the QEMU must survive, be listed as unknown with the
// reason, refuse operations but Kill and Delete, and be re-attached once
// the monitor answers again.
func TestReattachNeverKillsAnUnreachableVM(t *testing.T) {
	t.Parallel()
	g := heavy(t)
	ctx := context.Background()
	cfg := testConfig(t, shortTempDir(t))
	cfg.QMPTimeout = 3 * time.Second // one attach attempt waits this long
	d := newDriver(t, cfg)
	vc := vmConfig(g, "unreach")
	bootGuest(t, d, vc)
	pid := pidOf(t, d, vc.ID)
	qmpPath := d.socketPath(vc.ID, "qmp.sock")
	agentGone(d) // the agent goes; QEMU stays

	// An operator's QMP client holds the monitor (QEMU serves one).
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	holder, err := qmp.Dial(hctx, qmpPath, qmp.Options{})
	cancel()
	mustDo(t, "hold the monitor", err)
	d2 := newDriver(t, cfg)
	in := infoOfVM(t, d2, vc.ID)
	if in.State != hypervisor.StateUnknown || !strings.Contains(in.Reason, "monitor unreachable") || in.Pid != pid {
		t.Fatalf("with the monitor held, List says %+v; want unknown, the reason, pid %d", in, pid)
	}
	if !pidAlive(pid) {
		t.Fatal("the driver killed a QEMU it could not reach")
	}
	for name, op := range map[string]func() error{
		"Start":  func() error { return d2.Start(ctx, vc.ID) },
		"Stop":   func() error { return d2.Stop(ctx, vc.ID, time.Second) },
		"Resize": func() error { return d2.Resize(ctx, vc.ID, 2, vc.Spec.Memory) },
	} {
		if err := op(); !errors.Is(err, hypervisor.ErrUnreachable) {
			t.Errorf("%s of an unreachable VM = %v, want ErrUnreachable", name, err)
		}
	}
	holder.Close() // the operator lets go: the retry attaches
	in = waitState(t, d2, vc.ID, hypervisor.StateRunning)
	if in.Pid != pid {
		t.Fatalf("after re-attach the VM runs as pid %d, want %d", in.Pid, pid)
	}
	st, err := d2.Stats(ctx, vc.ID)
	if err != nil || st.CPUTimeNs <= 0 {
		t.Fatalf("Stats after re-attach = %+v, %v", st, err)
	}

	// QEMU stopped (stuck): an attached driver lists it unknown, not
	// crashed; a new one cannot attach and does not kill it either.
	mustDo(t, "SIGSTOP", syscall.Kill(pid, syscall.SIGSTOP))
	defer syscall.Kill(pid, syscall.SIGCONT)
	if in := infoOfVM(t, d2, vc.ID); in.State != hypervisor.StateUnknown {
		t.Fatalf("a stopped QEMU is listed %s (%s), want unknown", in.State, in.Reason)
	}
	agentGone(d2)
	d3 := newDriver(t, cfg)
	if in := infoOfVM(t, d3, vc.ID); in.State != hypervisor.StateUnknown || !pidAlive(pid) {
		t.Fatalf("a stopped QEMU after a restart: %+v, alive %v", in, pidAlive(pid))
	}
	mustDo(t, "SIGCONT", syscall.Kill(pid, syscall.SIGCONT))
	if in := waitState(t, d3, vc.ID, hypervisor.StateRunning); in.Pid != pid {
		t.Fatalf("after SIGCONT the VM runs as pid %d, want %d", in.Pid, pid)
	}
	mustDo(t, "Stop", d3.Stop(ctx, vc.ID, 20*time.Second))
}

// TestReattachDeleteAnUnreachableVM: Delete — an explicit order — still
// works on a VM whose monitor is held.
func TestReattachDeleteAnUnreachableVM(t *testing.T) {
	t.Parallel()
	g := heavy(t)
	ctx := context.Background()
	cfg := testConfig(t, shortTempDir(t))
	cfg.QMPTimeout = 2 * time.Second
	d := newDriver(t, cfg)
	vc := vmConfig(g, "unreachdel")
	mustDo(t, "Create", d.Create(ctx, vc))
	mustDo(t, "Start", d.Start(ctx, vc.ID))
	pid := pidOf(t, d, vc.ID)
	qmpPath := d.socketPath(vc.ID, "qmp.sock")
	agentGone(d)
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	holder, err := qmp.Dial(hctx, qmpPath, qmp.Options{})
	cancel()
	mustDo(t, "hold the monitor", err)
	defer holder.Close()
	d2 := newDriver(t, cfg)
	if in := infoOfVM(t, d2, vc.ID); in.State != hypervisor.StateUnknown {
		t.Fatalf("with the monitor held, List says %s", in.State)
	}
	mustDo(t, "Delete", d2.Delete(ctx, vc.ID))
	if pidAlive(pid) {
		t.Fatal("Delete left the unreachable QEMU running")
	}
	assertGone(t, d2, vc.ID)
}
