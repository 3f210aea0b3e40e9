package scale

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/client"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
)

// BenchmarkPlaceEndToEnd: VPOOL_SCALE_VMS creates through the HTTP API by
// VPOOL_SCALE_CLIENTS clients onto the fleet's hosts while they beat,
// report usage and run what they are given: one VM per POST (per-post=1,
// the headline), and K VMs per POST to /vms:batch for each K of
// VPOOL_SCALE_PER_POST (default "1,50"; each row on a stack of its own,
// the same VMs in the same projects). It reports
// placed VMs a second (first POST to last placement), the p50 and p99 of
// create-to-placed (POST sent to placement committed, by the placement
// event's time) and the hosts used against the packing lower bound. With
// VPOOL_SCALE_KILL=1 the three-server run kills the leader with SIGKILL
// when a third of the creates are acknowledged (with its embedded etcd
// member, in the default topology), checks that every acknowledged VM is
// placed exactly once and no host is over capacity (reading the
// surviving members), and reports the failover's gap (failover_test.go).
//
//	VPOOL_SCALE_HOSTS=10000 VPOOL_SCALE_VMS=100000 go test ./test/scale -run XXX -bench PlaceEndToEnd -benchtime 1x -timeout 2h
func BenchmarkPlaceEndToEnd(b *testing.B) {
	needHeavy(b)
	for _, topo := range topologies() {
		b.Run(topo.name(), func(b *testing.B) {
			n := topo.servers
			for _, k := range perPost(b) {
				b.Run(fmt.Sprintf("per-post=%d", k), func(b *testing.B) {
					sz := readSizes(b)
					sz.perPost = k
					st := startStack(b, topo, sz)
					res := runPlacement(b, st, sz, n > 1 && os.Getenv("VPOOL_SCALE_KILL") != "")
					if res.failover != nil {
						res.failover.report(b)
					}
					b.ReportMetric(res.rate, "placed/s")
					b.ReportMetric(ms(res.p50), "create-to-placed-p50-ms")
					b.ReportMetric(ms(res.p99), "create-to-placed-p99-ms")
					b.ReportMetric(res.packing, "hosts/lower-bound")
					b.ReportMetric(ms(res.cpuPerVM), "server-cpu-ms/placed")
					b.ReportMetric(ms(res.netPerVM), "server-cpu-ms/placed-over-rest")
					b.ReportMetric(res.restCores, "server-cores-at-rest")
					b.ReportMetric(ms(res.testPerVM), "fleet+clients-cpu-ms/placed")
					if res.failover == nil {
						// across a kill the store's counts and the dead
						// leader's gate are not comparable: left out
						b.ReportMetric(res.txnPerVM, "etcd-txn/placed")
						b.ReportMetric(res.gateMs, "gate-commit-ms")
						b.ReportMetric(res.gateGroup, "gate-group")
						b.ReportMetric(res.gateBusy, "gate-busy")
					}
					b.ReportMetric(float64(res.refused), "posts-429")
					b.Logf("transactions per placed VM by the kinds of key they changed: %s", res.shapes)
					b.Logf("%d VMs by %d clients, %d a POST, on %d hosts, %d servers, load %s: %.0f placed/s, p99 %s, %.2f ms of server CPU a VM (%.2f over its %.2f cores at rest; the fleet and clients %.2f ms); %d hosts used, lower bound %d",
						res.acked, sz.clients, k, sz.hosts, n, loadAvg(), res.rate, res.p99.Round(time.Millisecond), ms(res.cpuPerVM),
						ms(res.netPerVM), res.restCores, ms(res.testPerVM), res.used, res.bound)
				})
			}
		})
	}
}

// perPost reads VPOOL_SCALE_PER_POST: the VMs a POST creates, one row
// each (default 1 and 50; at most state.MaxBatch).
func perPost(tb testing.TB) []int {
	v := os.Getenv("VPOOL_SCALE_PER_POST")
	if v == "" {
		v = "1,50"
	}
	var out []int
	for _, f := range strings.Split(v, ",") {
		k, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || k < 1 || k > state.MaxBatch {
			tb.Fatalf("VPOOL_SCALE_PER_POST: %q is not a number of VMs from 1 to %d", f, state.MaxBatch)
		}
		out = append(out, k)
	}
	return out
}

