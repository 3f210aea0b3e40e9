package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// qcluster is a server and two QEMU agents, restartable in place.
type qcluster struct {
	t               *testing.T // the top-level test: processes live as long as it
	dir             string
	guest           string // the built test guest's directory
	shared          string // the shared pool
	addr, agentAddr string
	s               *server
	agents          map[string]*proc
	state           map[string]string // host → agent state dir
}

func startQCluster(t *testing.T) *qcluster {
	t.Helper()
	guest := guestDir(t)
	dir := t.TempDir()
	cl := &qcluster{t: t, dir: dir, guest: guest, shared: filepath.Join(dir, "shared"),
		addr: freePort(t), agentAddr: freePort(t), agents: map[string]*proc{}, state: map[string]string{}}
	// Registered before any process starts, so it runs after they stopped:
	// a failed test must not leak a guest.
	t.Cleanup(cl.killQEMUs)
	if err := os.MkdirAll(cl.shared, 0o700); err != nil {
		t.Fatal(err)
	}
	cl.s = startServer(t, filepath.Join(dir, "server"), cl.addr, cl.agentAddr)
	tok := cl.s.joinToken(t)
	cl.importImage(tickImage, "vpool.tick=1")
	cl.importImage(dirtyImage, "vpool.tick=1", "vpool.dirty=32", "vpool.dirtyrate=8")
	for _, h := range qhosts {
		cl.state[h] = filepath.Join(dir, h)
		cl.startAgent(h, tok)
	}
	cl.s.waitHosts(t, len(qhosts))
	return cl
}

// guestDir builds (or finds) the test guest and returns its directory.
func guestDir(t *testing.T) string {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(root, "scripts", "build-guest.sh"))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("scripts/build-guest.sh: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1]
}

// importImage imports the test guest as image name, with switches
// appended to its kernel command line (hosts fetch it from the server).
func (cl *qcluster) importImage(name string, switches ...string) {
	t := cl.t
	base, err := os.ReadFile(filepath.Join(cl.guest, "cmdline"))
	if err != nil {
		t.Fatal(err)
	}
	line := strings.TrimSpace(string(base)) + " " + strings.Join(switches, " ")
	cl.s.cli(t, "image", "import", name, cl.guest, "--cmdline", line)
}

// startAgent runs host's QEMU agent; token is empty on a restart.
func (cl *qcluster) startAgent(host, token string) {
	args := []string{"agent", "--server", "https://" + cl.agentAddr, "--state-dir", cl.state[host], "--name", host,
		"--driver", "qemu", "--pool", "shared=" + cl.shared, "--log-level", "info"}
	var env []string
	if token != "" {
		env = append(env, "VPOOL_JOIN_TOKEN="+token)
	}
	cl.agents[host] = startProc(cl.t, "agent-"+host, env, args...)
}

// restartServer starts the server again on its data directory and
// addresses (after a kill -9).
func (cl *qcluster) restartServer() {
	cl.s = startServer(cl.t, filepath.Join(cl.dir, "server"), cl.addr, cl.agentAddr)
}

// killQEMUs kills every QEMU running from the cluster's state dirs.
func (cl *qcluster) killQEMUs() {
	for _, h := range qhosts {
		for id, pids := range qemuProcs(cl.state[h]) {
			for _, pid := range pids {
				cl.t.Logf("cleanup: killing QEMU of %s on %s (pid %d)", id, h, pid)
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}

func vmIDOf(name string) string { return api.DefaultProject + "." + name }

// qemuProcs returns the live QEMU processes of the driver on an agent's
// state dir, by VM id (a process's -pidfile lies in its VM directory).
func qemuProcs(stateDir string) map[string][]int {
	out := map[string][]int{}
	if stateDir == "" {
		return out
	}
	prefix := filepath.Join(stateDir, "qemu", "vms") + "/"
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p) // empty for zombies
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "-pidfile" && strings.HasPrefix(args[i+1], prefix) {
				id := strings.TrimSuffix(strings.TrimPrefix(args[i+1], prefix), "/qemu.pid")
				pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
				out[id] = append(out[id], pid)
			}
		}
	}
	return out
}

