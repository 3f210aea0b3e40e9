package devenv_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/client"
	"github.com/vpool/vpool/internal/controller"
	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// sharedPools are the pools of the HA tests' hosts: "shared" is seen by
// every host (a VM on it can restart elsewhere), "local" is not.
var sharedPools = []model.StoragePoolRef{{Name: "shared", Shared: true}, {Name: "local"}}

func haHost(name string, cpus int, labels map[string]string) mhost {
	return mhost{name: name, cpus: cpus, memory: 64 * model.GiB, labels: labels, pools: sharedPools}
}

func haSpec(level, pool string) model.VMSpec {
	return model.VMSpec{VCPUs: 1, Memory: 256 * model.MiB, HA: level,
		Disks:     []model.Disk{{Name: "root", Size: model.GiB, Pool: pool}},
		Placement: model.Placement{PreferredLabels: map[string]string{"home": "yes"}}}
}

// killHost is a host that dies: its agent stops and every VM it ran
// dies with it (the sim host's QEMU processes).
func (cl *mcluster) killHost(name string) {
	cl.t.Helper()
	if err := cl.powerOff(name); err != nil {
		cl.t.Fatal(err)
	}
}

// powerOff stops a host's agent and crashes every VM it runs.
func (cl *mcluster) powerOff(name string) error {
	cl.stopAgent(name)
	infos, err := cl.hosts[name].Driver().List(context.Background())
	if err != nil {
		return err
	}
	for _, in := range infos {
		if in.State == hypervisor.StateRunning {
			if err := cl.hosts[name].Crash(in.ID); err != nil {
				return err
			}
		}
	}
	return nil
}

// simFencer is the benchmark's fence command: it powers the sim host off
// (its agent stops, its VMs die) and reports success.
type simFencer struct {
	cl  *mcluster
	ran sync.Map // host → time the command ran
}

func (f *simFencer) Fence(_ context.Context, h model.Host) error {
	f.ran.Store(h.Name, time.Now())
	return f.cl.powerOff(h.Name)
}

// copies counts, over the whole test, the moments a VM ran on two hosts.
type copies struct {
	cl   *mcluster
	mu   sync.Mutex
	seen map[string][]string
	stop chan struct{}
	done chan struct{}
}

