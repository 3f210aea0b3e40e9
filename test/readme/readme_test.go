package readme

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/hypervisor/qemu/guest"
)

// promises are what a tour line's output must show, by a piece of the
// line. A line without one must only exit 0.
var promises = []struct{ line, want string }{
	{"vpool host list", "sim-3"},
	{"vpool image list", "busybox"},
	{"vpool project use team-a", "team-a"},
	{"vpool vm create web1", "running"},
	{"vpool vm show web1", "Power:"},
	{"| vpool vm console web1", "Linux 6."}, // the guest's shell answered uname -sr
	{"vpool vm console web1 --log", "VPOOL-GUEST-READY"},
	{"vpool vm stop web1", "stopped"},
	{"vpool vm start web1", "running"},
	{"vpool vm migrate web2", "moved live from"},
	{"vpool migration list", "completed"},
	{"vpool migration show web2", "Guest gap"},
	{"vpool vm disk resize web1", "2GiB"},
	{"vpool events -A", "vm.moved"},
	{"vpool token create", "vpt_"},
	{"vpool vm delete web1 web2", "deleted"},
}

// TestReadmeTour runs the README's tour against `vpool dev`.
func TestReadmeTour(t *testing.T) {
	if testing.Short() {
		t.Skip("the README tour boots a real guest; not in -short mode")
	}
	g := guest.Require(t)
	guest.AcquireSlot(t)
	root := repoRoot(t)
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	checkTheREADMEsWay(t, root, string(readme))
	tour := tourLines(string(readme))
	if len(tour) < 10 {
		t.Fatalf("README.md: the tour has %d lines; did its heading or block move?", len(tour))
	}
	bin := build(t, root)
	work := t.TempDir()
	dev := startDev(t, bin, work, filepath.Dir(g.Dir))
	start := time.Now()
	for _, line := range tour {
		t0 := time.Now()
		out, err := run(t, bin, work, line)
		t.Logf("$ %s  (%.1fs)\n%s", line, time.Since(t0).Seconds(), out)
		if err != nil {
			t.Fatalf("the tour's line\n  %s\nfailed: %v\n%s\nvpool dev said:\n%s", line, err, out, dev.out.String())
		}
		for _, p := range promises {
			if strings.Contains(line, p.line) && !strings.Contains(out, p.want) {
				t.Fatalf("the tour's line\n  %s\nprinted no %q:\n%s", line, p.want, out)
			}
		}
	}
	t.Logf("the tour's %d lines ran in %.1fs", len(tour), time.Since(start).Seconds())
	dev.stop(t)
	if pids := qemuPids(work); len(pids) > 0 {
		t.Fatalf("QEMU processes of the tour outlived vpool dev: %v", pids)
	}
}

// checkTheREADMEsWay checks that the README starts vpool with `make dev`,
// and that `make dev` ends in `bin/vpool dev` (what this test runs).
func checkTheREADMEsWay(t *testing.T, root, readme string) {
	t.Helper()
	if !strings.Contains(readme, "\nmake dev ") {
		t.Fatal("README.md no longer starts vpool with `make dev`: update this test with it")
	}
	script, err := os.ReadFile(filepath.Join(root, "scripts", "dev.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(script), `exec bin/vpool dev "$@"`) {
		t.Fatal("scripts/dev.sh no longer runs `bin/vpool dev`: update this test with what `make dev` runs")
	}
}

// tourLines returns the command lines of the first sh block after the
// heading "## A five-minute tour".
func tourLines(readme string) []string {
	_, after, ok := strings.Cut(readme, "## A five-minute tour")
	if !ok {
		return nil
	}
	_, block, ok := strings.Cut(after, "```sh\n")
	if !ok {
		return nil
	}
	block, _, _ = strings.Cut(block, "```")
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(block))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	return lines
}

func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found")
		}
		dir = parent
	}
}

// build compiles cmd/vpool into a temporary bin directory.
func build(t *testing.T, root string) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "vpool")
	t0 := time.Now()
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/vpool")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/vpool: %v\n%s", err, out)
	}
	t.Logf("go build ./cmd/vpool: %.1fs", time.Since(t0).Seconds())
	return bin
}

// env is the environment of the tour's shell: the binary on PATH, a home
// of its own (no user config), the guest cache of the test guest.
func env(bin, work, guestCache string) []string {
	var out []string
	for _, kv := range os.Environ() {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case "PATH", "HOME", "VPOOL_CONFIG", "VPOOL_ADDR", "VPOOL_TOKEN", "VPOOL_PROJECT", "XDG_CONFIG_HOME":
			continue
		}
		out = append(out, kv)
	}
	return append(out, "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"), "HOME="+work, "VPOOL_GUEST_CACHE="+guestCache)
}

// run runs one tour line with bash, in the working directory.
func run(t *testing.T, bin, work, line string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-o", "pipefail", "-c", line)
	cmd.Dir = work
	cmd.Env = env(bin, work, "")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// devProc is the running `vpool dev`.
type devProc struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan error
}

// startDev runs `vpool dev` in work as the README does (its default data
// dir ./.vpool, three simulated hosts, QEMU for the local host), on free
// loopback ports rather than 8440/8441 so that it never meets another
// vpool on this machine, and waits for its banner.
func startDev(t *testing.T, bin, work, guestCache string) *devProc {
	t.Helper()
	cmd := exec.Command(bin, "dev", "--listen", "127.0.0.1:0", "--agent-listen", "127.0.0.1:0")
	cmd.Dir = work
	cmd.Env = env(bin, work, guestCache)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	d := &devProc{cmd: cmd, out: &syncBuffer{}, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = d.out, d.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-d.done
		}
		for _, pid := range qemuPids(work) {
			_ = syscall.Kill(pid, syscall.SIGKILL) // a failed test must not leak a guest
		}
	})
	deadline := time.Now().Add(2 * time.Minute)
	const bannerEnd = "every transition, as it happens" // the banner's last line
	for !strings.Contains(d.out.String(), bannerEnd) {
		select {
		case err := <-d.done:
			t.Fatalf("vpool dev ended: %v\n%s", err, d.out.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no banner from vpool dev:\n%s", d.out.String())
		}
	}
	if !strings.Contains(d.out.String(), "driver qemu") || !strings.Contains(d.out.String(), "image        busybox") {
		t.Fatalf("vpool dev runs no QEMU host or has no test guest image:\n%s", d.out.String())
	}
	return d
}

// stop ends vpool dev with Ctrl-C (SIGINT), as a user does.
func (d *devProc) stop(t *testing.T) {
	t.Helper()
	_ = d.cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-d.done:
		if err != nil {
			t.Fatalf("vpool dev after Ctrl-C: %v\n%s", err, d.out.String())
		}
	case <-time.After(time.Minute):
		t.Fatalf("vpool dev did not end within a minute of Ctrl-C:\n%s", d.out.String())
	}
}

// qemuPids are the live QEMU processes whose pid files lie under work.
func qemuPids(work string) []int {
	files, _ := filepath.Glob(filepath.Join(work, ".vpool", "hosts", "*", "qemu", "vms", "*", "qemu.pid"))
	var out []int
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err == nil && pid > 0 && syscall.Kill(pid, 0) == nil {
			cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if bytes.Contains(cmdline, []byte(f)) {
				out = append(out, pid)
			}
		}
	}
	return out
}

// syncBuffer collects a process's output while it runs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
