package scale

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/store/etcdstore"
	"github.com/vpool/vpool/internal/testenv"
)

// envEtcd carries an etcd member child's spec (JSON).
const envEtcd = "VPOOL_SCALE_ETCD"

type etcdSpec struct {
	DataDir, ClientURL, PeerURL string
}

func TestMain(m *testing.M) {
	if spec := os.Getenv(envEtcd); spec != "" {
		os.Exit(runEtcd(spec))
	}
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// runEtcd is a child process: one etcd member with production settings
// (fsync on, default raft timings), plaintext on loopback, until a signal
// comes (it dies with the test process: Pdeathsig).
func runEtcd(raw string) int {
	var spec etcdSpec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		fmt.Fprintf(os.Stderr, "scale: bad %s: %v\n", envEtcd, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	s, err := etcdstore.StartEmbedded(ctx, etcdstore.Config{DataDir: spec.DataDir, ClientURL: spec.ClientURL,
		PeerURL: spec.PeerURL, Plaintext: true, Logger: log})
	if err != nil {
		fmt.Fprintf(os.Stderr, "scale: etcd: %v\n", err)
		return 1
	}
	defer s.Close()
	fmt.Println("SCALE-ETCD-READY")
	<-ctx.Done()
	return 0
}

// The vpool binary, built once.
var (
	bin      string
	buildErr error
	building sync.Once
	binDir   string
)

// vpoolBinary returns VPOOL_SCALE_SERVER_BIN, or builds ./cmd/vpool once.
func vpoolBinary(tb testing.TB) string {
	tb.Helper()
	if b := os.Getenv("VPOOL_SCALE_SERVER_BIN"); b != "" {
		return b
	}
	building.Do(func() {
		dir, err := os.MkdirTemp("", "vpool-scale-")
		if err != nil {
			buildErr = err
			return
		}
		binDir = dir
		out := filepath.Join(dir, "vpool")
		cmd := exec.Command("go", "build", "-o", out, "./cmd/vpool")
		cmd.Dir = repoRoot(tb)
		if b, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("scale: go build ./cmd/vpool: %v\n%s", err, b)
			return
		}
		bin = out
	})
	if buildErr != nil {
		tb.Fatal(buildErr)
	}
	return bin
}

func repoRoot(tb testing.TB) string {
	dir, _ := os.Getwd()
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			tb.Fatal("scale: go.mod not found")
		}
		dir = parent
	}
}

func freeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// proc is one child process.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// startProc starts a child with its output in a log file; it is stopped
// (SIGTERM, then SIGKILL) when the test ends.
func startProc(tb testing.TB, name string, env []string, path string, args ...string) *proc {
	tb.Helper()
	logPath := filepath.Join(tb.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(cleanEnv(tb), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the test
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); f.Close(); close(p.done) }()
	tb.Cleanup(func() {
		p.stop()
		if tb.Failed() {
			p.dumpLog(tb)
		}
	})
	return p
}

// cleanEnv keeps the user's CLI config out of the children.
func cleanEnv(tb testing.TB) []string {
	home := tb.TempDir()
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "VPOOL_") || strings.HasPrefix(kv, "HOME=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "HOME="+home)
}

func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// kill9 ends the process as a crash would.
func (p *proc) kill9() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

func (p *proc) dumpLog(tb testing.TB) {
	b, _ := os.ReadFile(p.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	tb.Logf("--- %s log (tail) ---\n%s", p.name, b)
}

// startEtcd runs one etcd member (this test binary) and returns its
// client URL.
func startEtcd(tb testing.TB) (string, *proc) {
	tb.Helper()
	spec, _ := json.Marshal(etcdSpec{DataDir: filepath.Join(tb.TempDir(), "etcd"),
		ClientURL: "http://" + freeAddr(tb), PeerURL: "http://" + freeAddr(tb)})
	p := startProc(tb, "etcd", []string{envEtcd + "=" + string(spec)}, os.Args[0], "-test.run=^$")
	var s etcdSpec
	_ = json.Unmarshal(spec, &s)
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if b, _ := os.ReadFile(p.log); strings.Contains(string(b), "SCALE-ETCD-READY") {
			return s.ClientURL, p
		}
		select {
		case <-p.done:
			p.dumpLog(tb)
			tb.Fatal("scale: etcd exited")
		case <-time.After(50 * time.Millisecond):
		}
	}
	p.dumpLog(tb)
	tb.Fatal("scale: etcd not ready after a minute")
	return "", nil
}

// cpuSeconds is a process's CPU time (user + system) so far.
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// fields after the command name (which may hold spaces) in parentheses
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	u, _ := strconv.ParseFloat(f[11], 64)
	s, _ := strconv.ParseFloat(f[12], 64)
	return (u + s) / 100 // clock ticks (USER_HZ 100)
}

// memory is a process's resident set: now, at its peak, and now split
// into anonymous memory (Go's heap, stacks, buffers) and file-backed
// pages (the binary, and the embedded etcd's bbolt mmap: counted in RSS,
// but the kernel can drop it and read it again).
type memory struct{ now, peak, anon, file int64 }

// rssBytes reads a process's resident set from /proc/PID/status.
func rssBytes(pid int) memory {
	var m memory
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return m
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(fields[1], 10, 64)
		switch fields[0] {
		case "VmRSS:":
			m.now = kb << 10
		case "VmHWM:":
			m.peak = kb << 10
		case "RssAnon:":
			m.anon = kb << 10
		case "RssFile:", "RssShmem:":
			m.file += kb << 10
		}
	}
	return m
}

// needHeavy skips with -short: these tests start several processes.
func needHeavy(tb testing.TB) {
	tb.Helper()
	if testing.Short() {
		tb.Skip("scale: starts servers, an etcd and a fleet; skipped with -short")
	}
	testenv.MustHaveTool(tb, "go", "the benchmarks build ./cmd/vpool")
}
