package chaos

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/client"
	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/test/internal/cluster"
)

// sampler reads, twice a second, the VMs each live host runs — from the
// hosts' own driver state, not the store — and records every VM seen
// running on two hosts at once.
type sampler struct {
	agents  []*cluster.Agent
	mu      sync.Mutex
	samples int
	torn    int               // sightings on two hosts that a second read did not confirm
	dups    map[string]string // VM key → the first sighting
}

func (s *sampler) run(ctx context.Context) {
	for sleep(ctx, 500*time.Millisecond) {
		s.sample()
	}
}

// running maps each VM key to the live hosts that run it; a host whose
// agent is down or frozen is skipped (its VMs stop or freeze with the
// sim "process").
func running(agents []*cluster.Agent) (map[string][]string, error) {
	out := map[string][]string{}
	for _, a := range agents {
		if !a.Running() || a.Frozen() {
			continue
		}
		vms, err := a.SimVMs()
		if err != nil {
			return nil, err
		}
		for _, v := range vms {
			if v.State == hypervisor.StateRunning && !v.Incoming {
				k := key(v.Config.Project, v.Config.Name)
				out[k] = append(out[k], a.Name)
			}
		}
	}
	return out, nil
}

// sample reads every host once; a VM seen on two is read again at once
// (hosts in the other order) and counted only when the second read shows
// it twice as well. One read of four hosts is not atomic: a VM that a
// live migration hands over between the reads of its source (still
// running, before the pause) and of its target (running) would look
// duplicated (a 5-minute run saw exactly that, 10 ms switch-over
// included); a real duplicate lasts until a self-fence, seconds.
func (s *sampler) sample() {
	run, err := running(s.agents)
	if err != nil {
		return // a state file being replaced: the next sample reads it
	}
	if hasDup(run) {
		rev := slices.Clone(s.agents)
		slices.Reverse(rev)
		again, err := running(rev)
		if err != nil {
			return
		}
		s.mu.Lock()
		for k, hosts := range run {
			if len(hosts) > 1 && len(again[k]) < 2 {
				delete(run, k)
				s.torn++
			}
		}
		s.mu.Unlock()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.samples++
	for k, hosts := range run {
		if len(hosts) > 1 && s.dups[k] == "" {
			if s.dups == nil {
				s.dups = map[string]string{}
			}
			sort.Strings(hosts)
			s.dups[k] = fmt.Sprintf("%s running on %v at %s", k, hosts, time.Now().Format("15:04:05.000"))
		}
	}
}

// hasDup reports whether a VM runs on two hosts in run.
func hasDup(run map[string][]string) bool {
	for _, hosts := range run {
		if len(hosts) > 1 {
			return true
		}
	}
	return false
}

// report fails the test for every VM seen running twice and returns how
// many were.
func (s *sampler) report(t *testing.T) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range s.dups {
		t.Errorf("duplicate VM seen during the run: %s", d)
	}
	t.Logf("%d samples of the hosts' VMs during the run; %d sightings on two hosts not confirmed by a second read (hand-overs between the reads)", s.samples, s.torn)
	return len(s.dups)
}

// invariants checks the cluster after the chaos.
type invariants struct {
	t      *testing.T
	cl     *cluster.Cluster
	agents []*cluster.Agent
	led    *ledger
	vms    map[string]model.VM // stored, by key, once settled
	migs   []model.Migration
}

