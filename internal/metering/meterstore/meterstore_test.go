package meterstore

import (
	"context"
	"encoding/json"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/metering"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/memstore"
)

// script is a Source that answers prepared samples in turn.
type script struct {
	mu      sync.Mutex
	samples []metering.Sample
}

func (s *script) Sample(context.Context) (metering.Sample, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.samples[0]
	s.samples = s.samples[1:]
	return out, nil
}

// TestTaskPersistsResumesAndCompacts: two terms book a workload (the
// second resumes from what the first stored); the stored rollups add up
// to the hand computation; a month later old months lose their days.
func TestTaskPersistsResumesAndCompacts(t *testing.T) {
	ctx := context.Background()
	st := memstore.New()
	t0 := time.Date(2025, 3, 10, 10, 0, 0, 0, time.UTC)
	vm := func(j float64, net int64) metering.VMSample {
		return metering.VMSample{Project: "p", Name: "a", Host: "h1", VCPUs: 2, Memory: 4 * model.GiB, Disk: 20 * model.GiB,
			Running: true, Placed: true, EnergyJ: j, NetBytes: net}
	}
	var samples []metering.Sample
	for i := range 121 { // two hours, a sample a minute, 1 kWh and 6000 bytes an hour
		samples = append(samples, metering.Sample{At: t0.Add(time.Duration(i) * time.Minute),
			VMs: []metering.VMSample{vm(float64(i)*3.6e6/60, int64(i)*100)}})
	}
	src := &script{samples: samples}
	now := t0
	clock := func() time.Time { return now }
	grid := func(context.Context, store.Store) (metering.Grid, error) {
		return metering.Grid{PUE: 1.5, Default: 400}, nil
	}
	term := func() *Task {
		return NewTask(Config{Source: src, Grid: grid, Clock: clock, PersistEvery: 5 * time.Minute})
	}
	first := term()
	for i := range 61 {
		now = t0.Add(time.Duration(i) * time.Minute)
		if err := first.Step(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	second := term() // a new leader: whatever the first did not write is lost, the rest resumes
	for i := 61; i < 121; i++ {
		now = t0.Add(time.Duration(i) * time.Minute)
		if err := second.Step(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	if err := second.persist(ctx, st); err != nil {
		t.Fatal(err)
	}
	rs, err := List(ctx, st, "2025-03", "p")
	if err != nil || len(rs) != 1 {
		t.Fatalf("rollups %+v %v", rs, err)
	}
	got := rs[0].Total
	// 2 h × 2 vCPUs, × 4 GiB, × 20 GiB; 2 kWh; 12000 bytes; 2 kWh × 1.5 × 400 g
	want := model.UsageFigures{VCPUHours: 4, MemGiBHours: 8, DiskGiBHours: 40, NetBytes: 12000, EnergyKWh: 2, CO2Grams: 1200}
	if !close(got, want) {
		t.Fatalf("stored %+v, want %+v (the first term wrote at minute 60, the second resumed from it)", got, want)
	}
	// two months later the March rollup keeps its total, not its days
	now = t0.AddDate(0, 2, 0)
	src.samples = []metering.Sample{{At: now}}
	third := term()
	if err := third.Step(ctx, st); err != nil {
		t.Fatal(err)
	}
	kv, err := st.Get(ctx, store.MeteringKey("2025-03", "p", "a"))
	if err != nil {
		t.Fatal(err)
	}
	var r model.UsageRollup
	if err := json.Unmarshal(kv.Value, &r); err != nil || r.Days != nil || !close(r.Total, want) {
		t.Fatalf("compacted %+v %v", r, err)
	}
}

func close(a, b model.UsageFigures) bool {
	eq := func(x, y float64) bool { return math.Abs(x-y) < 1e-6 }
	return eq(a.VCPUHours, b.VCPUHours) && eq(a.MemGiBHours, b.MemGiBHours) && eq(a.DiskGiBHours, b.DiskGiBHours) &&
		a.NetBytes == b.NetBytes && eq(a.EnergyKWh, b.EnergyKWh) && eq(a.CO2Grams, b.CO2Grams)
}

// TestStoreSource: what the meter takes from VM and host records.
func TestStoreSource(t *testing.T) {
	ctx := context.Background()
	st := memstore.New()
	now := time.Date(2025, 3, 10, 10, 0, 0, 0, time.UTC)
	repo := state.New(st, func() time.Time { return now })
	if _, err := repo.CreateProject(ctx, &model.Project{Meta: model.Meta{Name: "p"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.UpsertHost(ctx, "h1", func(h *model.Host, _ bool) error {
		h.Labels, h.State, h.Capacity = map[string]string{model.SiteLabel: "eu"}, model.HostReady, model.Resources{CPUs: 8, Memory: 16 * model.GiB}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"run", "stopped", "pending"} {
		vm := &model.VM{Meta: model.Meta{Name: name, Project: "p"}, Spec: model.VMSpec{VCPUs: 2, Memory: model.GiB,
			Disks: []model.Disk{{Name: "d", Size: 10 * model.GiB}}, Power: model.PowerRunning}}
		if _, err := repo.CreateVM(ctx, vm); err != nil {
			t.Fatal(err)
		}
		if name == "pending" {
			continue
		}
		if _, err := repo.UpdateVM(ctx, "p", name, func(v *model.VM) error {
			v.Status.Host, v.Status.Phase = "h1", model.PhaseRunning
			v.Status.Usage.NetRx, v.Status.Usage.NetTx = 100, 50
			v.Status.Disks = []model.DiskStatus{{Name: "d", Size: 12 * model.GiB}} // grown by a resize
			if name == "stopped" {
				v.Status.Phase = model.PhaseStopped
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	s, err := StoreSource{Store: st, Clock: func() time.Time { return now }}.Sample(ctx)
	if err != nil {
		t.Fatal(err)
	}
	by := map[string]metering.VMSample{}
	for _, v := range s.VMs {
		by[v.Name] = v
	}
	if v := by["run"]; !v.Running || !v.Placed || v.Site != "eu" || v.NetBytes != 150 || v.Disk != 12*model.GiB {
		t.Errorf("running VM %+v", v)
	}
	if v := by["stopped"]; v.Running || !v.Placed {
		t.Errorf("stopped VM %+v", v)
	}
	if v := by["pending"]; v.Running || v.Placed || v.Disk != 10*model.GiB {
		t.Errorf("pending VM %+v", v)
	}
	// the servers' memory knows newer counters than the record
	live := liveUsage{"p/run": {NetRx: 1000, NetTx: 500}}
	s, err = StoreSource{Store: st, Clock: func() time.Time { return now }, Usage: live}.Sample(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range s.VMs {
		want := map[string]int64{"run": 1500, "stopped": 150, "pending": 0}[v.Name]
		if v.NetBytes != want {
			t.Errorf("with live usage, %s counts %d bytes, want %d", v.Name, v.NetBytes, want)
		}
	}
}

// liveUsage is a fake of the servers' usage view.
type liveUsage map[string]model.VMUsage

func (l liveUsage) VMUsage(key string) (model.VMUsage, time.Time, bool) {
	u, ok := l[key]
	return u, time.Date(2025, 3, 10, 10, 0, 0, 0, time.UTC), ok
}