// TestKillLeaderDuringPlacement kills the leading server with SIGKILL while
// VMs are being created through three servers, each with an embedded
// etcd member of one cluster (what docs/ha.md has users run; with
// VPOOL_SCALE_EXTERNAL_ETCD=1 three servers on one external member): the
// new leader places again, every acknowledged VM ends up placed exactly
// once (its host's allocation and no other holds it) and no host is over
// capacity × ratio, read from the surviving members.
func TestKillLeaderDuringPlacement(t *testing.T) {
	needHeavy(t)
	sz := readSizes(t)
	// 500 VMs of 11.7 GiB on average fill 40 hosts of 256 GiB to about 57 %
	sz.hosts, sz.vms, sz.clients = min(sz.hosts, 40), min(sz.vms, 500), min(sz.clients, 24)
	st := startStack(t, topology{servers: 3, external: os.Getenv(envExternal) != ""}, sz)
	res := runPlacement(t, st, sz, true)
	f := res.failover
	if f == nil || !f.placedAgain() {
		t.Fatalf("no placement by a new leader after the kill: %+v", f)
	}
	t.Logf("%d acknowledged VMs placed at %.0f/s (p99 %s) across a leader kill: %s", res.acked, res.rate, res.p99, f)
}

type placeResult struct {
	acked, used, bound int
	refused            int // POSTs answered 429 rate_limited (asked again)
	rate, packing      float64
	p50, p99           time.Duration
	cpuPerVM           time.Duration // server (and external etcd) CPU per placed VM
	// netPerVM is cpuPerVM less what the servers spend at rest (restCores,
	// measured over restWindow before the first POST) over the same time:
	// the placing's own cost. testPerVM is this process's (the fleet's and
	// the clients') CPU per placed VM.
	netPerVM, testPerVM time.Duration
	restCores           float64
	// txnPerVM is the store's transactions per placed VM; shapes says
	// of which sort (the kinds of key a transaction changed).
	txnPerVM float64
	shapes   string
	// gateMs is the gate's mean group commit (re-check and transaction),
	// gateGroup its mean placements a commit, gateBusy the share of the
	// time from the first POST to the last placement it was committing.
	gateMs, gateGroup, gateBusy float64
	// failover is the leader kill's account (nil without one).
	failover *failover
}

// restWindow is how long the servers' CPU at rest is measured before
// the creates (placeResult.restCores).
const restWindow = 5 * time.Second

// profileWindow is how long a CPU profile of the placing lasts (from the
// first POST).
const profileWindow = 20 * time.Second