func (cl *mcluster) countCopies(names []string) *copies {
	c := &copies{cl: cl, seen: map[string][]string{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			select {
			case <-c.stop:
				return
			default:
			}
			for _, n := range names {
				if on := cl.runningOn(n); len(on) > 1 {
					c.mu.Lock()
					c.seen[n] = on
					c.mu.Unlock()
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	return c
}

func (c *copies) duplicates() map[string][]string {
	close(c.stop)
	<-c.done
	return c.seen
}

// TestHostLossRestartsVMsElsewhere: a host dies (its agent and its VMs
// killed). It goes suspect, failed and fenced; its VMs on shared storage
// restart on the other hosts, high before low; a VM with a local disk and
// a VM with HA off stay failed with the reason; no VM ever runs twice,
// also after the dead host's agent comes back. Before issue 15 part 2 the
// host went down and its VMs stayed dead.
func TestHostLossRestartsVMsElsewhere(t *testing.T) {
	cl := startMCluster(t, 0, haHost("h1", 8, map[string]string{"home": "yes"}), haHost("h2", 8, nil), haHost("h3", 8, nil))
	specs := map[string]model.VMSpec{
		"hi": haSpec(model.HAHigh, "shared"), "med": haSpec("", "shared"), "low": haSpec(model.HALow, "shared"),
		"local": haSpec("", "local"), "off": haSpec(model.HAOff, "shared"),
	}
	var names []string
	for n, s := range specs {
		if vm := cl.createVM(n, s, model.PhaseRunning); vm.Status.Host != "h1" {
			t.Fatalf("%s placed on %s, want h1", n, vm.Status.Host)
		}
		names = append(names, n)
	}
	dup := cl.countCopies(names)
	cl.killHost("h1")
	for _, n := range []string{"hi", "med", "low"} {
		cl.eventually(n+" running elsewhere", func() bool {
			vm := cl.vm(n)
			on := cl.runningOn(n)
			return vm.Status.Phase == model.PhaseRunning && vm.Status.Host != "h1" && len(on) == 1 && on[0] == vm.Status.Host
		})
		if o := cl.vm(n).Status.Owner; o == nil || o.Epoch != 1 || o.Host == "h1" {
			t.Errorf("%s: disk owner %+v, want the new host at epoch 1", n, o)
		}
	}
	for n, why := range map[string]string{"local": "local storage", "off": "HA is off"} {
		cl.eventually(n+" failed with a reason", func() bool {
			vm := cl.vm(n)
			return vm.Status.Phase == model.PhaseFailed && vm.Status.Host == "h1" && strings.Contains(vm.Status.HAReason, why)
		})
	}
	if h, _ := cl.c.GetHost(context.Background(), "h1"); h.State != model.HostFenced {
		t.Fatalf("h1 is %s, want fenced", h.State)
	}
	kinds := hostEventKinds(t, cl, "h1")
	if want := "host.suspect,host.failed,host.fenced"; strings.Join(kinds, ",") != want {
		t.Errorf("h1 events %v, want %s", kinds, want)
	}
	// Restarted in priority order: hi's placement event before low's.
	if hi, low := creatingAt(t, cl, "hi"), creatingAt(t, cl, "low"); !(hi <= low) {
		t.Errorf("hi restarted at revision %d, after low at %d", hi, low)
	}

	// The dead host comes back: none of the restarted VMs runs there.
	cl.startAgent("h1")
	cl.eventually("h1 ready", func() bool {
		h, _ := cl.c.GetHost(context.Background(), "h1")
		return h != nil && h.State == model.HostReady
	})
	time.Sleep(2 * time.Second) // several converge passes of h1
	for _, n := range []string{"hi", "med", "low"} {
		if on := cl.runningOn(n); len(on) != 1 || on[0] == "h1" {
			t.Errorf("%s runs on %v after h1 came back", n, on)
		}
	}
	if d := dup.duplicates(); len(d) > 0 {
		t.Fatalf("VMs ran twice: %v", d)
	}
}

func hostEventKinds(t *testing.T, cl *mcluster, host string) []string {
	t.Helper()
	evs, err := cl.c.ListEvents(context.Background(), 0, "")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range evs {
		if e.Object == "host/"+host && strings.HasPrefix(e.Kind, "host.") && e.Kind != "host.joined" && e.Kind != "host.up" {
			out = append(out, e.Kind)
		}
	}
	return out
}

// creatingAt is the event ID (store revision) at which a VM went to
// creating on a host other than h1 (its HA restart).
func creatingAt(t *testing.T, cl *mcluster, name string) int64 {
	t.Helper()
	evs, err := cl.c.ListEvents(context.Background(), 0, api.DefaultProject)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if e.Object == "vm/"+api.DefaultProject+"/"+name && e.Kind == "vm.phase" && e.To == string(model.PhaseCreating) && !strings.HasSuffix(e.Message, " on h1") {
			return e.ID
		}
	}
	t.Fatalf("no restart event of %s", name)
	return 0
}

// BenchmarkHostFailover measures the RTO of a failed sim host carrying
// 100 HA VMs: from the kill (agent and VMs) to every VM running on
// another host, with its parts: detection (host suspect), fence (host
// fenced), restart (fenced → the last VM running). A VM on two hosts at
// once fails it; VMs running nowhere at the end (a healthy host's agent
// that fenced itself on a starved machine) are counted (down-vms/op). Each run builds a
// cluster of three sim hosts over real mutual TLS on loopback (server,
// controllers and agents in this process, memstore), with the default HA
// timings unless VPOOL_HA_TIMINGS names others (heartbeat,suspect,fence,
// margin in ms) or VPOOL_HA_FAST is set (500,1500,2500,500).
//
// Two cases: self-fence, the host dies (agent and VMs) and its VMs
// restart after the fence timeout and margin; fence-command, the host
// hangs (its agent stops, its VMs run on: it cannot fence itself) and
// the server's fence command, run at the suspect timeout
// (ha.fenceCommandMillis 4000), powers it off (stops the agent, crashes
// the VMs: simFencer) and reports success, and the VMs restart at once.
func BenchmarkHostFailover(b *testing.B) {
	b.Run("self-fence", func(b *testing.B) { benchFailover(b, false) })
	b.Run("fence-command", func(b *testing.B) { benchFailover(b, true) })
}

func benchFailover(b *testing.B, command bool) {
	var rto, detect, fence, restart []float64
	down := 0.0
	for range b.N {
		b.StopTimer()
		r := runFailover(b, 100, command)
		b.StartTimer()
		b.Logf("run: rto %.2f s (detect %.2f, fence %.2f, restart %.2f), %v VMs down at the end", r[0], r[1], r[2], r[3], r[4])
		down += r[4]
		rto, detect, fence, restart = append(rto, r[0]), append(detect, r[1]), append(fence, r[2]), append(restart, r[3])
	}
	b.ReportMetric(median(rto), "rto-s")
	b.ReportMetric(median(detect), "detect-s")
	b.ReportMetric(median(fence), "fence-s")
	b.ReportMetric(median(restart), "restart-s")
	b.ReportMetric(maxOf(rto), "rto-max-s")
	b.ReportMetric(-maxOf(neg(rto)), "rto-min-s")
	b.ReportMetric(-maxOf(neg(detect)), "detect-min-s")
	b.ReportMetric(maxOf(detect), "detect-max-s")
	b.ReportMetric(-maxOf(neg(fence)), "fence-min-s")
	b.ReportMetric(maxOf(fence), "fence-max-s")
	b.ReportMetric(-maxOf(neg(restart)), "restart-min-s")
	b.ReportMetric(maxOf(restart), "restart-max-s")
	b.ReportMetric(down/float64(b.N), "down-vms/op")
	b.ReportMetric(0, "ns/op")
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s[len(s)/2]
}

func neg(xs []float64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = -x
	}
	return out
}

func maxOf(xs []float64) float64 {
	m := xs[0]
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

// runFailover returns rto, detection, fence and restart times (s); with
// command, h1 hangs and the server's fence command powers it off.
func runFailover(b *testing.B, n int, command bool) [5]float64 {
	var fencer *simFencer
	var mk func(*mcluster) controller.HostFencer
	if command {
		mk = func(cl *mcluster) controller.HostFencer { fencer = &simFencer{cl: cl}; return fencer }
	}
	termStart := time.Now()
	cl := startMClusterWith(b, 0, mk, haHost("h1", 64, map[string]string{"home": "yes"}), haHost("h2", 64, nil), haHost("h3", 64, nil))
	defer cl.close()
	ctx := context.Background()
	hp, ok := benchHAPolicy(b)
	if command {
		hp.FenceCommandMillis, ok = hp.WithDefaults().SuspectMillis, true
	}
	if ok {
		p := model.DefaultPolicy()
		p.HA = &hp
		if _, err := cl.c.SetPolicy(ctx, p); err != nil {
			b.Fatal(err)
		}
		time.Sleep(3 * time.Second) // every agent hears the new interval
	}
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("vm%03d", i)
		if _, err := cl.c.CreateVM(ctx, api.DefaultProject, api.VMCreateRequest{Name: names[i], Spec: haSpec("", "shared")}); err != nil {
			b.Fatal(err)
		}
	}
	cl.eventuallyFor(2*time.Minute, "all running on h1", func() bool {
		list, err := cl.c.ListVMs(ctx, client.ListVMsOptions{Project: api.DefaultProject})
		running := 0
		for _, v := range listVMs(list) {
			if v.Status.Phase == model.PhaseRunning && v.Status.Host == "h1" {
				running++
			}
		}
		return err == nil && running == n
	})
	if command { // the leader runs no command within a fence timeout of taking office
		if wait := hp.Fence() - time.Since(termStart); wait > 0 {
			time.Sleep(wait)
		}
	}
	t0 := time.Now()
	if command {
		cl.stopAgent("h1") // hung: its VMs run on until the fence command
	} else {
		cl.killHost("h1")
	}
	b.Logf("h1 stopped in %.2f s", time.Since(t0).Seconds())
	var last time.Time
	cl.eventuallyFor(2*time.Minute, "all running elsewhere", func() bool {
		list, err := cl.c.ListVMs(ctx, client.ListVMsOptions{Project: api.DefaultProject})
		running := 0
		for _, v := range listVMs(list) {
			if v.Status.Phase == model.PhaseRunning && v.Status.Host != "h1" && v.Status.Host != "" {
				running++
			}
		}
		last = time.Now()
		return err == nil && running == n
	})
	var suspect, fenced time.Time
	var commits, starts []time.Time // the restarts committed (creating elsewhere), and running elsewhere
	kvs, _, err := cl.st.List(ctx, store.EventsPrefix)
	if err != nil {
		b.Fatal(err)
	}
	for _, kv := range kvs {
		s := string(kv.Value)
		switch {
		case strings.Contains(s, `"host/h1"`):
			ev := decodeEvent(b, kv.Value)
			switch ev.Kind {
			case "host.suspect":
				suspect = ev.Time
			case "host.fenced":
				fenced = ev.Time
			}
		case strings.Contains(s, `"vm.phase"`):
			ev := decodeEvent(b, kv.Value)
			if ev.Time.Before(t0) {
				continue
			}
			switch ev.To {
			case string(model.PhaseCreating):
				commits = append(commits, ev.Time)
			case string(model.PhaseRunning):
				starts = append(starts, ev.Time)
			}
		}
	}
	if len(commits) > 0 && len(starts) > 0 {
		span := func(ts []time.Time) (time.Time, time.Time) {
			lo, hi := ts[0], ts[0]
			for _, t := range ts {
				lo, hi = minTime(lo, t), maxTime(hi, t)
			}
			return lo, hi
		}
		c0, c1 := span(commits)
		s0, s1 := span(starts)
		b.Logf("timeline from the kill: suspect %.2f, fenced %.2f, restarts committed %.2f–%.2f (%d), running reported %.2f–%.2f (%d), seen by the client %.2f",
			suspect.Sub(t0).Seconds(), fenced.Sub(t0).Seconds(), c0.Sub(t0).Seconds(), c1.Sub(t0).Seconds(), len(commits),
			s0.Sub(t0).Seconds(), s1.Sub(t0).Seconds(), len(starts), last.Sub(t0).Seconds())
	}
	if command {
		if _, ran := fencer.ran.Load("h1"); !ran {
			b.Fatal("the fence command never ran")
		}
	}
	down := 0
	for _, nm := range names {
		switch on := cl.runningOn(nm); {
		case len(on) > 1:
			b.Fatalf("%s runs on %v at once", nm, on)
		case len(on) == 0:
			down++ // a healthy host's agent fenced itself (a starved machine)
		}
	}
	return [5]float64{last.Sub(t0).Seconds(), suspect.Sub(t0).Seconds(), fenced.Sub(t0).Seconds(), last.Sub(fenced).Seconds(), float64(down)}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func fastHA() bool { return os.Getenv("VPOOL_HA_FAST") != "" }

// benchHAPolicy is the HA policy a benchmark asks for: VPOOL_HA_TIMINGS
// "heartbeat,suspect,fence,margin" in milliseconds, or the tuned timings
// with VPOOL_HA_FAST; ok false: the defaults.
func benchHAPolicy(b *testing.B) (model.HAPolicy, bool) {
	if v := os.Getenv("VPOOL_HA_TIMINGS"); v != "" {
		var p model.HAPolicy
		if _, err := fmt.Sscanf(v, "%d,%d,%d,%d", &p.HeartbeatMillis, &p.SuspectMillis, &p.FenceMillis, &p.MarginMillis); err != nil {
			b.Fatalf("VPOOL_HA_TIMINGS=%q: want heartbeat,suspect,fence,margin in ms: %v", v, err)
		}
		if err := p.Validate(); err != nil {
			b.Fatal(err)
		}
		return p, true
	}
	if fastHA() {
		return model.HAPolicy{HeartbeatMillis: 500, SuspectMillis: 1500, FenceMillis: 2500, MarginMillis: 500}, true
	}
	return model.HAPolicy{}, false
}

func decodeEvent(b testing.TB, v []byte) model.Event {
	var e model.Event
	if err := json.Unmarshal(v, &e); err != nil {
		b.Fatal(err)
	}
	return e
}

func listVMs(l *api.VMList) []model.VM {
	if l == nil {
		return nil
	}
	return l.Items
}
