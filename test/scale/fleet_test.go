package scale

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// BenchmarkFleet: a fleet of simulated hosts and running VMs at rest.
// It reports etcd transactions and key changes a second (and per host a
// minute: the target is at most 1), the servers' CPU (cores) and largest
// RSS, the heartbeat round trip's p99, and the p99 of GET vm and of the
// first page of the VM list, taken while the fleet beats and reports.
//
//	VPOOL_SCALE_HOSTS=10000 VPOOL_SCALE_VMS=100000 go test ./test/scale -run XXX -bench Fleet -benchtime 1x -timeout 2h
func BenchmarkFleet(b *testing.B) {
	needHeavy(b)
	for _, topo := range topologies() {
		b.Run(topo.name(), func(b *testing.B) { benchFleet(b, topo) })
	}
}

func benchFleet(b *testing.B, topo topology) {
	sz := readSizes(b)
	n := topo.servers
	st := startStack(b, topo, sz)
	projects := st.makeProjects(sz.projects)
	t0 := time.Now()
	st.createBatched(sz.vms, projects)
	failed := st.waitRunning(sz.vms, time.Duration(sz.vms)*20*time.Millisecond+5*time.Minute)
	b.Logf("%d VMs created and running (%d of them failed) in %.1fs; settling %s", sz.vms, failed, time.Since(t0).Seconds(), sz.settle)
	time.Sleep(sz.settle)

	ctx := context.Background()
	rev0 := st.revision(ctx)
	changes0, haveChanges := st.changes(ctx)
	cpu0, etcd0 := st.cpu()
	st.fleet.ResetStats()
	start := time.Now()
	saved := st.startProfiles(b.Name(), sz.window-2*time.Second)
	gets, lists, cached, phases := st.probe(ctx, sz, start.Add(sz.window))
	elapsed := time.Since(start).Seconds()
	rev1 := st.revision(ctx)
	changes1, _ := st.changes(ctx)
	cpu1, etcd1 := st.cpu()
	fs := st.fleet.Stats()
	rss := st.rss()
	saved()

	txns := float64(rev1-rev0) / elapsed
	b.ReportMetric(txns, "etcd-txn/s")
	if haveChanges {
		keys := (sum(changes1) - sum(changes0)) / elapsed
		b.ReportMetric(keys, "etcd-keys/s")
		b.ReportMetric(keys*60/float64(sz.hosts), "keys/host/min")
	}
	b.ReportMetric(txns*60/float64(sz.hosts), "txn/host/min")
	b.ReportMetric((cpu1-cpu0)/elapsed, "server-cores")
	if st.etcd != nil {
		b.ReportMetric((etcd1-etcd0)/elapsed, "etcd-cores")
	}
	b.ReportMetric(float64(rss.now)/(1<<20), "server-rss-MiB")
	b.ReportMetric(float64(rss.peak)/(1<<20), "server-peak-rss-MiB")
	b.ReportMetric(float64(rss.anon)/(1<<20), "server-rss-anon-MiB")
	b.ReportMetric(float64(rss.file)/(1<<20), "server-rss-file-MiB")
	b.ReportMetric(ms(fs.BeatP99), "heartbeat-p99-ms")
	b.ReportMetric(float64(fs.Beats)/elapsed, "heartbeats/s")
	b.ReportMetric(float64(fs.SidePolls)/elapsed, "side-polls/s")
	b.ReportMetric(float64(fs.SidePollErrors), "side-poll-errors")
	// the interval the servers tell the hosts at the window's end
	b.ReportMetric(ms(fs.Interval), "beat-interval-ms")
	b.ReportMetric(ms(fs.IntervalMax), "beat-interval-max-ms")
	b.ReportMetric(float64(fs.InFlightMax), "beats-in-flight-max")
	if fs.Beats > 0 {
		// everything the servers did (probes and controllers included),
		// per beat: the at-rest cost of a host
		b.ReportMetric((cpu1-cpu0)*1000/float64(fs.Beats), "server-cpu-ms/beat")
	}
	b.ReportMetric(ms(percentile(gets, 0.99)), "get-vm-p99-ms")
	b.ReportMetric(ms(percentile(lists, 0.99)), "list-page-p99-ms")
	b.ReportMetric(ms(percentile(lists, 0.5)), "list-page-p50-ms")
	b.ReportMetric(ms(percentile(cached, 0.99)), "list-page-cached-p99-ms")
	if len(phases.rev) > 0 {
		// the consistent page's own account (Server-Timing): the store's
		// revision, then the cache's wait for it; the rest of the
		// client's time is the page, HTTP and waits for a CPU
		b.ReportMetric(ms(percentile(phases.rev, 0.99)), "list-rev-p99-ms")
		b.ReportMetric(ms(percentile(phases.wait, 0.99)), "list-wait-p99-ms")
		b.ReportMetric(ms(percentile(phases.rest, 0.99)), "list-rest-p99-ms")
	}
	if len(phases.handler) > 0 {
		// the server's handler from its start to the page written (its
		// Server-Timing trailer), consistent and cache pages
		b.ReportMetric(ms(percentile(phases.handler, 0.99)), "list-handler-p99-ms")
		b.ReportMetric(ms(percentile(phases.cachedHandler, 0.99)), "list-cached-handler-p99-ms")
	}
	b.ReportMetric(float64(failed), "vms-failed")
	b.Logf("%d hosts, %d VMs, %d servers, load %s: %.1f txn/s; %d heartbeats (%d failed), %d GETs, %d list pages; keys changed per host and minute by kind: %s",
		sz.hosts, sz.vms, n, loadAvg(), txns, fs.Beats, fs.BeatErrors, len(gets), len(lists), perMinute(changes0, changes1, elapsed, sz.hosts))
}