// runPlacement creates sz.vms VMs and waits until every acknowledged one
// is placed; with kill, the leader dies with SIGKILL a third of the way.
func runPlacement(tb testing.TB, st *stack, sz sizes, kill bool) placeResult {
	tb.Helper()
	projects := st.makeProjects(sz.projects)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pl := &placements{placed: map[string]time.Time{}, acked: map[string]time.Time{}, changed: make(chan struct{}, 1)}
	for _, s := range st.servers {
		go pl.follow(ctx, s.c)
	}
	time.Sleep(500 * time.Millisecond) // the streams are open
	// With profiles, the rest window is as long as the placing's profile,
	// and profiled too: pprof -diff_base rest placing is the placing's.
	window := restWindow
	if os.Getenv(envProfile) != "" {
		window = profileWindow
	}
	var restCores float64
	if _, bench := tb.(*testing.B); bench {
		// a test reports no CPU figures: it skips the rest window
		rest0, restEtcd0 := st.cpu()
		savedRest := st.startProfiles(tb.Name()+"-rest", window)
		time.Sleep(window)
		rest1, restEtcd1 := st.cpu()
		savedRest()
		restCores = (rest1 - rest0 + restEtcd1 - restEtcd0) / window.Seconds()
	}
	var once sync.Once
	var fo *failover
	onAck := func(n int) {
		if kill && n >= sz.vms/3 {
			once.Do(func() { fo = st.killLeader(ctx) })
		}
	}
	rev0 := st.revision(ctx)
	shapes0, gate0 := st.txnShapes(ctx), st.gateStats(ctx)
	first := time.Now()
	cpu0, etcd0 := st.cpu()
	self0 := cpuSeconds(os.Getpid())
	saved := st.startProfiles(tb.Name(), profileWindow)
	pl.create(ctx, st, sz, projects, onAck)
	pl.wait(tb, st, time.Duration(sz.vms)*10*time.Millisecond+3*time.Minute)
	res := pl.result(first)
	if fo != nil {
		pl.failoverGap(fo, first)
		res.failover = fo
	}
	cpu1, etcd1 := st.cpu()
	self1, elapsed := cpuSeconds(os.Getpid()), time.Since(first)
	res.restCores = restCores
	if res.acked > 0 && !kill {
		// every transaction meanwhile (the fleet's at rest included:
		// usage samples, a few a minute), per VM placed, and by sort
		res.txnPerVM = float64(st.revision(ctx)-rev0) / float64(res.acked)
		res.shapes = shapesPerVM(shapes0, st.txnShapes(ctx), res.acked)
		g := st.gateStats(ctx).sub(gate0)
		if g.commits > 0 {
			res.gateMs, res.gateGroup = g.seconds*1000/g.commits, g.placements/g.commits
			res.gateBusy = g.seconds / (float64(res.acked) / res.rate) // first POST to last placement
		}
	}
	if res.acked > 0 {
		// everything the servers did meanwhile (heartbeats, reports,
		// controllers included), per VM placed
		used := cpu1 - cpu0 + etcd1 - etcd0
		perVM := func(sec float64) time.Duration { return time.Duration(sec / float64(res.acked) * float64(time.Second)) }
		res.cpuPerVM = perVM(used)
		res.netPerVM = perVM(max(used-restCores*elapsed.Seconds(), 0))
		res.testPerVM = perVM(self1 - self0)
	}
	saved()
	if kill {
		st.checkPlacedOnce(tb, pl.ackedKeys())
	}
	res.used, res.bound = st.packing(tb, pl.ackedKeys(), sz)
	res.packing = float64(res.used) / float64(res.bound)
	return res
}

// placements tracks VMs acknowledged by the API and placed (their
// pending → creating event).
type placements struct {
	mu      sync.Mutex
	acked   map[string]time.Time // project/name → when its POST was sent
	refused int                  // POSTs answered 429 (backpressure), asked again
	placed  map[string]time.Time // project/name → placement event time
	changed chan struct{}
}

func (pl *placements) follow(ctx context.Context, c *client.Client) {
	evs, _ := c.FollowEvents(ctx, 0, client.AllProjects)
	for ev := range evs {
		if ev.Kind != state.EventVMPhase || ev.To != string(model.PhaseCreating) {
			continue
		}
		key := strings.TrimPrefix(ev.Object, "vm/")
		pl.mu.Lock()
		if t, ok := pl.placed[key]; !ok || ev.Time.Before(t) {
			pl.placed[key] = ev.Time
		}
		pl.mu.Unlock()
		select {
		case pl.changed <- struct{}{}:
		default:
		}
	}
}

// vmName is VM i's name (its project is the POST's: projects[j mod
// len] for the j-th POST, so that a POST's VMs share one).
func vmName(i int) string { return fmt.Sprintf("e-%06d", i) }

// vmIndex is the i of vmName(i) in a project/name key.
func vmIndex(key string) (int, bool) {
	_, name, _ := strings.Cut(key, "/")
	i, err := strconv.Atoi(strings.TrimPrefix(name, "e-"))
	return i, err == nil && strings.HasPrefix(name, "e-")
}

