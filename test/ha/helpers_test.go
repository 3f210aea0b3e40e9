package ha

import (
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

	"github.com/vpool/vpool/internal/agent"
	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/client"
	"github.com/vpool/vpool/internal/hypervisor/sim"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/testenv"
)

// The binary, built once.
var (
	bin      string
	buildErr error
	building sync.Once
	binDir   string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

func needBinary(tb testing.TB) {
	tb.Helper()
	if testing.Short() {
		testenv.SkipOrFail(tb, "the failover tests run three server processes; skipped with -short")
	}
	building.Do(func() {
		dir, err := os.MkdirTemp("", "vpool-ha-")
		if err != nil {
			buildErr = err
			return
		}
		binDir = dir
		out := filepath.Join(dir, "vpool")
		cmd := exec.Command("go", "build", "-o", out, "./cmd/vpool")
		cmd.Dir = "../.."
		if b, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/vpool: %v\n%s", err, b)
			return
		}
		bin = out
	})
	if buildErr != nil {
		tb.Fatal(buildErr)
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

// srv is one `vpool server` process of the cluster; it can be killed and
// started again on its data dir and ports.
type srv struct {
	tb                          testing.TB
	name, dir                   string
	api, agent, peer            string // host:port
	extra                       []string
	log                         string
	cmd                         *exec.Cmd
	done                        chan struct{}
	mu                          sync.Mutex
	exited                      bool
	apiClient                   *client.Client
	startedAt, healthyAt, endAt time.Time
}

func (s *srv) start() {
	s.tb.Helper()
	args := append([]string{"server", "--name", s.name, "--data-dir", s.dir, "--listen", s.api, "--agent-listen", s.agent,
		"--peer-url", "https://" + s.peer, "--log-level", "info"}, s.extra...)
	f, err := os.OpenFile(s.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		s.tb.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = isolatedEnv(s.tb)
	if err := cmd.Start(); err != nil {
		s.tb.Fatal(err)
	}
	done := make(chan struct{})
	s.mu.Lock()
	s.cmd, s.done, s.exited, s.startedAt = cmd, done, false, time.Now()
	s.mu.Unlock()
	go func() {
		_ = cmd.Wait()
		f.Close()
		s.mu.Lock()
		s.exited = true
		s.mu.Unlock()
		close(done)
	}()
}

// waitHealthy waits for /healthz.
func (s *srv) waitHealthy() {
	s.tb.Helper()
	deadline := time.Now().Add(150 * time.Second)
	for {
		resp, err := http.Get("http://" + s.api + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				s.healthyAt = time.Now()
				return
			}
		}
		select {
		case <-s.done:
			s.dumpLog()
			s.tb.Fatalf("server %s exited before it was healthy", s.name)
		default:
		}
		if time.Now().After(deadline) {
			s.dumpLog()
			s.tb.Fatalf("server %s not healthy after 150s", s.name)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *srv) running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd != nil && !s.exited
}

// kill9 ends the process as a crash would.
func (s *srv) kill9() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	_ = cmd.Process.Kill()
	<-done
}

// stop ends the process gracefully (SIGKILL after 10 s).
func (s *srv) stop() {
	if !s.running() {
		return
	}
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

func (s *srv) dumpLog() {
	b, _ := os.ReadFile(s.log)
	if len(b) > 8000 {
		b = b[len(b)-8000:]
	}
	s.tb.Logf("--- %s log (tail) ---\n%s", s.name, b)
}

// isolatedEnv keeps the user's CLI config and environment out of tests.
func isolatedEnv(tb testing.TB) []string {
	home := tb.TempDir()
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "VPOOL_") || strings.HasPrefix(kv, "HOME=") || strings.HasPrefix(kv, "XDG_CONFIG_HOME=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, ".config"))
}

// cluster is three servers of one control plane and a client of all.
type cluster struct {
	tb      testing.TB
	servers []*srv
	token   string
	c       *client.Client // knows every server, fails over
	caHash  string
}

// startCluster starts the first server alone, then adds the others one
// by one: `vpool cluster member add` (the client's AddMember) and
// `vpool server --join`.
func startCluster(tb testing.TB, n int) *cluster {
	tb.Helper()
	needBinary(tb)
	root := tb.TempDir()
	cl := &cluster{tb: tb}
	for i := 1; i <= n; i++ {
		s := &srv{tb: tb, name: fmt.Sprintf("s%d", i), dir: filepath.Join(root, fmt.Sprintf("s%d", i)),
			api: freeAddr(tb), agent: freeAddr(tb), peer: freeAddr(tb), log: filepath.Join(root, fmt.Sprintf("s%d.log", i))}
		cl.servers = append(cl.servers, s)
		tb.Cleanup(func() {
			s.stop()
			if tb.Failed() {
				s.dumpLog()
			}
		})
	}
	first := cl.servers[0]
	first.start()
	first.waitHealthy()
	tok, err := os.ReadFile(filepath.Join(first.dir, "admin.token"))
	if err != nil {
		tb.Fatal(err)
	}
	cl.token = strings.TrimSpace(string(tok))
	first.apiClient = cl.clientOf(first)
	for _, s := range cl.servers[1:] {
		res, err := first.apiClient.AddMember(context.Background(), api.MemberAddRequest{Name: s.name})
		if err != nil {
			tb.Fatalf("member add %s: %v", s.name, err)
		}
		file := filepath.Join(root, s.name+".token")
		if err := os.WriteFile(file, []byte(res.Token+"\n"), 0o600); err != nil {
			tb.Fatal(err)
		}
		s.extra = []string{"--join", "https://" + first.agent, "--join-token-file", file}
		s.start()
		s.waitHealthy()
		s.apiClient = cl.clientOf(s)
	}
	var addrs []string
	for _, s := range cl.servers {
		addrs = append(addrs, "http://"+s.api)
	}
	c, err := client.New(strings.Join(addrs, ","), cl.token, client.WithPollInterval(50*time.Millisecond, 250*time.Millisecond))
	if err != nil {
		tb.Fatal(err)
	}
	cl.c = c
	info, err := c.ClusterInfo(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	cl.caHash = info.CAHash
	return cl
}

// clientOf is a client of one server only.
func (cl *cluster) clientOf(s *srv) *client.Client {
	c, err := client.New("http://"+s.api, cl.token, client.WithPollInterval(50*time.Millisecond, 250*time.Millisecond))
	if err != nil {
		cl.tb.Fatal(err)
	}
	return c
}

func (cl *cluster) agentURLs() string {
	var urls []string
	for _, s := range cl.servers {
		urls = append(urls, "https://"+s.agent)
	}
	return strings.Join(urls, ",")
}

// leader is the server running the controllers, as the cluster says.
func (cl *cluster) leader(ctx context.Context) (*srv, error) {
	info, err := cl.c.ClusterInfo(ctx)
	if err != nil {
		return nil, err
	}
	for _, s := range cl.servers {
		if s.name == info.Leader {
			return s, nil
		}
	}
	return nil, fmt.Errorf("no leader (%q)", info.Leader)
}

// hosts are simulated hosts in this process, one registry so that VMs
// migrate between them, each with an agent that knows every server.
type hosts struct {
	names  []string
	sims   map[string]*sim.Host
	agents map[string]*agent.Agent
}

// checkNoSelfFence fails the test when a host's agent fenced itself (a
// healthy host killing its VMs: its renewals stalled for the fence
// timeout), and logs how close each came: its longest time between two
// renewals.
func (hs *hosts) checkNoSelfFence(tb testing.TB) {
	tb.Helper()
	for _, name := range hs.names {
		a := hs.agents[name]
		_, count := a.Fenced()
		tb.Logf("%s: longest time between renewals %s", name, a.LongestRenewalGap().Round(time.Millisecond))
		if count > 0 {
			tb.Errorf("%s's agent fenced itself %d times (longest time between renewals %s)", name, count, a.LongestRenewalGap().Round(time.Millisecond))
		}
	}
}

func startHosts(tb testing.TB, cl *cluster, n int, migrateDelay time.Duration) *hosts {
	tb.Helper()
	jt, err := cl.c.CreateJoinToken(context.Background(), api.JoinTokenRequest{Uses: n})
	if err != nil {
		tb.Fatal(err)
	}
	reg := sim.NewRegistry()
	hs := &hosts{sims: map[string]*sim.Host{}, agents: map[string]*agent.Agent{}}
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("h%d", i)
		h := sim.MustHost(sim.Config{Name: name, CPUs: 32, Memory: 64 * model.GiB, Registry: reg, MigrateDelay: migrateDelay})
		a, err := agent.New(agent.Config{ServerURL: cl.agentURLs(), JoinToken: jt.Token, StateDir: tb.TempDir(), HostName: name,
			Driver: h.Driver(), StatusInterval: 500 * time.Millisecond, PollWait: 5 * time.Second})
		if err != nil {
			tb.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = a.Run(ctx) }()
		tb.Cleanup(func() { cancel(); <-done })
		hs.names = append(hs.names, name)
		hs.sims[name] = h
		hs.agents[name] = a
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		list, err := cl.c.ListHosts(context.Background())
		ready := 0
		for _, h := range list {
			if h.State == model.HostReady {
				ready++
			}
		}
		if err == nil && ready == n {
			return hs
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%d of %d hosts ready after 60s (err %v)", ready, n, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// running counts, per VM name, the hosts that run it.
func (hs *hosts) running(tb testing.TB) map[string][]string {
	tb.Helper()
	out := map[string][]string{}
	for _, name := range hs.names {
		infos, err := hs.sims[name].Driver().List(context.Background())
		if err != nil {
			tb.Fatal(err)
		}
		for _, in := range infos {
			if in.State == "running" {
				out[in.Config.Name] = append(out[in.Config.Name], name)
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
		time.Sleep(50 * time.Millisecond)
	}
}

func smallVM(name string) api.VMCreateRequest {
	return api.VMCreateRequest{Name: name, Spec: model.VMSpec{VCPUs: 1, Memory: 128 * model.MiB,
		Disks: []model.Disk{{Name: "root", Size: model.GiB}}}}
}
