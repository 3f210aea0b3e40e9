package meterstore

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strings"
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
	if err := second.Flush(ctx, st); err != nil {
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
	rs, err = List(ctx, st, "2025-03", "p")
	if err != nil || len(rs) != 1 || rs[0].Days != nil || !close(rs[0].Total, want) {
		t.Fatalf("compacted %+v %v", rs, err)
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

// countingStore counts the keys the task writes, and its largest
// transaction.
type countingStore struct {
	store.Store
	rollups, marks, maxTxnBytes int
}

func (c *countingStore) Txn(ctx context.Context, conds []store.Cond, ops []store.Op) (bool, int64, error) {
	size := 0
	for _, op := range ops {
		size += len(op.Value)
		if op.Key == store.MeteringMarkKey {
			c.marks++
		} else {
			c.rollups++
		}
	}
	c.maxTxnBytes = max(c.maxTxnBytes, size)
	return c.Store.Txn(ctx, conds, ops)
}

// fleetAt is n running VMs at minute i, ten a host: constant shapes,
// counters that grow (the fleet at rest); stopped names a VM stopped
// from minute stopAt on.
func fleetAt(t0 time.Time, n, i int, stopped string, stopAt int) metering.Sample {
	return fleetOn(t0, n, 10, i, stopped, stopAt)
}

// fleetOn is fleetAt with perHost VMs a host.
func fleetOn(t0 time.Time, n, perHost, i int, stopped string, stopAt int) metering.Sample {
	s := metering.Sample{At: t0.Add(time.Duration(i) * time.Minute)}
	for j := range n {
		v := metering.VMSample{Project: fmt.Sprintf("p%d", j%7), Name: fmt.Sprintf("vm-%05d", j), Host: fmt.Sprintf("h%d", j/perHost),
			VCPUs: 1 + j%4, Memory: model.GiB * model.Bytes(1+j%3), Disk: 10 * model.GiB, Running: true, Placed: true,
			NetBytes: int64(i * (100 + j)), EnergyJ: float64(i) * 3000}
		if v.Name == stopped && i >= stopAt {
			v.Running = false
		}
		s.VMs = append(s.VMs, v)
	}
	return s
}

// TestRestWritesBounded: at rest (every VM running on, its counters
// growing) the task writes each shard of rollups once per PersistVMEvery
// and the mark once a persist — not every rollup every minute (5 keys
// per host a minute at 10 VMs a host), nor each VM's rollup once per
// PersistVMEvery (VMs a host ÷ 15: 2 at 30 VMs a host; docs/scale.md) —
// so the keys a host costs a minute do not grow with its VMs, while a
// VM that changes (stopped) is written at the next persist.
func TestRestWritesBounded(t *testing.T) {
	const hosts = 100
	for _, perHost := range []int{10, 30} {
		t.Run(fmt.Sprintf("%d VMs a host", perHost), func(t *testing.T) {
			ctx := context.Background()
			n := hosts * perHost
			t0 := time.Date(2025, 3, 10, 10, 0, 0, 0, time.UTC)
			st := &countingStore{Store: memstore.New()}
			t.Cleanup(func() { st.Close() })
			now := t0
			i := 0
			src := sourceFunc(func() metering.Sample { return fleetOn(t0, n, perHost, i, "vm-00042", 31) })
			task := NewTask(Config{Source: src, Clock: func() time.Time { return now }})
			step := func() {
				t.Helper()
				now = t0.Add(time.Duration(i) * time.Minute)
				if err := task.Step(ctx, st); err != nil {
					t.Fatal(err)
				}
			}
			for ; i < 15; i++ { // the first persist writes every (new) VM
				step()
			}
			st.rollups, st.marks = 0, 0
			for ; i < 45; i++ { // thirty minutes at rest: a VM stops at minute 31
				step()
				if i == 31 {
					r, err := stored1(ctx, st, "2025-03", "p0", "vm-00042")
					if err != nil || r.Shape == nil || r.Shape.Running || !r.LastAt.Equal(now) {
						t.Fatalf("the VM stopped at minute 31 is stored as %+v (%v), want stopped, sampled at %v", r.Shape, err, now)
					}
				}
			}
			// each shard once per 15 minutes: 2 a shard in 30 minutes,
			// and the stopped VM's once more; a mark a minute
			shards := 0
			for p := range 7 {
				shards += ((n-p+6)/7 + metering.DefaultPerShard - 1) / metering.DefaultPerShard
			}
			perHostMinute := float64(st.rollups+st.marks) / hosts / 30
			if want := 2*shards + 1; st.rollups > want || st.rollups < 2*shards-shards/5 || st.marks != 30 {
				t.Errorf("30 minutes at rest for %d VMs in %d shards wrote %d keys of rollups and %d marks, want about %d and 30",
					n, shards, st.rollups, st.marks, want)
			}
			if perHostMinute > 0.05 {
				t.Errorf("%.3f keys a host a minute at rest at %d VMs a host, want at most 0.05", perHostMinute, perHost)
			}
			if st.maxTxnBytes > maxTxnBytes {
				t.Errorf("a transaction of %d bytes, want at most %d", st.maxTxnBytes, maxTxnBytes)
			}
		})
	}
}

// stored1 reads one VM's stored rollup.
func stored1(ctx context.Context, st store.Store, month, project, vm string) (model.UsageRollup, error) {
	rs, err := List(ctx, st, month, project)
	if err != nil {
		return model.UsageRollup{}, err
	}
	for _, r := range rs {
		if r.VM == vm {
			return r, nil
		}
	}
	return model.UsageRollup{}, fmt.Errorf("%s/%s/%s not stored", month, project, vm)
}

type sourceFunc func() metering.Sample

func (f sourceFunc) Sample(context.Context) (metering.Sample, error) { return f(), nil }

// TestFailoverKeepsTheBill: the leader dies with up to PersistVMEvery of
// booking not written; the next leader books it again from the stored
// rollups (their shape and counters) up to the stored mark in full, and
// only the time nobody measured after the mark is bound by the gap cap.
// The bill equals one meter's that saw every sample the leaders took.
func TestFailoverKeepsTheBill(t *testing.T) {
	ctx := context.Background()
	const n, dies = 50, 36
	t0 := time.Date(2025, 3, 10, 10, 0, 0, 0, time.UTC)
	sample := func(i int) metering.Sample {
		s := fleetAt(t0, n, i, "vm-00007", 20) // stopped at minute 20
		if i >= 25 {
			s.VMs[3].NetBytes -= 25 * 103 // vm-0003 migrated: its NIC counter started again
		}
		if i < 30 {
			s.VMs = s.VMs[:n-1] // vm-0049 created at minute 30
		}
		return s
	}
	grid := metering.Grid{PUE: 1.2, Default: 300}
	gridf := func(context.Context, store.Store) (metering.Grid, error) { return grid, nil }
	for _, tc := range []struct {
		name string
		gap  int // minutes without a leader
	}{{"short gap", 3}, {"gap past the cap", 14}} {
		t.Run(tc.name, func(t *testing.T) {
			st := memstore.New()
			t.Cleanup(func() { st.Close() })
			ref := metering.New()
			now, i := t0, 0
			src := sourceFunc(func() metering.Sample { return sample(i) })
			term := func() *Task {
				return NewTask(Config{Source: src, Grid: gridf, Clock: func() time.Time { return now }, PersistVMEvery: 30 * time.Minute})
			}
			run := func(task *Task, from, to int) {
				for i = from; i < to; i++ {
					now = t0.Add(time.Duration(i) * time.Minute)
					ref.Add(sample(i), grid)
					if err := task.Step(ctx, st); err != nil {
						t.Fatal(err)
					}
				}
			}
			run(term(), 0, dies+1) // dies after its persist at minute 36
			rs, _ := List(ctx, st, "2025-03", "")
			stale := 0
			for _, r := range rs {
				if t0.Add(time.Duration(dies+tc.gap)*time.Minute).Sub(r.LastAt) > metering.DefaultMaxGap {
					stale++
				}
			}
			if stale == 0 {
				t.Fatal("no stored rollup older than the gap cap at the failover: the test would not see a lost booking")
			}
			next := term()
			run(next, dies+tc.gap, 60)
			if err := next.Flush(ctx, st); err != nil {
				t.Fatal(err)
			}
			rs, err := List(ctx, st, "2025-03", "")
			if err != nil {
				t.Fatal(err)
			}
			day := time.Date(2025, 3, 10, 0, 0, 0, 0, time.UTC)
			got, _ := metering.Report(rs, day, day.AddDate(0, 0, 1))
			want, _ := metering.Report(ref.Rollups(), day, day.AddDate(0, 0, 1))
			if len(got) != len(want) {
				t.Fatalf("%d lines stored, want %d", len(got), len(want))
			}
			for k := range want {
				if got[k].VM != want[k].VM || !close(got[k].UsageFigures, want[k].UsageFigures) {
					t.Errorf("%s/%s: stored %+v, one meter %+v (%d of %d rollups were older than the cap at the failover)",
						want[k].Project, want[k].VM, got[k].UsageFigures, want[k].UsageFigures, stale, len(rs))
				}
			}
		})
	}
}

// TestOldRollupsGainTheirShape: a rollup an older leader wrote (no shape:
// it wrote every rollup every minute) is written again, with its shape,
// at the new leader's first persist, so that a later failover can book
// from it.
func TestOldRollupsGainTheirShape(t *testing.T) {
	ctx := context.Background()
	st := memstore.New()
	t.Cleanup(func() { st.Close() })
	t0 := time.Date(2025, 3, 10, 10, 0, 0, 0, time.UTC)
	old := model.UsageRollup{Month: "2025-03", Project: "p0", VM: "vm-00000", Host: "h0", LastAt: t0,
		Total: model.UsageFigures{VCPUHours: 1}, Days: []model.UsageDay{{Day: 10, UsageFigures: model.UsageFigures{VCPUHours: 1}}}}
	b, _ := json.Marshal(old)
	if _, _, err := st.Txn(ctx, nil, []store.Op{store.Put(store.MeteringKey(old.Month, old.Project, old.VM), b)}); err != nil {
		t.Fatal(err)
	}
	now := t0.Add(time.Minute)
	task := NewTask(Config{Source: sourceFunc(func() metering.Sample { return fleetAt(t0, 1, 1, "", 0) }),
		Clock: func() time.Time { return now }})
	if err := task.Step(ctx, st); err != nil {
		t.Fatal(err)
	}
	rs, err := List(ctx, st, "2025-03", "p0")
	if err != nil || len(rs) != 1 || rs[0].Shape == nil || rs[0].Shape.VCPUs != 1 || !rs[0].LastAt.Equal(now) ||
		math.Abs(rs[0].Total.VCPUHours-(1+1.0/60)) > 1e-9 {
		t.Fatalf("after the first persist: %+v %v", rs, err)
	}
	if m, err := ReadMark(ctx, st); err != nil || !m.At.Equal(now) {
		t.Fatalf("mark %+v %v, want %v", m, err, now)
	}
}

// TestOneVMRecordsMoveIntoShards: the rollups an older leader stored one
// a VM — this month's, last month's, a compacted month's, and one VM
// stored both ways (a shard written beside an older leader's record) —
// are read by List once each, and the new leader's first persist and
// compaction move every one of them into shards and delete their
// records, with the same totals; a failover right after books on.
func TestOneVMRecordsMoveIntoShards(t *testing.T) {
	ctx := context.Background()
	st := memstore.New()
	t.Cleanup(func() { st.Close() })
	t0 := time.Date(2025, 3, 10, 10, 0, 0, 0, time.UTC)
	const n = 150 // three shards of p0..p6 together
	src := fleetOn(t0, n, 10, 0, "", 0)
	put := func(key string, v any) {
		t.Helper()
		b, _ := json.Marshal(v)
		if _, _, err := st.Txn(ctx, nil, []store.Op{store.Put(key, b)}); err != nil {
			t.Fatal(err)
		}
	}
	var want float64
	for _, v := range src.VMs {
		sh := model.UsageShape{VCPUs: v.VCPUs, Memory: v.Memory, Disk: v.Disk, Running: true, Placed: true}
		for _, month := range []string{"2025-01", "2025-02", "2025-03"} {
			r := model.UsageRollup{Month: month, Project: v.Project, VM: v.Name, Host: v.Host, LastAt: t0, Shape: &sh,
				Total: model.UsageFigures{VCPUHours: 2}, Days: []model.UsageDay{{Day: 1, UsageFigures: model.UsageFigures{VCPUHours: 2}}}}
			if month != "2025-03" {
				r.LastAt = time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
			}
			put(store.MeteringKey(month, v.Project, v.Name), r)
			want += 2
		}
	}
	// vm-00000 is also in a shard a newer leader wrote, older than its record
	stale := model.UsageRollup{Month: "2025-03", Project: "p0", VM: "vm-00000", LastAt: t0.Add(-time.Hour),
		Total: model.UsageFigures{VCPUHours: 1.5}, Days: []model.UsageDay{{Day: 1, UsageFigures: model.UsageFigures{VCPUHours: 1.5}}}}
	put(store.MeteringShardKey("2025-03", "p0", 0), model.UsageRollupShard{Month: "2025-03", Project: "p0", Rollups: []model.UsageRollup{stale}})
	total := func() (float64, int) {
		t.Helper()
		var sum float64
		lines := 0
		for _, m := range []string{"2025-01", "2025-02", "2025-03"} {
			rs, err := List(ctx, st, m, "")
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rs {
				sum += r.Total.VCPUHours
			}
			lines += len(rs)
		}
		return sum, lines
	}
	if got, lines := total(); math.Abs(got-want) > 1e-6 || lines != 3*n {
		t.Fatalf("before: %d rollups of %v vCPU-hours, want %d of %v (a VM stored twice counts once, as the newer)", lines, got, 3*n, want)
	}
	now := t0
	task := NewTask(Config{Source: sourceFunc(func() metering.Sample { return fleetOn(t0, n, 10, 0, "", 0) }),
		Clock: func() time.Time { return now }})
	if err := task.Step(ctx, st); err != nil {
		t.Fatal(err)
	}
	kvs, _, err := st.List(ctx, store.MeteringPrefix)
	if err != nil {
		t.Fatal(err)
	}
	shards := 0
	for _, kv := range kvs {
		last := kv.Key[strings.LastIndex(kv.Key, "/")+1:]
		switch {
		case kv.Key == store.MeteringMarkKey:
		case strings.HasPrefix(last, store.MeteringShardMark):
			shards++
		default:
			t.Errorf("%s is still stored one a VM", kv.Key)
		}
	}
	if want := 3 * 7; shards != want { // a shard a project a month: 21 or 22 VMs each
		t.Errorf("%d shards, want %d", shards, want)
	}
	if got, lines := total(); math.Abs(got-want) > 1e-6 || lines != 3*n {
		t.Errorf("after: %d rollups of %v vCPU-hours, want %d of %v", lines, got, 3*n, want)
	}
	if rs, _ := List(ctx, st, "2025-01", "p1"); len(rs) == 0 || rs[0].Days != nil {
		t.Errorf("January (compacted): %+v", rs)
	}
	// a failover: the next leader books on from the shards
	now = t0.Add(5 * time.Minute)
	next := NewTask(Config{Source: sourceFunc(func() metering.Sample { return fleetOn(t0, n, 10, 5, "", 0) }),
		Clock: func() time.Time { return now }})
	if err := next.Step(ctx, st); err != nil {
		t.Fatal(err)
	}
	if err := next.Flush(ctx, st); err != nil {
		t.Fatal(err)
	}
	var booked float64
	for _, v := range src.VMs {
		booked += float64(v.VCPUs) * 5.0 / 60
	}
	if got, _ := total(); math.Abs(got-want-booked) > 1e-6 {
		t.Errorf("after a failover five minutes on: %v vCPU-hours, want %v", got, want+booked)
	}
}
