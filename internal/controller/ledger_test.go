package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// TestEnergyLedgerForgetsDeletedVMs: VMs come and go for many cycles; the
// stored ledger keeps their energy in their project, names no deleted
// VM, and no stored value grows with the VMs that ever lived.
func TestEnergyLedgerForgetsDeletedVMs(t *testing.T) {
	s := powerSettings()
	s.Power.Standby = false
	g := newGreenEnv(t, s)
	g.addHost("h1", 64, 256*model.GiB, nil)
	g.addHost("h2", 64, 256*model.GiB, nil)
	ctx := context.Background()
	g.must(g.r.energyStep) // starts the ledger
	const cycles, perCycle = 20, 20
	for c := range cycles {
		for i := range perCycle {
			g.putVM(fmt.Sprintf("c%02d-v%02d", c, i), []string{"h1", "h2"}[i%2], 1, 50, nil)
		}
		g.setHostUsage("h1", 20)
		g.setHostUsage("h2", 20)
		g.clock.Step(time.Minute)
		g.must(g.r.energyStep)
		for i := range perCycle {
			if err := g.repo.FinishDeleteVM(ctx, "p", fmt.Sprintf("c%02d-v%02d", c, i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	g.clock.Step(time.Minute)
	g.must(g.r.energyStep)
	kvs, _, err := g.st.List(ctx, store.Root+"energy/")
	if err != nil {
		t.Fatal(err)
	}
	largest := 0
	for _, kv := range kvs {
		largest = max(largest, len(kv.Value))
		if strings.Contains(string(kv.Value), "-v0") {
			t.Errorf("%s still names deleted VMs (%d bytes)", kv.Key, len(kv.Value))
		}
	}
	// 400 VMs lived; a ledger that kept them would take ~40 bytes each.
	if largest > 4000 {
		t.Errorf("largest ledger value %d bytes after %d deleted VMs", largest, cycles*perCycle)
	}
	rec := g.ledger()
	if rec.ProjectJ["p"] <= 0 || rec.TotalJ <= 0 {
		t.Fatalf("project p booked %v J of %v J total: the deleted VMs' energy was lost", rec.ProjectJ["p"], rec.TotalJ)
	}
	var vmSum float64
	for _, j := range rec.VMJ {
		vmSum += j
	}
	if d := vmSum - rec.ProjectJ["p"]; d > 1e-6 || d < -1e-6 {
		t.Errorf("VM lines sum to %v J, project p to %v J", vmSum, rec.ProjectJ["p"])
	}
}

// TestEnergyLedgerFoldsDeletedHostsAndProjects: cycles of projects and
// hosts that come and go leave one record per live host and project, and
// the totals still add up (the folded energy shows as its own lines).
func TestEnergyLedgerFoldsDeletedHostsAndProjects(t *testing.T) {
	s := powerSettings()
	s.Power.Standby = false
	g := newGreenEnv(t, s)
	ctx := context.Background()
	g.addHost("keep", 64, 256*model.GiB, nil)
	g.must(g.r.energyStep)
	for c := range 10 {
		host, project := fmt.Sprintf("h%02d", c), fmt.Sprintf("q%02d", c)
		g.addHost(host, 8, 32*model.GiB, nil)
		if _, err := g.repo.CreateProject(ctx, &model.Project{Meta: model.Meta{Name: project}}); err != nil {
			t.Fatal(err)
		}
		vm := &model.VM{Meta: model.Meta{Name: "v", Project: project}, Spec: model.VMSpec{VCPUs: 1, Memory: model.GiB}}
		if _, err := g.repo.CreateVM(ctx, vm); err != nil {
			t.Fatal(err)
		}
		if _, err := g.repo.UpdateVM(ctx, project, "v", func(v *model.VM) error {
			v.Status.Host, v.Status.Phase, v.Status.Usage.CPUPercent = host, model.PhaseRunning, 50
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		g.setHostUsage(host, 10)
		g.setHostUsage("keep", 10)
		g.clock.Step(time.Minute)
		g.must(g.r.energyStep)
		if err := g.repo.FinishDeleteVM(ctx, project, "v"); err != nil {
			t.Fatal(err)
		}
		if err := g.repo.DeleteProject(ctx, project); err != nil {
			t.Fatal(err)
		}
		if err := g.repo.DeleteHost(ctx, host); err != nil {
			t.Fatal(err)
		}
	}
	g.clock.Step(time.Minute)
	g.must(g.r.energyStep)
	kvs, _, err := g.st.List(ctx, store.EnergyPrefix)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, kv := range kvs {
		keys = append(keys, kv.Key)
		if kv.Key == store.EnergyShardKey(0) {
			var sh model.EnergyHostShard
			if err := json.Unmarshal(kv.Value, &sh); err != nil || len(sh.Hosts) != 1 || sh.Hosts["keep"].Joules <= 0 {
				t.Errorf("the hosts' shard holds %+v (%v), want keep's record alone", sh.Hosts, err)
			}
		}
	}
	want := []string{store.EnergyMetaKey, store.EnergyShardKey(0)} // p never used energy
	if strings.Join(keys, " ") != strings.Join(want, " ") {
		t.Errorf("stored %v, want %v", keys, want)
	}
	rec := g.ledger()
	sum := func(m map[string]float64) (s float64) {
		for _, j := range m {
			s += j
		}
		return s
	}
	if d := sum(rec.HostJ) - rec.TotalJ; d > 1e-6 || d < -1e-6 || rec.HostJ[model.EnergyDeletedHosts] <= 0 {
		t.Errorf("hosts sum to %v J of %v J (deleted hosts %v J)", sum(rec.HostJ), rec.TotalJ, rec.HostJ[model.EnergyDeletedHosts])
	}
	if d := sum(rec.VMJ) - sum(rec.ProjectJ); d > 1e-6 || d < -1e-6 || rec.ProjectJ[model.EnergyDeletedProjects] <= 0 {
		t.Errorf("VMs sum to %v J, projects to %v J", sum(rec.VMJ), sum(rec.ProjectJ))
	}
}
