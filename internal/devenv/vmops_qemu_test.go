package devenv_test

import (
	"bufio"
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/agent"
	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/devenv"
	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/hypervisor/qemu"
	"github.com/vpool/vpool/internal/hypervisor/qemu/guest"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/server"
	"github.com/vpool/vpool/internal/store/memstore"
)

// TestVMOperationsQEMU drives one real test guest (TCG) through the API:
// the serial log and an interactive console, a live vCPU hot-add and a
// refused resize, disk hot-plug and unplug, and a snapshot revert.
func TestVMOperationsQEMU(t *testing.T) {
	g := guest.Require(t)
	guest.AcquireSlot(t)
	st := memstore.New()
	t.Cleanup(func() { st.Close() })
	cl := startCluster(t, devenv.ServerConfig{Store: st}, 0)
	d, err := qemu.New(qemu.Config{StateDir: t.TempDir(), Network: qemu.NetUser, NoCgroups: true, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		infos, _ := d.List(ctx)
		for _, in := range infos {
			d.Delete(ctx, in.ID)
		}
		d.Close()
	})
	a, err := agent.New(agent.Config{
		ServerURL: cl.srv.AgentURL(), JoinToken: cl.token, StateDir: filepath.Join(cl.dir, "q1"), HostName: "q1",
		Driver: d, StatusInterval: 300 * time.Millisecond, PollWait: 5 * time.Second, StopTimeout: 5 * time.Second,
		ResolveImage: func(string) (*hypervisor.Image, error) { return g.Image(), nil },
		Logger:       testLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	actx, stopAgent := context.WithCancel(context.Background())
	agentDone := make(chan struct{})
	go func() { defer close(agentDone); a.Run(actx) }()
	t.Cleanup(func() { stopAgent(); <-agentDone })

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	p := api.DefaultProject
	// The agent boots the guest whatever the image record says
	// (ResolveImage above); admission wants the record.
	if _, err := cl.srv.ImportLocalImage(ctx, api.ImageImportRequest{Name: "test-guest"},
		[]server.LocalFile{{Role: model.ImageKernel, Path: g.Kernel}}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.c.CreateVM(ctx, p, api.VMCreateRequest{Name: "tg", Spec: model.VMSpec{VCPUs: 1, Memory: 128 * model.MiB,
		Image: "test-guest", Disks: []model.Disk{{Name: "root", Size: model.GiB}}}}); err != nil {
		t.Fatal(err)
	}
	cl.waitPhase("tg", model.PhaseRunning)
	waitLog := func(marker string) string {
		t.Helper()
		for {
			l, err := cl.c.ConsoleLog(ctx, p, "tg", 0)
			if err == nil && strings.Contains(l.Log, marker) {
				return l.Log
			}
			if ctx.Err() != nil {
				t.Fatalf("no %q in the console log (%v): %+v", marker, err, l)
			}
			time.Sleep(300 * time.Millisecond)
		}
	}
	waitLog(guest.ReadyMarker)

	// An interactive session: the guest's shell runs what we type.
	conn, err := cl.c.Console(ctx, p, "tg")
	if err != nil {
		t.Fatal(err)
	}
	lines := consoleLines(conn)
	run := func(cmd, want string) {
		t.Helper()
		if _, err := conn.Write([]byte(cmd + "\n")); err != nil {
			t.Fatal(err)
		}
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("console closed before %q appeared", want)
				}
				if strings.TrimSpace(l) == want {
					return
				}
			case <-ctx.Done():
				t.Fatalf("no %q on the console after %q", want, cmd)
			}
		}
	}
	run("echo vpool-$((6*7))", "vpool-42")

	// Disk hot-plug and unplug: the guest sees vdb come and go. (Before
	// the vCPU hot-add: under TCG on a loaded 2-core host the hot-added
	// vCPU barely runs, and the guest's PCI hot-plug work queued on it
	// never finishes.)
	if _, err := cl.c.AddDisk(ctx, p, "tg", api.DiskAddRequest{Name: "data", Size: 256 * model.MiB}); err != nil {
		t.Fatal(err)
	}
	// The guest's answers are read from its console log, through the API.
	shell := func(cmd, marker string) bool {
		t.Helper()
		if _, err := conn.Write([]byte(cmd + "\n")); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 10; i++ {
			if l, err := cl.c.ConsoleLog(ctx, p, "tg", 4096); err == nil && strings.Contains(l.Log, marker) {
				return true
			}
			time.Sleep(time.Second)
		}
		return false
	}
	waitFor(t, ctx, "vdb in the guest", func() bool { return shell("echo DISKS-$(ls /sys/block | grep -c vdb)", "DISKS-1") })
	if _, err := cl.c.RemoveDisk(ctx, p, "tg", "data"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "vdb gone from the guest", func() bool {
		ok := shell("echo GONE-$(ls /sys/block | grep -c vdb)", "GONE-0")
		if !ok {
			v, _ := cl.c.GetVM(ctx, p, "tg")
			t.Logf("VM status: %+v", v.Status)
		}
		return ok
	})
	// Live vCPU hot-add; then a size beyond this boot's maxcpus is refused.
	two, sixteen := 2, 16
	vm := resizeAndWait(t, &cluster{t: t, c: cl.c}, "tg", api.VMPatchRequest{VCPUs: &two})
	if vm.Status.Resize.Phase != model.ResizeDone {
		t.Fatalf("live vCPU hot-add: %+v", vm.Status.Resize)
	}
	waitLog("VPOOL-GUEST-CPU-ONLINE")
	run("nproc", "2")
	vm = resizeAndWait(t, &cluster{t: t, c: cl.c}, "tg", api.VMPatchRequest{VCPUs: &sixteen})
	if vm.Status.Resize.Phase != model.ResizeRefused || vm.Spec.VCPUs != 2 || !strings.Contains(vm.Status.Resize.Message, "--restart") {
		t.Fatalf("16 vCPUs without restart: %+v, spec %d", vm.Status.Resize, vm.Spec.VCPUs)
	}

	conn.Close()

	// A disk snapshot of the running guest, a revert (a cold boot from the
	// snapshot's disk), and its deletion.
	if _, err := cl.c.CreateSnapshot(ctx, p, "tg", api.SnapshotCreateRequest{Name: "s1"}); err != nil {
		t.Fatal(err)
	}
	if s, err := cl.c.WaitSnapshot(ctx, p, "tg", "s1", model.SnapshotPending); err != nil || s.Phase != model.SnapshotReady {
		t.Fatalf("snapshot: %v %+v", err, s)
	}
	if _, err := cl.c.RevertSnapshot(ctx, p, "tg", "s1"); err != nil {
		t.Fatal(err)
	}
	if s, err := cl.c.WaitSnapshot(ctx, p, "tg", "s1", model.SnapshotReverting); err != nil || s.RevertedAt == nil {
		t.Fatalf("revert: %v %+v", err, s)
	}
	cl.waitPhase("tg", model.PhaseRunning)
	waitLog(guest.ReadyMarker)
	if err := cl.c.DeleteSnapshot(ctx, p, "tg", "s1"); err != nil {
		t.Fatal(err)
	}
	if s, err := cl.c.WaitSnapshot(ctx, p, "tg", "s1", model.SnapshotDeleting); err != nil || s != nil {
		t.Fatalf("delete snapshot: %v %+v", err, s)
	}
	if snaps, _ := d.Snapshots(ctx, p+".tg"); len(snaps) != 0 {
		t.Errorf("driver snapshots after delete: %+v", snaps)
	}
}

// consoleLines splits what the console prints into lines.
func consoleLines(c net.Conn) <-chan string {
	out := make(chan string, 256)
	go func() {
		defer close(out)
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			out <- strings.TrimRight(sc.Text(), "\r")
		}
	}()
	return out
}

func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		if ctx.Err() != nil {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// testLogger logs to stderr when VPOOL_TEST_LOG is set.
// failLogger keeps the warnings and errors of a host's driver and agent
// and prints the last of them when the test fails (a self-fence, a
// restart, a lost VM: what the console alone cannot say).
func failLogger(t *testing.T) *slog.Logger {
	if os.Getenv("VPOOL_TEST_LOG") != "" {
		return testLogger()
	}
	b := &syncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			out := b.String()
			if len(out) > 6000 {
				out = out[len(out)-6000:]
			}
			t.Logf("the host's warnings:\n%s", out)
		}
	})
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func testLogger() *slog.Logger {
	if os.Getenv("VPOOL_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}