func (cl *qcluster) vmDir(host, name string) string {
	return filepath.Join(cl.state[host], "qemu", "vms", vmIDOf(name))
}

// qemuPid is the one QEMU process of name on host (0 when there is none).
func (cl *qcluster) qemuPid(t *testing.T, host, name string) int {
	t.Helper()
	pids := qemuProcs(cl.state[host])[vmIDOf(name)]
	switch len(pids) {
	case 0:
		return 0
	case 1:
		return pids[0]
	}
	t.Fatalf("%s has %d QEMU processes on %s: %v", name, len(pids), host, pids)
	return 0
}

// leftovers lists what host keeps of name: QEMU process, VM directory
// (record, pid file, logs, sockets), socket in the driver's run dir, disk
// directory in its default pool or owned by it in the shared pool.
func (cl *qcluster) leftovers(host, name string) []string {
	sd, id := cl.state[host], vmIDOf(name)
	var out []string
	if pids := qemuProcs(sd)[id]; len(pids) > 0 {
		out = append(out, fmt.Sprintf("QEMU process %v", pids))
	}
	vmDir := cl.vmDir(host, name)
	if ents, err := os.ReadDir(vmDir); err == nil {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		out = append(out, fmt.Sprintf("VM directory %s %v", vmDir, names))
	}
	// Sockets whose path would be too long live in the run dir under a hash.
	h := sha256.Sum256([]byte(vmDir))
	runDir := filepath.Join(os.TempDir(), fmt.Sprintf("vpool-run-%d", os.Getuid()))
	for _, s := range []string{"qmp.sock", "console.sock"} {
		if p := filepath.Join(runDir, hex.EncodeToString(h[:8])+"."+s); exists(p) {
			out = append(out, "socket "+p)
		}
	}
	if d := filepath.Join(sd, "qemu", "pools", "default", id); exists(d) {
		out = append(out, "disk directory "+d)
	}
	if d := filepath.Join(cl.shared, id); exists(d) && cl.sharedOwner(name) == filepath.Join(sd, "qemu") {
		out = append(out, "shared disk directory owned here "+d)
	}
	return out
}

func exists(p string) bool { _, err := os.Lstat(p); return err == nil }

// sharedOwner is the host that owns name's disks in the shared pool, as
// the owner record says ("" when there is none or it names another VM).
func (cl *qcluster) sharedOwner(name string) string {
	b, _ := os.ReadFile(filepath.Join(cl.shared, vmIDOf(name), ".vpool-owner"))
	var rec struct {
		Host string `json:"host"`
		VM   string `json:"vm"`
	}
	if json.Unmarshal(b, &rec) != nil || rec.VM != vmIDOf(name) {
		return ""
	}
	return rec.Host
}

