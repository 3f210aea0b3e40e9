package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
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
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store/etcdstore/etcdtest"
)

// bin is the vpool binary, built once by the first test that needs it.
var (
	bin      string
	buildErr error
	building sync.Once
	binDir   string
)

func TestMain(m *testing.M) {
	etcdtest.MaybeRunMember() // etcd member child processes stop here
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

func build() error {
	dir, err := os.MkdirTemp("", "vpool-e2e-")
	if err != nil {
		return err
	}
	binDir = dir
	root, err := repoRoot()
	if err != nil {
		return err
	}
	out := filepath.Join(dir, "vpool")
	cmd := exec.Command("go", "build", "-o", out, "./cmd/vpool")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("e2e: go build ./cmd/vpool: %v\n%s", err, b)
	}
	bin = out
	return nil
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("e2e: go.mod not found")
		}
		dir = parent
	}
}

// needBinary skips in -short mode and builds the binary once.
func needBinary(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("e2e tests build and run the binary; skipped with -short")
	}
	building.Do(func() { buildErr = build() })
	if buildErr != nil {
		t.Fatal(buildErr)
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// proc is one vpool process.
type proc struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	mu   sync.Mutex
	err  error
}

func startProc(t *testing.T, name string, env []string, args ...string) *proc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(isolatedEnv(t), env...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		f.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			p.dumpLog()
		}
	})
	return p
}

// isolatedEnv keeps the user's CLI config and environment out of tests.
func isolatedEnv(t *testing.T) []string {
	home := t.TempDir()
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "VPOOL_") || strings.HasPrefix(kv, "HOME=") || strings.HasPrefix(kv, "XDG_CONFIG_HOME=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, ".config"))
}

// stop ends the process gracefully (SIGTERM, then SIGKILL after 10s).
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// kill9 ends the process with SIGKILL, as a crash would.
func (p *proc) kill9() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

func (p *proc) dumpLog() {
	b, _ := os.ReadFile(p.log)
	if len(b) > 6000 {
		b = b[len(b)-6000:]
	}
	p.t.Logf("--- %s log (tail) ---\n%s", p.name, b)
}

// server is a `vpool server` process and how to reach it.
type server struct {
	*proc
	dataDir, addr, agentAddr string
	token                    string
	c                        *client.Client
}

func startServer(t *testing.T, dataDir, addr, agentAddr string, extra ...string) *server {
	t.Helper()
	args := append([]string{"server", "--data-dir", dataDir, "--listen", addr, "--agent-listen", agentAddr, "--log-level", "info"}, extra...)
	s := &server{proc: startProc(t, "server", nil, args...), dataDir: dataDir, addr: addr, agentAddr: agentAddr}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		select {
		case <-s.done:
			s.dumpLog()
			t.Fatalf("server exited before it was healthy: %v", s.err)
		default:
		}
		if time.Now().After(deadline) {
			s.dumpLog()
			t.Fatal("server not healthy after 60s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	tok, err := os.ReadFile(filepath.Join(dataDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	s.token = strings.TrimSpace(string(tok))
	s.c, err = client.New("http://"+addr, s.token, client.WithPollInterval(50*time.Millisecond, 250*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// joinToken issues a join token for up to 16 hosts.
func (s *server) joinToken(t *testing.T) string {
	t.Helper()
	out := s.cli(t, "host", "join-token", "--uses", "16", "-o", "json")
	var resp api.JoinTokenResponse
	mustJSON(t, out, &resp)
	if resp.Token == "" {
		t.Fatalf("join-token printed no token: %s", out)
	}
	return resp.Token
}

// startAgent runs a sim agent; token may be empty on a restart.
func (s *server) startAgent(t *testing.T, name, stateDir, token string) *proc {
	t.Helper()
	args := []string{"agent", "--server", "https://" + s.agentAddr, "--state-dir", stateDir, "--name", name,
		"--driver", "sim", "--sim-cpus", "32", "--sim-memory", "64GiB", "--log-level", "info"}
	if token != "" {
		args = append(args, "--join-token-file", secretFile(t, token))
	}
	return startProc(t, "agent-"+name, nil, args...)
}

// secretFile writes a secret to a 0600 file of its own: secrets never go
// on a command line.
func secretFile(t *testing.T, secret string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// cli runs the CLI against the server and returns stdout; it fails the
// test on a non-zero exit.
func (s *server) cli(t *testing.T, args ...string) []byte {
	t.Helper()
	out, errOut, err := s.cliResult(args...)
	if err != nil {
		t.Fatalf("vpool %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

func (s *server) cliResult(args ...string) ([]byte, []byte, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "VPOOL_ADDR=http://"+s.addr, "VPOOL_TOKEN="+s.token)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	return out.Bytes(), errOut.Bytes(), err
}

func (s *server) waitHosts(t *testing.T, n int) {
	t.Helper()
	eventually(t, fmt.Sprintf("%d hosts ready", n), 60*time.Second, func() bool {
		hs, err := s.c.ListHosts(context.Background())
		ready := 0
		for _, h := range hs {
			if h.State == model.HostReady {
				ready++
			}
		}
		return err == nil && ready >= n
	})
}

func eventually(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
