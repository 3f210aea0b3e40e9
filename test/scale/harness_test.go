package scale

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/client"
	"github.com/vpool/vpool/internal/fleet"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/trace"
)

// sizes are a run's dimensions, from the environment.
type sizes struct {
	hosts, vms, clients, projects int
	perPost                       int // VMs a POST creates (BenchmarkPlaceEndToEnd; 0 or 1: one by POST /vms)
	window, settle                time.Duration
	trace                         *trace.Trace
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// readSizes reads VPOOL_SCALE_HOSTS (default 200), VPOOL_SCALE_VMS
// (2000), VPOOL_SCALE_CLIENTS (64), VPOOL_SCALE_PROJECTS (8),
// VPOOL_SCALE_WINDOW (measurement, 30s), VPOOL_SCALE_SETTLE (before it,
// 40s: past one usage sample) and VPOOL_SCALE_TRACE (a PlanetLab folder).
func readSizes(tb testing.TB) sizes {
	s := sizes{hosts: envInt("VPOOL_SCALE_HOSTS", 200), vms: envInt("VPOOL_SCALE_VMS", 2000),
		clients: envInt("VPOOL_SCALE_CLIENTS", 64), projects: envInt("VPOOL_SCALE_PROJECTS", 8),
		window: envDuration("VPOOL_SCALE_WINDOW", 30*time.Second), settle: envDuration("VPOOL_SCALE_SETTLE", 40*time.Second)}
	if dir := os.Getenv("VPOOL_SCALE_TRACE"); dir != "" {
		t, err := trace.ReadPlanetLabDir(dir, trace.ByName)
		if err != nil {
			tb.Fatal(err)
		}
		s.trace = t
	}
	return s
}

// hostCapacity is every fleet host's inventory: identical hosts, so that
// the packing lower bound is exact.
var hostCapacity = model.Resources{CPUs: 64, Memory: 256 * model.GiB, Disk: 4 * model.TiB}

// vmShapes are the VMs created, in turn by a seeded draw.
var vmShapes = []model.VMSpec{
	{VCPUs: 1, Memory: 2 * model.GiB}, {VCPUs: 2, Memory: 4 * model.GiB}, {VCPUs: 2, Memory: 8 * model.GiB},
	{VCPUs: 4, Memory: 8 * model.GiB}, {VCPUs: 4, Memory: 16 * model.GiB}, {VCPUs: 8, Memory: 32 * model.GiB},
}

func vmSpec(i int) model.VMSpec {
	s := vmShapes[rand.New(rand.NewPCG(uint64(i), 14)).IntN(len(vmShapes))]
	s.Disks = []model.Disk{{Size: 20 * model.GiB}}
	s.Power = model.PowerRunning
	return s
}

// serverProc is one `vpool server` and an admin client of it.
type serverProc struct {
	*proc
	name, dataDir, addr, agentAddr string
	peer                           string // its embedded member's peer address (several embedded members)
	pprof                          string // where it serves Go's profiles (with VPOOL_SCALE_PROFILE)
	c                              *client.Client
	token                          string
	cpuMu                          sync.Mutex
	lastCPU                        float64 // CPU seconds when last read (kept once it is gone)
}

// stack is the servers (one with its embedded etcd, several with an
// embedded member each, or several on one external etcd: topology) and
// the fleet.
type stack struct {
	tb       testing.TB
	topo     topology
	etcdURL  string
	etcd     *proc
	servers  []*serverProc
	fleet    *fleet.Fleet
	stop     context.CancelFunc
	fleetErr chan error
}

// startStack starts the servers of topo and a fleet of hosts over them,
// and waits until every host is ready.
func startStack(tb testing.TB, topo topology, sz sizes) *stack {
	tb.Helper()
	st := &stack{tb: tb, topo: topo}
	n := topo.servers
	vpoolBinary(tb) // built before the clock starts
	start := time.Now()
	shared := tb.TempDir()
	switch {
	case n > 1 && !topo.external:
		st.startMembers(n, shared)
	default:
		if topo.external {
			st.etcdURL, st.etcd = startEtcd(tb)
		}
		for i := range n {
			s := st.newServer(i)
			st.launch(s, shared, nil)
			st.waitHealthy(s)
			st.servers = append(st.servers, s)
		}
	}
	st.checkTopology(tb, topo)
	tb.Logf("%s up in %.1fs", topo.name(), time.Since(start).Seconds())
	ctx, cancel := context.WithCancel(context.Background())
	st.stop = cancel
	tb.Cleanup(st.close)
	st.fenceForFleet(ctx, sz.hosts)
	var agents []string
	for _, s := range st.servers {
		agents = append(agents, "https://"+s.agentAddr)
	}
	// VPOOL_SCALE_ONLY_ASSIGNMENTS=1: the hosts poll their assignments
	// alone, as the fleet did before the ninth round (docs/scale.md).
	f, err := fleet.New(fleet.Config{Servers: agents, Hosts: sz.hosts, Capacity: hostCapacity, Trace: sz.trace,
		OnlyAssignments: os.Getenv("VPOOL_SCALE_ONLY_ASSIGNMENTS") != "",
		Labels:          map[string]string{"vpool.io/fleet": "true"},
		Tokens: func(ctx context.Context) (string, error) {
			var err error
			for _, s := range st.live() {
				var jt *api.JoinTokenResponse
				if jt, err = s.c.CreateJoinToken(ctx, api.JoinTokenRequest{TTL: "24h", Uses: 100}); err == nil {
					return jt.Token, nil
				}
			}
			return "", err
		}})
	if err != nil {
		tb.Fatal(err)
	}
	st.fleet, st.fleetErr = f, make(chan error, 1)
	t0 := time.Now()
	go func() { st.fleetErr <- f.Run(ctx) }()
	st.waitHosts(sz.hosts, time.Duration(sz.hosts)*50*time.Millisecond+2*time.Minute)
	tb.Logf("%d hosts joined and ready in %.1fs", sz.hosts, time.Since(t0).Seconds())
	return st
}

// waitHosts waits until every host is ready, logging every 30 s how many
// joined and are ready, suspect or down, and how the beats go, so that a
// fleet that does not come up says why. It gives up after within, or
// later while the ready count still grows.
func (st *stack) waitHosts(want int, within time.Duration) {
	st.tb.Helper()
	start := time.Now()
	deadline := start.Add(within)
	best, lastLog := -1.0, start
	for {
		var m map[string]float64
		for _, s := range st.live() {
			if got, err := s.metrics(context.Background()); err == nil {
				m = got
				break
			}
		}
		ready := m[`vpool_hosts{state="ready"}`]
		if ready >= float64(want) {
			return
		}
		if ready > best {
			best = ready
			deadline = later(deadline, time.Now().Add(time.Minute))
		}
		if time.Since(lastLog) >= 30*time.Second {
			fs := st.fleet.Stats()
			st.fleet.ResetStats()
			st.tb.Logf("hosts after %.0fs: %d joined, ready %.0f, suspect %.0f, failed %.0f, fenced %.0f, down %.0f; %d beats (%d failed), beat p50 %s p99 %s; load %s",
				time.Since(start).Seconds(), st.fleet.Joined(), ready, m[`vpool_hosts{state="suspect"}`], m[`vpool_hosts{state="failed"}`],
				m[`vpool_hosts{state="fenced"}`], m[`vpool_hosts{state="down"}`], fs.Beats, fs.BeatErrors, fs.BeatP50, fs.BeatP99, loadAvg())
			lastLog = time.Now()
		}
		if time.Now().After(deadline) {
			st.tb.Fatalf("%.0f of %d hosts ready after %s (no more for a minute)", ready, want, time.Since(start).Round(time.Second))
		}
		time.Sleep(2 * time.Second)
	}
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// newServer names server i and picks its data dir and addresses.
func (st *stack) newServer(i int) *serverProc {
	tb := st.tb
	return &serverProc{name: fmt.Sprintf("s%d", i+1), dataDir: filepath.Join(tb.TempDir(), "data"), addr: freeAddr(tb), agentAddr: freeAddr(tb)}
}

// launch starts server s (extra: more flags) without waiting for it.
func (st *stack) launch(s *serverProc, shared string, extra []string) {
	tb := st.tb
	args := []string{"server", "--data-dir", s.dataDir, "--listen", s.addr, "--agent-listen", s.agentAddr, "--name", s.name,
		"--log-level", "error", "--image-pool", filepath.Join(shared, "images")}
	if st.etcdURL != "" {
		args = append(args, "--etcd-endpoints", st.etcdURL, "--ca-key-file", filepath.Join(shared, "ca-seal.key"))
	}
	args = append(args, extra...)
	// VPOOL_SCALE_SERVER_ARGS: more flags for every server, split on
	// spaces (e.g. --max-pending-placements=-1: createBatched stops at the
	// first 429)
	args = append(args, strings.Fields(os.Getenv("VPOOL_SCALE_SERVER_ARGS"))...)
	var env []string
	if os.Getenv(envProfile) != "" {
		s.pprof = freeAddr(tb)
		env = []string{"VPOOL_PPROF=" + s.pprof}
	}
	s.proc = startProc(tb, s.name, env, vpoolBinary(tb), args...)
}

// waitHealthy waits until s answers /healthz, then reads its admin token
// and makes its client.
func (st *stack) waitHealthy(s *serverProc) {
	tb := st.tb
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if resp, err := http.Get("http://" + s.addr + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		select {
		case <-s.done:
			s.dumpLog(tb)
			tb.Fatalf("server %s exited before it was healthy", s.name)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.dumpLog(tb)
			tb.Fatalf("server %s not healthy after 2 minutes", s.name)
		}
	}
	tok, err := os.ReadFile(filepath.Join(s.dataDir, "admin.token"))
	if err != nil {
		tb.Fatal(err)
	}
	s.token = strings.TrimSpace(string(tok))
	if s.c, err = client.New("http://"+s.addr, s.token, client.WithHTTPClient(&http.Client{Timeout: 5 * time.Minute,
		Transport: &http.Transport{MaxIdleConnsPerHost: 128}})); err != nil {
		tb.Fatal(err)
	}
}

// fenceForFleet gives a fleet of thousands of hosts a fence timeout
// twice its heartbeat interval (1 ms a host of the whole control plane,
// at most 10 s): a server caps the interval at half the fence timeout, so
// that its real agents never fence themselves between beats (docs/ha.md),
// and the default 6 s would make 10,000 hosts beat every 3 s.
func (st *stack) fenceForFleet(ctx context.Context, hosts int) {
	iv := min(time.Duration(hosts)*time.Millisecond, 10*time.Second)
	if 2*iv <= model.DefaultHAPolicy().Fence() {
		return
	}
	c := st.servers[0].c
	p, err := c.Policy(ctx)
	if err != nil {
		st.tb.Fatal(err)
	}
	ha := p.HAPolicy()
	ha.FenceMillis = int(2 * iv / time.Millisecond)
	p.HA = &ha
	if _, err := c.SetPolicy(ctx, *p); err != nil {
		st.tb.Fatalf("a fence timeout of %d ms for %d hosts: %v", ha.FenceMillis, hosts, err)
	}
}

func (st *stack) close() {
	st.stop()
	select {
	case <-st.fleetErr:
	case <-time.After(time.Minute):
	}
}

// live returns the servers still running.
func (st *stack) live() []*serverProc {
	var out []*serverProc
	for _, s := range st.servers {
		select {
		case <-s.done:
		default:
			out = append(out, s)
		}
	}
	return out
}

// metrics scrapes a server's /metrics into series → value.
func (s *serverProc) metrics(ctx context.Context) (map[string]float64, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.addr+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out, sc.Err()
}

// waitRunning waits until every VM is running or failed (HA marks the
// VMs of a fenced host it cannot restart failed: on a loaded machine a
// few hosts' beats lapse while 100,000 VMs are created, and a run that
// waited for all of them running never came to rest), and returns how
// many failed. It reads /metrics every 2 s, and every 5 s at 100,000
// VMs: there each scrape is 38 MB (the usage series of every VM) and
// cost the server a core for seconds.
func (st *stack) waitRunning(want int, within time.Duration) (failed int) {
	st.tb.Helper()
	deadline := time.Now().Add(within)
	every := max(2*time.Second, time.Duration(want/20000)*time.Second)
	var running, failedN float64
	for time.Now().Before(deadline) {
		for _, s := range st.live() {
			m, err := s.metrics(context.Background())
			if err == nil {
				running, failedN = m[`vpool_vms{phase="running"}`], m[`vpool_vms{phase="failed"}`]
				break
			}
		}
		if running+failedN >= float64(want) {
			return int(failedN)
		}
		time.Sleep(every)
	}
	st.tb.Fatalf("%v VMs running and %v failed after %s, want %d", running, failedN, within, want)
	return 0
}

// makeProjects creates n projects without quota, p1..pn, and an empty one
// whose listing is the cheapest read of the store's revision.
func (st *stack) makeProjects(n int) []string {
	st.tb.Helper()
	ctx := context.Background()
	var out []string
	for i := 1; i <= n+1; i++ {
		name := "p" + strconv.Itoa(i)
		if i == n+1 {
			name = "revprobe"
		} else {
			out = append(out, name)
		}
		if _, err := st.servers[0].c.CreateProject(ctx, api.ProjectCreateRequest{Name: name}); err != nil {
			st.tb.Fatal(err)
		}
	}
	return out
}

// revision reads the store's revision through the API (the listing of
// the empty project answers it).
func (st *stack) revision(ctx context.Context) int64 {
	for _, s := range st.live() {
		l, err := s.c.ListVMs(ctx, client.ListVMsOptions{Project: "revprobe"})
		if err == nil {
			return l.Revision
		}
	}
	return 0
}

// createBatched creates VMs b-00000.. in batches of 50 over projects, 8
// requests at once.
func (st *stack) createBatched(total int, projects []string) {
	st.tb.Helper()
	work := make(chan int)
	var wg sync.WaitGroup
	var failed atomic.Value
	for range 8 {
		wg.Go(func() {
			for start := range work {
				var req api.VMBatchRequest
				for i := start; i < min(start+50, total); i++ {
					req.VMs = append(req.VMs, api.VMCreateRequest{Name: fmt.Sprintf("b-%06d", i), Spec: vmSpec(i)})
				}
				s := st.live()[start/50%len(st.live())]
				if _, err := s.c.CreateVMs(context.Background(), projects[start/50%len(projects)], req); err != nil {
					failed.Store(err)
				}
			}
		})
	}
	for i := 0; i < total; i += 50 {
		work <- i
	}
	close(work)
	wg.Wait()
	if err, ok := failed.Load().(error); ok {
		st.tb.Fatal(err)
	}
}

// cpu is the servers' (and the external etcd's) CPU seconds so far; a
// server killed counts with what it had used when last read (killLeader
// reads it just before the kill).
func (st *stack) cpu() (servers, etcd float64) {
	for _, s := range st.servers {
		servers += s.cpuSeconds()
	}
	if st.etcd != nil {
		etcd = cpuSeconds(st.etcd.cmd.Process.Pid)
	}
	return servers, etcd
}

// cpuSeconds is s's CPU seconds so far, or when last read once it is
// gone.
func (s *serverProc) cpuSeconds() float64 {
	s.cpuMu.Lock()
	defer s.cpuMu.Unlock()
	select {
	case <-s.done:
		return s.lastCPU
	default:
	}
	if v := cpuSeconds(s.cmd.Process.Pid); v > 0 {
		s.lastCPU = v
	}
	return s.lastCPU
}

// rss is the resident set of the server with the largest one now (its
// anon/file split with it) and the largest peak.
func (st *stack) rss() memory {
	var out memory
	for _, s := range st.live() {
		m := rssBytes(s.cmd.Process.Pid)
		if m.now > out.now {
			out.now, out.anon, out.file = m.now, m.anon, m.file
		}
		out.peak = max(out.peak, m.peak)
	}
	return out
}

// percentile of sorted durations (q in [0, 1]).
func percentile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return d[min(len(d)-1, int(float64(len(d))*q))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// loadAvg is the machine's one-minute load average, for the report.
func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