// changes reads vpool_store_changes_total by kind (a server of this
// tree counts them; an older one does not: ok false).
func (st *stack) changes(ctx context.Context) (map[string]float64, bool) {
	for _, s := range st.live() {
		m, err := s.metrics(ctx)
		if err != nil {
			continue
		}
		out := map[string]float64{}
		for k, v := range m {
			if kind, ok := strings.CutPrefix(k, "vpool_store_changes_total{"); ok {
				out[strings.Trim(strings.TrimPrefix(kind, "kind="), `"}`)] = v
			}
		}
		return out, len(out) > 0
	}
	return nil, false
}

// sum adds up a map's values.
func sum(m map[string]float64) float64 {
	t := 0.0
	for _, v := range m {
		t += v
	}
	return t
}

// perMinute formats what changed per kind, per host and minute.
func perMinute(c0, c1 map[string]float64, seconds float64, hosts int) string {
	var parts []string
	for k, v := range c1 {
		if d := v - c0[k]; d > 0 {
			parts = append(parts, fmt.Sprintf("%s %.3f", k, d*60/seconds/float64(hosts)))
		}
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

// probe reads until deadline: GET of random VMs (four readers, 25 a
// second each at most) and the first page of the list of every VM (one
// reader, two a second at most: in turn a consistent page, the default,
// and one with consistent=false, answered from the cache as it is), and
// returns their latencies.
func (st *stack) probe(ctx context.Context, sz sizes, deadline time.Time) (gets, lists, cached []time.Duration, ph readPhases) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for time.Now().Before(deadline) {
				i := rng.IntN(sz.vms)
				s := st.servers[i%len(st.servers)]
				t0 := time.Now()
				_, err := s.c.GetVM(ctx, fmt.Sprintf("p%d", i/50%sz.projects+1), fmt.Sprintf("b-%06d", i))
				d := time.Since(t0)
				if err == nil {
					mu.Lock()
					gets = append(gets, d)
					mu.Unlock()
				}
				time.Sleep(max(40*time.Millisecond-d, 0))
			}
		})
	}
	wg.Go(func() {
		for i := 0; time.Now().Before(deadline); i++ {
			s := st.servers[i/2%len(st.servers)]
			consistent := i%2 == 0
			t0 := time.Now()
			rev, wait, handler, timed, err := getPage(ctx, s, consistent)
			d := time.Since(t0)
			if err == nil {
				mu.Lock()
				if handler > 0 {
					if consistent {
						ph.handler = append(ph.handler, handler)
					} else {
						ph.cachedHandler = append(ph.cachedHandler, handler)
					}
				}
				if consistent {
					lists = append(lists, d)
					if timed {
						ph.rev, ph.wait = append(ph.rev, rev), append(ph.wait, wait)
						ph.rest = append(ph.rest, d-rev-wait)
					}
				} else {
					cached = append(cached, d)
				}
				mu.Unlock()
			}
			time.Sleep(max(500*time.Millisecond-d, 0))
		}
	})
	wg.Wait()
	return gets, lists, cached, ph
}

// readPhases are where consistent pages' time went, by their
// Server-Timing header: the store's revision, the cache's wait, and
// the rest of the client's time.
type readPhases struct{ rev, wait, rest, handler, cachedHandler []time.Duration }

// timingOf reads one metric's duration from a Server-Timing value (0
// without it).
func timingOf(h, metric string) time.Duration {
	for part := range strings.SplitSeq(h, ",") {
		name, dur, _ := strings.Cut(strings.TrimSpace(part), ";dur=")
		if v, err := strconv.ParseFloat(dur, 64); err == nil && name == metric {
			return time.Duration(v * float64(time.Millisecond))
		}
	}
	return 0
}

// serverTiming reads rev and wait from a Server-Timing header (ok false
// when it has neither: a server that does not send them).
func serverTiming(h string) (rev, wait time.Duration, ok bool) {
	found := 0
	for part := range strings.SplitSeq(h, ",") {
		name, dur, _ := strings.Cut(strings.TrimSpace(part), ";dur=")
		v, err := strconv.ParseFloat(dur, 64)
		if err != nil {
			continue
		}
		d := time.Duration(v * float64(time.Millisecond))
		switch name {
		case "rev":
			rev, found = d, found+1
		case "wait":
			wait, found = d, found+1
		}
	}
	return rev, wait, found == 2
}

// getPage reads the first page of every project's VMs, body and all (a
// server without pages answers the whole list: that is its first page;
// one without consistent ignores it).
func getPage(ctx context.Context, s *serverProc, consistent bool) (rev, wait, handler time.Duration, timed bool, err error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.addr+"/api/v1/vms?all-projects=true&limit=500&consistent="+strconv.FormatBool(consistent), nil)
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0, 0, false, err
	}
	defer resp.Body.Close()
	buf := make([]byte, 1<<16)
	for {
		if _, err := resp.Body.Read(buf); err != nil {
			break
		}
	}
	if resp.StatusCode != 200 {
		return 0, 0, 0, false, fmt.Errorf("list: %s", resp.Status)
	}
	rev, wait, timed = serverTiming(resp.Header.Get("Server-Timing"))
	handler = timingOf(resp.Trailer.Get("Server-Timing"), "handler")
	return rev, wait, handler, timed, nil
}
