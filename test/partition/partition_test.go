package partition

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/client"
	"github.com/vpool/vpool/internal/controller"
	"github.com/vpool/vpool/internal/devenv"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store/memstore"
	"github.com/vpool/vpool/internal/testenv"
)

var (
	building sync.Once
	bin      string
	buildErr error
)

func needBinary(tb testing.TB) string {
	tb.Helper()
	building.Do(func() {
		dir, err := os.MkdirTemp("", "vpool-part-")
		if err != nil {
			buildErr = err
			return
		}
		bin = filepath.Join(dir, "vpool")
		cmd := exec.Command("go", "build", "-o", bin, "./cmd/vpool")
		cmd.Dir = "../.."
		if b, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/vpool: %v\n%s", err, b)
		}
	})
	if buildErr != nil {
		tb.Fatal(buildErr)
	}
	return bin
}

func run(tb testing.TB, args ...string) {
	tb.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		tb.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// link is a network namespace joined to the root one by a veth pair.
type link struct {
	ns, outer, inner string
	hostIP, nsIP     string
}

func newLink(tb testing.TB) *link {
	tb.Helper()
	id := os.Getpid() % 10000
	l := &link{ns: fmt.Sprintf("vpha%d", id), outer: fmt.Sprintf("vpha%da", id), inner: fmt.Sprintf("vpha%db", id),
		hostIP: fmt.Sprintf("10.231.%d.1", id%250), nsIP: fmt.Sprintf("10.231.%d.2", id%250)}
	exec.Command("ip", "netns", "del", l.ns).Run() // a leftover of a killed run
	exec.Command("ip", "link", "del", l.outer).Run()
	run(tb, "ip", "netns", "add", l.ns)
	tb.Cleanup(func() {
		exec.Command("ip", "netns", "del", l.ns).Run()
		exec.Command("ip", "link", "del", l.outer).Run()
	})
	run(tb, "ip", "link", "add", l.outer, "type", "veth", "peer", "name", l.inner)
	run(tb, "ip", "link", "set", l.inner, "netns", l.ns)
	run(tb, "ip", "addr", "add", l.hostIP+"/30", "dev", l.outer)
	run(tb, "ip", "link", "set", l.outer, "up")
	run(tb, "ip", "netns", "exec", l.ns, "ip", "addr", "add", l.nsIP+"/30", "dev", l.inner)
	run(tb, "ip", "netns", "exec", l.ns, "ip", "link", "set", l.inner, "up")
	run(tb, "ip", "netns", "exec", l.ns, "ip", "link", "set", "lo", "up")
	return l
}

func (l *link) set(tb testing.TB, up bool) {
	state := "down"
	if up {
		state = "up"
	}
	run(tb, "ip", "link", "set", l.outer, state)
}

// agentProc runs `vpool agent` (in a namespace when ns is set).
func agentProc(tb testing.TB, ns, name, server, token, stateDir, pool string, labels ...string) *exec.Cmd {
	tb.Helper()
	args := []string{bin, "agent", "--server", server, "--name", name, "--state-dir", stateDir, "--driver", "qemu", "--pool", "shared=" + pool}
	for _, l := range labels {
		args = append(args, "--label", l)
	}
	if ns != "" {
		args = append([]string{"ip", "netns", "exec", ns}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "VPOOL_JOIN_TOKEN="+token)
	logf, err := os.Create(filepath.Join(stateDir + ".log"))
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		logf.Close()
		if tb.Failed() {
			b, _ := os.ReadFile(stateDir + ".log")
			tb.Logf("agent %s log:\n%s", name, tail(string(b), 4000))
		}
	})
	return cmd
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// qemuFor lists the QEMU processes whose command line names the VM's
// disk directory, by the agent state dir they run under.
func qemuFor(diskDir string, stateDirs ...string) map[string][]int {
	out := map[string][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(b), "qemu-system") || !strings.Contains(string(b), diskDir) {
			continue
		}
		for _, sd := range stateDirs {
			if strings.Contains(string(b), sd) {
				out[sd] = append(out[sd], pid)
			}
		}
	}
	return out
}