// create runs the clients: the j-th POST creates VMs j·K … j·K+K-1
// (sz.perPost = K; e-i, vmSpec(i)) in projects[j mod len], one VM by
// POST /vms, several by POST /vms:batch (all or nothing); a failed POST
// is tried on the next live server (409 there: an earlier attempt was
// stored after all, so it counts as acknowledged).
func (pl *placements) create(ctx context.Context, st *stack, sz sizes, projects []string, onAck func(int)) {
	work := make(chan int)
	k := max(sz.perPost, 1)
	var wg sync.WaitGroup
	for c := range sz.clients {
		wg.Go(func() {
			for j := range work {
				lo, hi := j*k, min(j*k+k, sz.vms)
				keys, t0, ok := pl.createPost(ctx, st, c, projects[j%len(projects)], lo, hi)
				if !ok {
					continue
				}
				pl.mu.Lock()
				for _, key := range keys {
					pl.acked[key] = t0
				}
				n := len(pl.acked)
				pl.mu.Unlock()
				onAck(n)
			}
		})
	}
	for j := range (sz.vms + k - 1) / k {
		work <- j
	}
	close(work)
	wg.Wait()
}

// createPost creates VMs lo … hi-1 in project by one POST (/vms for one
// VM, /vms:batch for more) and returns their keys once acknowledged.
func (pl *placements) createPost(ctx context.Context, st *stack, c int, project string, lo, hi int) ([]string, time.Time, bool) {
	var keys []string
	var batch api.VMBatchRequest
	for i := lo; i < hi; i++ {
		keys = append(keys, project+"/"+vmName(i))
		batch.VMs = append(batch.VMs, api.VMCreateRequest{Name: vmName(i), Spec: vmSpec(i)})
	}
	t0 := time.Now()
	for attempt := range 30 {
		live := st.live()
		s := live[(c+attempt)%len(live)]
		var err error
		if len(batch.VMs) == 1 {
			_, err = s.c.CreateVM(ctx, project, batch.VMs[0])
		} else {
			_, err = s.c.CreateVMs(ctx, project, batch)
		}
		var ae *api.Error
		switch {
		case err == nil:
			return keys, t0, true
		case errors.As(err, &ae) && ae.Code == api.CodeConflict && attempt > 0:
			return keys, t0, true
		case errors.As(err, &ae) && ae.Code == api.CodeRateLimited:
			// the server's backlog of VMs waiting for placement is full
			// (it waited before answering): ask the same server again
			pl.mu.Lock()
			pl.refused++
			pl.mu.Unlock()
			c--
			continue
		case errors.As(err, &ae) && ae.Code != api.CodeUnavailable && ae.Code != api.CodeInternal:
			return nil, t0, false // refused: never acknowledged
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil, t0, false
}

// wait blocks until every acknowledged VM was seen placed.
func (pl *placements) wait(tb testing.TB, st *stack, within time.Duration) {
	tb.Helper()
	deadline := time.After(within)
	for {
		pl.mu.Lock()
		missing, nMissing := "", 0
		for k := range pl.acked {
			if _, ok := pl.placed[k]; !ok {
				missing = k
				nMissing++
			}
		}
		n := len(pl.acked)
		pl.mu.Unlock()
		if missing == "" {
			return
		}
		select {
		case <-pl.changed:
		case <-time.After(time.Second):
		case <-deadline:
			p, name, _ := strings.Cut(missing, "/")
			vm, err := st.live()[0].c.GetVM(context.Background(), p, name)
			if err == nil {
				tb.Fatalf("%d of %d acknowledged VMs not seen placed after %s, among them %s: phase %s host %q: %s", nMissing, n, within, missing,
					vm.Status.Phase, vm.Status.Host, vm.Status.Message)
			}
			tb.Fatalf("%d of %d acknowledged VMs not seen placed after %s, among them %s: %v", nMissing, n, within, missing, err)
		}
	}
}

func (pl *placements) result(first time.Time) placeResult {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	var lat []time.Duration
	last := first
	for k, t0 := range pl.acked {
		at := pl.placed[k]
		lat = append(lat, at.Sub(t0))
		if at.After(last) {
			last = at
		}
	}
	return placeResult{acked: len(pl.acked), refused: pl.refused, rate: float64(len(pl.acked)) / last.Sub(first).Seconds(),
		p50: percentile(lat, 0.5), p99: percentile(lat, 0.99)}
}

func (pl *placements) ackedKeys() map[string]bool {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	out := make(map[string]bool, len(pl.acked))
	for k := range pl.acked {
		out[k] = true
	}
	return out
}

// packing counts the hosts holding VMs and the lower bound of hosts the
// acknowledged VMs need: for each resource, ceil(demand / what one host
// may hold under the policy's ratios).
func (st *stack) packing(tb testing.TB, acked map[string]bool, sz sizes) (used, bound int) {
	tb.Helper()
	ctx := context.Background()
	s := st.live()[0]
	hosts, err := s.c.ListHosts(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	for _, h := range hosts {
		if h.VMs > 0 {
			used++
		}
	}
	pol, err := s.c.Policy(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	var demand model.Resources
	for key := range acked {
		i, ok := vmIndex(key)
		if !ok {
			tb.Fatalf("acknowledged VM %q is not one of the benchmark's", key)
		}
		spec := vmSpec(i)
		demand = demand.Add(spec.Demand())
	}
	r := model.Ratios{CPU: ratio(pol.Ratios.CPU, 4), Memory: ratio(pol.Ratios.Memory, 1), Disk: ratio(pol.Ratios.Disk, 1)}
	need := func(d, capacity float64, r float64) int { return int(math.Ceil(d / math.Floor(capacity*r))) }
	bound = max(need(float64(demand.CPUs), float64(hostCapacity.CPUs), r.CPU),
		need(float64(demand.Memory), float64(hostCapacity.Memory), r.Memory),
		need(float64(demand.Disk), float64(hostCapacity.Disk), r.Disk))
	return used, max(bound, 1)
}

func ratio(v, def float64) float64 {
	if v > 0 {
		return v
	}
	return def
}

// txnShapes reads vpool_store_txns_total by the kinds of key a
// transaction changed (a server of this tree counts them; an older one
// does not: empty).
func (st *stack) txnShapes(ctx context.Context) map[string]float64 {
	for _, s := range st.live() {
		m, err := s.metrics(ctx)
		if err != nil {
			continue
		}
		out := map[string]float64{}
		for k, v := range m {
			if kinds, ok := strings.CutPrefix(k, "vpool_store_txns_total{"); ok {
				out[strings.Trim(strings.TrimPrefix(kinds, "kinds="), `"}`)] = v
			}
		}
		return out
	}
	return nil
}

// shapesPerVM formats the growth of each count from c0 to c1 per VM, largest
// first (those under 0.005 a VM left out).
func shapesPerVM(c0, c1 map[string]float64, vms int) string {
	type kv struct {
		k string
		v float64
	}
	var xs []kv
	for k, v := range c1 {
		if d := (v - c0[k]) / float64(vms); d >= 0.005 {
			xs = append(xs, kv{k, d})
		}
	}
	slices.SortFunc(xs, func(a, b kv) int { return cmp.Compare(b.v, a.v) })
	var parts []string
	for _, x := range xs {
		parts = append(parts, fmt.Sprintf("%s %.3f", x.k, x.v))
	}
	return strings.Join(parts, ", ")
}

// gateCounts are the gate's commit metrics summed over the live servers
// (only the leader's move).
type gateCounts struct{ seconds, commits, placements float64 }

func (g gateCounts) sub(o gateCounts) gateCounts {
	return gateCounts{g.seconds - o.seconds, g.commits - o.commits, g.placements - o.placements}
}

// gateStats reads vpool_gate_commit_seconds and vpool_gate_placements_total
// (zero from a server that does not export them).
func (st *stack) gateStats(ctx context.Context) gateCounts {
	var g gateCounts
	for _, s := range st.live() {
		m, err := s.metrics(ctx)
		if err != nil {
			continue
		}
		g.seconds += m["vpool_gate_commit_seconds_sum"]
		g.commits += m["vpool_gate_commit_seconds_count"]
		g.placements += m["vpool_gate_placements_total"]
	}
	return g
}