// settle waits until every host is ready, no migration is under way and
// every stored VM runs; when that does not happen within the time, it
// fails with what is still unsettled (a VM stuck is a finding, not a
// reason to skip the checks: they run anyway).
func (inv *invariants) settle(within time.Duration) {
	t := inv.t
	for _, a := range inv.agents {
		if a.Frozen() {
			a.Thaw()
		}
		if !a.Running() {
			a.Start()
		}
	}
	deadline := time.Now().Add(within)
	var why string
	for time.Now().Before(deadline) {
		if why = inv.unsettled(); why == "" {
			time.Sleep(3 * time.Second) // a few converge passes of every agent
			if why = inv.unsettled(); why == "" {
				return
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Errorf("not settled %s after the chaos: %s", within, why)
}

// unsettled says what is not settled yet ("" when all is), and loads
// the stored VMs and migrations.
func (inv *invariants) unsettled() string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := inv.cl.C
	hosts, err := c.ListHosts(ctx)
	if err != nil {
		return "hosts: " + err.Error()
	}
	var out []string
	for _, h := range hosts {
		if h.State != model.HostReady {
			out = append(out, fmt.Sprintf("host %s %s", h.Name, h.State))
		}
	}
	list, err := c.ListVMs(ctx, client.ListVMsOptions{AllProjects: true})
	if err != nil {
		return "vms: " + err.Error()
	}
	inv.vms = map[string]model.VM{}
	for _, v := range list.Items {
		inv.vms[key(v.Project, v.Name)] = v
		if v.Status.Phase != model.PhaseRunning || v.Status.Migration != "" {
			out = append(out, fmt.Sprintf("vm %s %s on %q (migration %q, %s)", key(v.Project, v.Name), v.Status.Phase, v.Status.Host,
				v.Status.Migration, firstNonEmpty(v.Status.LastError, v.Status.Message, v.Status.HAReason)))
		}
	}
	if inv.migs, err = c.ListMigrations(ctx, "", true); err != nil {
		return "migrations: " + err.Error()
	}
	for _, m := range inv.migs {
		if !m.Phase.Final() {
			out = append(out, fmt.Sprintf("migration %s of %s/%s %s→%s %s", m.Name, m.Project, m.VM, m.Source, m.Target, m.Phase))
		}
	}
	if len(out) == 0 {
		out = inv.hostsDisagree()
	}
	if len(out) > 12 {
		out = append(out[:12], fmt.Sprintf("… %d more", len(out)-12))
	}
	return strings.Join(out, "; ")
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}

// check runs every invariant on the settled cluster.
func (inv *invariants) check() {
	inv.checkHosts()
	inv.checkLedger()
	inv.checkUsage()
	inv.checkMigrations()
	inv.checkCapacity()
	inv.led.mu.Lock()
	for _, a := range inv.led.anomalies {
		inv.t.Errorf("during the run: %s", a)
	}
	inv.led.mu.Unlock()
}

// checkHosts: every stored VM runs on exactly one host, its own, as the
// hosts themselves have it; no host keeps a copy of a VM that is not its
// own, nor of a VM that is not stored.
func (inv *invariants) checkHosts() {
	for _, d := range inv.hostsDisagree() {
		inv.t.Error(d)
	}
}

// hostsDisagree lists where the hosts' own state differs from the store.
func (inv *invariants) hostsDisagree() []string {
	where := map[string][]string{} // key → "host:state"
	for _, a := range inv.agents {
		vms, err := a.SimVMs()
		if err != nil {
			return []string{err.Error()}
		}
		for _, v := range vms {
			if !v.Incoming {
				k := key(v.Config.Project, v.Config.Name)
				where[k] = append(where[k], a.Name+":"+string(v.State))
			}
		}
	}
	var out []string
	for k, vm := range inv.vms {
		want := []string{vm.Status.Host + ":" + string(hypervisor.StateRunning)}
		if got := where[k]; len(got) != 1 || got[0] != want[0] {
			sort.Strings(got)
			out = append(out, fmt.Sprintf("VM %s (stored on %s, %s): the hosts have %v, want %v%s", k, vm.Status.Host, vm.Status.Phase, got, want,
				staleNote(got, want[0])))
		}
	}
	for k, got := range where {
		if _, ok := inv.vms[k]; !ok {
			sort.Strings(got)
			out = append(out, fmt.Sprintf("VM %s is not stored but the hosts have it: %v", k, got))
		}
	}
	sort.Strings(out)
	return out
}

// staleNote names the known bug when the only difference is a copy that
// does not run on another host (docs/ha.md, "What is missing").
func staleNote(got []string, want string) string {
	if !slices.Contains(got, want) {
		return ""
	}
	for _, g := range got {
		if g != want && strings.HasSuffix(g, ":"+string(hypervisor.StateRunning)) {
			return ""
		}
	}
	return " — a stale copy left after the VM moved or was restarted elsewhere (a fenced or frozen host's killed copy that its agent never removes: known bug, docs/ha.md \"What is missing\")"
}

// checkLedger: every acknowledged create exists unless it was deleted,
// no acknowledged delete left its VM, and nothing exists that nobody
// asked for.
func (inv *invariants) checkLedger() {
	t, l := inv.t, inv.led
	l.mu.Lock()
	defer l.mu.Unlock()
	lost := 0
	for k := range l.acked {
		if _, ok := inv.vms[k]; !ok && !l.deleted[k] && !l.unsureDelete[k] {
			t.Errorf("acknowledged VM %s is lost", k)
			lost++
		}
	}
	for k := range l.deleted {
		if _, ok := inv.vms[k]; ok {
			t.Errorf("VM %s exists after its delete was acknowledged", k)
		}
	}
	for k := range inv.vms {
		if !l.acked[k] && !l.unsureCreate[k] {
			t.Errorf("VM %s exists but its create was refused or never sent", k)
		}
	}
	t.Logf("after the chaos: %d VMs stored, %d acknowledged creates lost", len(inv.vms), lost)
}

// checkUsage: each project's usage counts exactly its stored VMs.
func (inv *invariants) checkUsage() {
	want := map[string]model.Usage{}
	for _, v := range inv.vms {
		u := want[v.Project]
		u.VMs++
		u.VCPUs += v.Spec.VCPUs
		u.Memory += v.Spec.Memory
		want[v.Project] = u
	}
	for _, p := range projects {
		pv, err := inv.cl.C.GetProject(context.Background(), p)
		if err != nil {
			inv.t.Fatal(err)
		}
		w := want[p]
		if pv.Usage.VMs != w.VMs || pv.Usage.VCPUs != w.VCPUs || pv.Usage.Memory != w.Memory {
			inv.t.Errorf("project %s usage %d VMs, %d vCPUs, %s; its stored VMs hold %d, %d, %s",
				p, pv.Usage.VMs, pv.Usage.VCPUs, pv.Usage.Memory, w.VMs, w.VCPUs, w.Memory)
		}
	}
}

// checkMigrations: none is left in a phase that is not final.
func (inv *invariants) checkMigrations() {
	for _, m := range inv.migs {
		if !m.Phase.Final() {
			inv.t.Errorf("migration %s of %s/%s (%s→%s) stuck in %s", m.Name, m.Project, m.VM, m.Source, m.Target, m.Phase)
		}
	}
}

func (inv *invariants) migrationSummary() string {
	n := map[model.MigrationPhase]int{}
	for _, m := range inv.migs {
		n[m.Phase]++
	}
	reasons := map[string]int{}
	for _, m := range inv.migs {
		if m.Phase != model.MigrationCompleted {
			r := m.Reason
			if len(r) > 90 {
				r = r[:90] + "…"
			}
			reasons[string(m.Phase)+": "+r]++
		}
	}
	var rs []string
	for r, k := range reasons {
		rs = append(rs, fmt.Sprintf("%d× %s", k, r))
	}
	sort.Strings(rs)
	return fmt.Sprintf("migrations ended: %d completed, %d failed, %d cancelled, %d not final (%s)",
		n[model.MigrationCompleted], n[model.MigrationFailed], n[model.MigrationCancelled],
		len(inv.migs)-n[model.MigrationCompleted]-n[model.MigrationFailed]-n[model.MigrationCancelled], strings.Join(rs, "; "))
}

// checkCapacity: no host holds more than its capacity, in the store's
// allocation or in what it runs.
func (inv *invariants) checkCapacity() {
	hosts, err := inv.cl.C.ListHosts(context.Background())
	if err != nil {
		inv.t.Fatal(err)
	}
	runs := map[string]model.Resources{}
	for _, v := range inv.vms {
		r := runs[v.Status.Host]
		r.CPUs += v.Spec.VCPUs
		r.Memory += v.Spec.Memory
		runs[v.Status.Host] = r
	}
	for _, h := range hosts {
		c := h.Capacity
		for what, r := range map[string]model.Resources{"allocation": h.Allocated, "stored VMs": runs[h.Name]} {
			if r.Memory > c.Memory {
				inv.t.Errorf("host %s over capacity (%s): %s memory of %s", h.Name, what, r.Memory, c.Memory)
			}
		}
	}
}
