package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/testenv"
)

// needQEMU skips without qemu-system-x86_64, unless VPOOL_REQUIRE_HEAVY=1
// (CI), where a missing tool is a failure.
func needQEMU(t *testing.T) {
	t.Helper()
	testenv.MustHaveTool(t, "qemu-system-x86_64", "apt-get install qemu-system-x86")
}

func alive(pid int) bool { return pid > 0 && syscall.Kill(pid, 0) == nil }

// TestAgentKillQEMU kills -9 an agent running a real QEMU guest: the
// guest keeps running, and the restarted agent adopts the same process.
func TestAgentKillQEMU(t *testing.T) {
	needBinary(t)
	needQEMU(t)
	guest := guestDir(t)
	dir := t.TempDir()
	s := startServer(t, filepath.Join(dir, "server"), freePort(t), freePort(t))
	agentDir := filepath.Join(dir, "q1")
	startQ := func(token string) *proc {
		args := []string{"agent", "--server", "https://" + s.agentAddr, "--state-dir", agentDir, "--name", "q1", "--driver", "qemu"}
		var env []string
		if token != "" {
			env = append(env, "VPOOL_JOIN_TOKEN="+token)
		}
		return startProc(t, "agent-q1", env, args...)
	}
	a := startQ(s.joinToken(t))
	s.waitHosts(t, 1)
	pidFile := filepath.Join(agentDir, "qemu", "vms", "default.g1", "qemu.pid")
	readPid := func() int {
		b, _ := os.ReadFile(pidFile)
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return pid
	}
	t.Cleanup(func() {
		if pid := readPid(); alive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL) // a failed test must not leak a guest
		}
	})
	s.cli(t, "image", "import", "test-guest", guest)
	s.cli(t, "vm", "create", "g1", "--image", "test-guest", "--memory", "256MiB", "--disk", "1GiB", "--wait", "--timeout", "2m")
	pid := readPid()
	if !alive(pid) {
		t.Fatalf("no QEMU process for g1 (pid file says %d)", pid)
	}
	a.kill9()
	time.Sleep(500 * time.Millisecond)
	if !alive(pid) {
		t.Fatal("the guest died with its agent")
	}
	startQ("")
	time.Sleep(2 * time.Second) // a few converge passes of the new agent
	if got := readPid(); got != pid || !alive(pid) {
		t.Fatalf("the restarted agent did not adopt the guest: pid %d → %d (alive %v)", pid, got, alive(pid))
	}
	if vm := listVMs(t, s)["g1"]; vm.Status.Phase != model.PhaseRunning {
		t.Fatalf("g1 is %s after the agent came back", vm.Status.Phase)
	}
	s.cli(t, "vm", "delete", "g1", "--wait", "--timeout", "2m")
	eventually(t, "the guest process gone", 30*time.Second, func() bool { return !alive(pid) })
}