// assertClean fails unless host keeps nothing of name, waiting a while for
// asynchronous clean-up.
func (cl *qcluster) assertClean(t *testing.T, host, name string) {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for {
		left := cl.leftovers(host, name)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s keeps leftovers of %s: %s", host, name, strings.Join(left, "; "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// createOn creates a VM on host (the other host cordoned while it is
// placed) and waits until its guest ticks.
func (cl *qcluster) createOn(t *testing.T, host, name, image, memory, disk string) {
	t.Helper()
	var others []string
	for _, h := range qhosts {
		if h != host {
			others = append(others, h)
		}
	}
	cl.s.cli(t, append([]string{"host", "cordon"}, others...)...)
	cl.s.cli(t, "vm", "create", name, "--image", image, "--memory", memory, "--disk", disk, "--wait", "--timeout", "2m")
	cl.s.cli(t, append([]string{"host", "uncordon"}, others...)...)
	if vm := listVMs(t, cl.s)[name]; vm.Status.Host != host {
		t.Fatalf("%s was placed on %q, want %s", name, vm.Status.Host, host)
	}
	if !alive(cl.qemuPid(t, host, name)) {
		t.Fatalf("no QEMU process for %s on %s", name, host)
	}
	cl.waitTick(t, host, name, 0)
}

var tickRe = regexp.MustCompile(`(?m)^TICK (\d+) `)

// lastTick is the newest tick the guest printed in host's serial log.
func (cl *qcluster) lastTick(host, name string) int {
	b, _ := os.ReadFile(filepath.Join(cl.vmDir(host, name), "serial.log"))
	n := 0
	for _, m := range tickRe.FindAllSubmatch(b, -1) {
		if v, _ := strconv.Atoi(string(m[1])); v > n {
			n = v
		}
	}
	return n
}

// waitTick waits until the guest on host printed a tick newer than after
// and returns it.
func (cl *qcluster) waitTick(t *testing.T, host, name string, after int) int {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if n := cl.lastTick(host, name); n > after {
			return n
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(cl.vmDir(host, name), "serial.log"))
			b = b[max(0, len(b)-3000):]
			t.Fatalf("timed out after 1m0s waiting for %s ticking on %s after tick %d; serial log tail:\n%s", name, host, after, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// migrate starts a migration with the CLI and returns it.
func (cl *qcluster) migrate(t *testing.T, name, to string, extra ...string) model.Migration {
	t.Helper()
	var m model.Migration
	args := append([]string{"vm", "migrate", name, "--to", to, "-o", "json", "--no-wait"}, extra...)
	mustJSON(t, cl.s.cli(t, args...), &m)
	if m.Name == "" {
		t.Fatalf("vm migrate answered no migration id: %+v", m)
	}
	return m
}

// showMigration is `vpool migration show ID -o json`.
func (cl *qcluster) showMigration(t *testing.T, id string) model.Migration {
	t.Helper()
	var m model.Migration
	mustJSON(t, cl.s.cli(t, "migration", "show", id, "-o", "json"), &m)
	return m
}

// waitMigration polls the migration (through whichever server runs)
// until cond holds.
func (cl *qcluster) waitMigration(t *testing.T, id, what string, within time.Duration, cond func(*model.Migration) bool) model.Migration {
	t.Helper()
	var last *model.Migration
	for deadline := time.Now().Add(within); ; time.Sleep(100 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		m, err := cl.s.c.GetMigration(ctx, id)
		cancel()
		if err == nil {
			last = m
			if cond(m) {
				return *m
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for migration %s %s (last: %s)", within, id, what, describeMig(last))
		}
	}
}

func describeMig(m *model.Migration) string {
	if m == nil {
		return "none"
	}
	return fmt.Sprintf("phase %s, sent %d, left %d, stage %s, reason %q, sourceError %q, abort %q",
		m.Phase, m.Progress.BytesSent, m.Progress.BytesLeft, m.Progress.Stage, m.Reason, m.SourceError, m.Abort)
}

// waitTransferring waits until memory moves.
func (cl *qcluster) waitTransferring(t *testing.T, id string) model.Migration {
	t.Helper()
	return cl.waitMigration(t, id, "transferring memory", 90*time.Second, func(m *model.Migration) bool {
		if m.Phase.Final() {
			t.Fatalf("migration %s ended before the test could act mid-transfer: %s", id, describeMig(m))
		}
		return m.Phase == model.MigrationTransferring && m.Progress.BytesSent > 0
	})
}

func (cl *qcluster) waitFinal(t *testing.T, id string) model.Migration {
	t.Helper()
	return cl.waitMigration(t, id, "final", 3*time.Minute, func(m *model.Migration) bool { return m.Phase.Final() })
}

func (cl *qcluster) host(t *testing.T, name string) model.Host {
	t.Helper()
	var h model.Host
	mustJSON(t, cl.s.cli(t, "host", "show", name, "-o", "json"), &h)
	return h
}

func (cl *qcluster) vm(t *testing.T, name string) model.VM {
	t.Helper()
	vm, err := cl.s.c.GetVM(context.Background(), api.DefaultProject, name)
	if err != nil {
		t.Fatalf("get vm %s: %v", name, err)
	}
	return *vm
}

func other(host string) string {
	if host == "q1" {
		return "q2"
	}
	return "q1"
}
