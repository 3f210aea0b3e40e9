package simulate

import (
	"maps"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/balance"
	"github.com/vpool/vpool/internal/controller"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/scheduler"
	"github.com/vpool/vpool/internal/trace"
)

// serverPlaces places c's VMs one by one with the server's placer — the
// controller.SchedulerPlacer the server wires in — committing each
// decision the way the scheduling controller does: the chosen host's
// allocation grows by the VM (scheduler.ApplyVM, the accounting the
// state layer stores) and the host is recorded in Snapshot.Changed.
func serverPlaces(t *testing.T, c *Cluster) []string {
	t.Helper()
	placer := controller.NewSchedulerPlacer()
	snap := &controller.Snapshot{
		Hosts:  append([]model.Host(nil), c.Hosts...),
		Allocs: map[string]model.Allocation{},
		Policy: c.Policy,
		Now:    time.Date(2011, 3, 3, 0, 0, 0, 0, time.UTC),
		Epoch:  1,
	}
	out := make([]string, len(c.VMs))
	for i := range c.VMs {
		vm := c.VMs[i]
		host, expl := placer.Place(snap, &vm)
		if host == "" {
			t.Fatalf("server: %s fits nowhere: %s", vm.Key(), expl.Summary)
		}
		out[i] = host
		a := snap.Allocs[host]
		a.VMs, a.Domains, a.Groups = maps.Clone(a.VMs), maps.Clone(a.Domains), maps.Clone(a.Groups)
		a.Host = host
		scheduler.ApplyVM(&a, vm.Key(), &vm.Spec, +1)
		snap.Allocs[host] = a
		snap.Changed = append(snap.Changed, host)
	}
	return out
}

// simPlaces runs the simulator's initial placement under the vpool
// policy and names each VM's host.
func simPlaces(t *testing.T, tr *trace.Trace, hosts int) []string {
	t.Helper()
	e := newEngine(tr, Config{Setup: Literature, Policy: "vpool", Hosts: hosts}, balance.NewVPool(balance.DefaultVPoolConfig()))
	if err := e.place(); err != nil {
		t.Fatal(err)
	}
	if e.res.Placement != PlacementScheduler {
		t.Fatalf("placement %q, want %q", e.res.Placement, PlacementScheduler)
	}
	out := make([]string, len(e.vms))
	for v := range e.vms {
		out[v] = e.view.c.Hosts[e.vms[v].host].Name
	}
	return out
}

// TestSimulatorPlacesAsTheServer is the promise "the same code in the
// simulator and the server": for the same hosts, policy and VMs, every
// placement decision of the simulator equals what the server's placer
// returns. The traces fill several hosts of both types, so each decision
// depends on the ones before it (binpack, the energy score, the core
// labels, memory).
func TestSimulatorPlacesAsTheServer(t *testing.T) {
	for _, tc := range []struct {
		name  string
		tr    func(testing.TB) *trace.Trace
		hosts int
	}{
		{"synthetic 90 VMs on 60 hosts", func(testing.TB) *trace.Trace { return rampTrace(90, 4) }, 60},
		{"PlanetLab 20110303 on 800 hosts", func(tb testing.TB) *trace.Trace { return loadDay(tb, "20110303") }, DefaultHosts},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := tc.tr(t)
			sim := simPlaces(t, tr, tc.hosts)
			server := serverPlaces(t, NewCluster(tr, tc.hosts))
			used := map[string]bool{}
			for i := range sim {
				if sim[i] != server[i] {
					t.Fatalf("VM %d: the simulator placed it on %s, the server on %s", i, sim[i], server[i])
				}
				used[sim[i]] = true
			}
			if len(used) < 2 {
				t.Fatalf("all VMs on %d host(s): the case decides nothing", len(used))
			}
			t.Logf("%d VMs, %d decisions equal, %d hosts used", len(sim), len(sim), len(used))
		})
	}
}
