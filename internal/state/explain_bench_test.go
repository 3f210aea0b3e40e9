package state

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/scheduler"
	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/memstore"
)

// placedByScheduler creates a VM and places it with the real scheduler
// among 1,000 hosts (default policy and plugins, so its explanation has
// the filters, three candidates and every scorer's part), through
// Assign. It answers the stored record and the explanation.
func placedByScheduler(b *testing.B) (store.KV, *model.Explanation) {
	ctx := context.Background()
	st := newBenchRepo(b)
	mustProjectB(b, st, "proj-3")
	pol := model.DefaultPolicy()
	hosts := make([]model.Host, 1000)
	allocs := make([]model.Allocation, 1000)
	for i := range hosts {
		name := fmt.Sprintf("fleet-%06d", i)
		hosts[i] = model.Host{Meta: model.Meta{Name: name}, State: model.HostReady,
			Capacity: model.Resources{CPUs: 32, Memory: 128 * model.GiB, Disk: 2 * model.TiB}}
		allocs[i] = model.Allocation{Host: name}
		if i%3 == 0 { // a third too full for the VM: the explanation has a filter's rejections
			allocs[i].Used = model.Resources{CPUs: 31, Memory: 127 * model.GiB}
		}
	}
	snap, err := scheduler.NewSnapshot(pol, hosts, allocs)
	if err != nil {
		b.Fatal(err)
	}
	sched, err := scheduler.New(pol)
	if err != nil {
		b.Fatal(err)
	}
	vm := mkVM("proj-3", "e-004711", 2, 2*model.GiB)
	vm.Spec.Labels = map[string]string{"app": "web", "tier": "front"}
	v, err := st.CreateVM(ctx, vm)
	if err != nil {
		b.Fatal(err)
	}
	d := sched.Place(snap, scheduler.Request{Key: v.Key(), Spec: &v.Spec})
	if !d.Placed() {
		b.Fatalf("not placed: %+v", d.Explanation)
	}
	d.Explanation.Time = time.Unix(1.7e9, 0).UTC()
	a, err := st.GetAllocation(ctx, d.Host)
	if err != nil {
		b.Fatal(err)
	}
	got, ok, err := st.Assign(ctx, []Assignment{{VM: v, Host: d.Host, Explanation: d.Explanation}}, map[string]model.Allocation{d.Host: *a}, 0)
	if err != nil || !ok {
		b.Fatalf("Assign = %v, %v", ok, err)
	}
	kv, err := st.Store().Get(ctx, store.VMKey(got.VMs[0].Project, got.VMs[0].Name))
	if err != nil {
		b.Fatal(err)
	}
	return kv, d.Explanation
}

func newBenchRepo(b *testing.B) *Repo {
	b.Helper()
	st := memstore.New()
	b.Cleanup(func() { st.Close() })
	return New(st, nil)
}

func mustProjectB(b *testing.B, r *Repo, name string) {
	b.Helper()
	if _, err := r.CreateProject(context.Background(), &model.Project{Meta: model.Meta{Name: name}}); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkPlacedVMRecord is what a placed VM costs every reader of its
// record: its stored bytes (carried by every later version: status
// reports, usage, state changes, through etcd's apply, the watch and
// each decode) and the heap one decoded copy holds (the server's view
// and the controllers' cache hold one a VM). "embedded" is the record
// as stored before the explanation was kept apart (the same VM with the
// same explanation inside), "apart" what Assign stores now.
func BenchmarkPlacedVMRecord(b *testing.B) {
	kv, expl := placedByScheduler(b)
	old, err := DecodeVM(kv)
	if err != nil {
		b.Fatal(err)
	}
	old.Status.Explanation = expl
	embedded := store.KV{Key: kv.Key, Value: encodeVM(old), ModRev: kv.ModRev}
	for _, c := range []struct {
		name string
		kv   store.KV
	}{{"embedded", embedded}, {"apart", kv}} {
		b.Run(c.name, func(b *testing.B) {
			var heap, allocs float64
			for b.Loop() {
				heap, allocs = decodedHeap(b, c.kv)
			}
			b.ReportMetric(float64(len(c.kv.Value)), "record-bytes")
			b.ReportMetric(heap, "heap-bytes/decoded-vm")
			b.ReportMetric(allocs, "allocs/decode")
		})
	}
}

// decodedHeap decodes kv n times, keeps the VMs, and answers the live
// heap they hold and the allocations a decode made, per VM.
func decodedHeap(b *testing.B, kv store.KV) (heap, allocs float64) {
	const n = 2000
	keep := make([]*model.VM, n)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range keep {
		v, err := DecodeVM(kv)
		if err != nil {
			b.Fatal(err)
		}
		keep[i] = v
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(keep)
	return float64(after.HeapAlloc-before.HeapAlloc) / n, float64(after.Mallocs-before.Mallocs-1) / n
}