func eventually(tb testing.TB, what string, within time.Duration, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestPartitionedHostFencesItself: h1's agent runs in a network
// namespace; its VM (a QEMU on a shared pool) runs there. The link is
// cut: h1's agent kills its QEMU (self-fence), the server fences h1 after
// the fence timeout and margin and restarts the VM on h2. The link comes
// back: h1 is ready again, and exactly one QEMU runs the VM — h2's — and
// holds the disk's lock (qemu-img cannot open it for writing). Before
// issue 15 part 2 the cut-off host's QEMU ran on and the VM stayed on h1.
func TestPartitionedHostFencesItself(t *testing.T) {
	if testing.Short() {
		testenv.SkipOrFail(t, "the partition test runs agents and QEMU as processes in a network namespace; skipped with -short")
	}
	testenv.MustHaveRoot(t, "network namespaces")
	for _, tool := range []string{"ip", "qemu-system-x86_64", "qemu-img"} {
		testenv.MustHaveTool(t, tool, "apt-get install iproute2 qemu-system-x86 qemu-utils")
	}
	needBinary(t)
	l := newLink(t)
	base, err := os.MkdirTemp("", "vpha")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	pool := filepath.Join(base, "pool")
	os.MkdirAll(pool, 0o755)
	st := memstore.New()
	t.Cleanup(func() { st.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := devenv.StartServer(ctx, devenv.ServerConfig{Store: st, DataDir: filepath.Join(base, "srv"), Listen: "127.0.0.1:0",
		AgentListen: l.hostIP + ":0", ServerNames: []string{l.hostIP, "127.0.0.1"},
		Controller: controller.Config{ResyncInterval: time.Second}})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	c, err := client.New(srv.URL(), srv.AdminToken(), client.WithPollInterval(100*time.Millisecond, 500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	pol := model.DefaultPolicy()
	pol.HA = &model.HAPolicy{HeartbeatMillis: 500, SuspectMillis: 1500, FenceMillis: 3000, MarginMillis: 1000}
	if _, err := c.SetPolicy(ctx, pol); err != nil {
		t.Fatal(err)
	}
	tok, err := srv.NewJoinToken(ctx, time.Hour, 2)
	if err != nil {
		t.Fatal(err)
	}
	d1, d2 := filepath.Join(base, "h1"), filepath.Join(base, "h2")
	t.Cleanup(func() { // QEMU outlives a killed agent: end the VM's processes too
		for _, pids := range qemuFor(filepath.Join(pool, "default.w1"), d1, d2) {
			for _, pid := range pids {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	agentProc(t, l.ns, "h1", "https://"+srv.AgentAddr(), tok.Token, d1, pool, "home=yes")
	agentProc(t, "", "h2", "https://"+srv.AgentAddr(), tok.Token, d2, pool)
	eventually(t, "two ready hosts", time.Minute, func() bool {
		hs, err := c.ListHosts(ctx)
		n := 0
		for _, h := range hs {
			if h.State == model.HostReady {
				n++
			}
		}
		return err == nil && n == 2
	})
	spec := model.VMSpec{VCPUs: 1, Memory: 64 * model.MiB, Disks: []model.Disk{{Name: "root", Size: 64 * model.MiB, Pool: "shared"}},
		Placement: model.Placement{PreferredLabels: map[string]string{"home": "yes"}}}
	if _, err := c.CreateVM(ctx, api.DefaultProject, api.VMCreateRequest{Name: "w1", Spec: spec}); err != nil {
		t.Fatal(err)
	}
	vm := waitVM(t, c, "running on h1", func(v *model.VM) bool { return v.Status.Phase == model.PhaseRunning && v.Status.Host == "h1" })
	diskDir := filepath.Join(pool, "default.w1")
	if q := qemuFor(diskDir, d1, d2); len(q[d1]) != 1 || len(q[d2]) != 0 {
		t.Fatalf("QEMU before the cut: %v", q)
	}

	l.set(t, false) // the partition
	vm = waitVM(t, c, "restarted on h2", func(v *model.VM) bool { return v.Status.Phase == model.PhaseRunning && v.Status.Host == "h2" })
	if q := qemuFor(diskDir, d1, d2); len(q[d1]) != 0 || len(q[d2]) != 1 {
		t.Fatalf("QEMU after the restart, during the partition: %v (h1's must have fenced itself)", q)
	}
	if vm.Status.Owner == nil || vm.Status.Owner.Host != "h2" || vm.Status.Owner.Epoch != 1 {
		t.Fatalf("disk owner after the restart: %+v", vm.Status.Owner)
	}

	l.set(t, true) // the partition heals
	eventually(t, "h1 ready again", time.Minute, func() bool { h, err := c.GetHost(ctx, "h1"); return err == nil && h.State == model.HostReady })
	time.Sleep(5 * time.Second) // several converge passes of h1's agent
	q := qemuFor(diskDir, d1, d2)
	if len(q[d1]) != 0 || len(q[d2]) != 1 {
		t.Fatalf("QEMU after the partition healed: %v, want h2's only", q)
	}
	files, _ := filepath.Glob(filepath.Join(diskDir, "root.*.qcow2"))
	if len(files) != 1 {
		t.Fatalf("disk files %v", files)
	}
	if out, err := exec.Command("qemu-img", "info", files[0]).CombinedOutput(); err == nil || !strings.Contains(string(out), "lock") {
		t.Fatalf("qemu-img opened the running VM's disk: the image lock is not held (%v: %s)", err, out)
	}
	if v, _ := c.GetVM(ctx, api.DefaultProject, "w1"); v.Status.Host != "h2" || v.Status.Phase != model.PhaseRunning {
		t.Fatalf("w1 after the partition healed: %s on %s", v.Status.Phase, v.Status.Host)
	}
}

func waitVM(t *testing.T, c *client.Client, what string, ok func(*model.VM) bool) *model.VM {
	t.Helper()
	var last *model.VM
	eventually(t, what, 2*time.Minute, func() bool {
		v, err := c.GetVM(context.Background(), api.DefaultProject, "w1")
		if err != nil {
			return false
		}
		last = v
		return ok(v)
	})
	return last
}
