package scheduler

import (
	"testing"

	"github.com/vpool/vpool/internal/model"
)

const GiB = int64(model.GiB)

// hostBuilder builds model.Host fixtures: MakeHost().Name("h1").CPUs(16).Obj().
type hostBuilder struct{ h model.Host }

func MakeHost() *hostBuilder {
	return &hostBuilder{h: model.Host{
		Meta:     model.Meta{Name: "h"},
		State:    model.HostReady,
		Capacity: model.Resources{CPUs: 16, Memory: 64 * model.GiB, Disk: 1000 * model.GiB},
	}}
}

func (b *hostBuilder) Name(n string) *hostBuilder { b.h.Name = n; return b }
func (b *hostBuilder) CPUs(n int) *hostBuilder    { b.h.Capacity.CPUs = n; return b }
func (b *hostBuilder) Memory(gib int64) *hostBuilder {
	b.h.Capacity.Memory = model.Bytes(gib * GiB)
	return b
}
func (b *hostBuilder) Disk(gib int64) *hostBuilder {
	b.h.Capacity.Disk = model.Bytes(gib * GiB)
	return b
}
func (b *hostBuilder) State(s model.HostState) *hostBuilder { b.h.State = s; return b }
func (b *hostBuilder) Cordon() *hostBuilder                 { b.h.Cordoned = true; return b }
func (b *hostBuilder) Ratios(cpu, mem, disk float64) *hostBuilder {
	b.h.Ratios = model.Ratios{CPU: cpu, Memory: mem, Disk: disk}
	return b
}
func (b *hostBuilder) Label(k, v string) *hostBuilder {
	if b.h.Labels == nil {
		b.h.Labels = map[string]string{}
	}
	b.h.Labels[k] = v
	return b
}
func (b *hostBuilder) Pool(name, tier string, freeGiB int64) *hostBuilder {
	b.h.Pools = append(b.h.Pools, model.StoragePoolRef{Name: name, Tier: tier, Free: model.Bytes(freeGiB * GiB)})
	return b
}
func (b *hostBuilder) Overlay(addr string) *hostBuilder {
	b.h.Net = &model.HostNet{Overlay: addr}
	return b
}
func (b *hostBuilder) Networks(n ...string) *hostBuilder {
	b.h.Networks = append([]string{}, n...)
	return b
}
func (b *hostBuilder) Obj() model.Host { return b.h }

// allocBuilder builds model.Allocation fixtures.
type allocBuilder struct{ a model.Allocation }

func MakeAlloc(host string) *allocBuilder {
	return &allocBuilder{a: model.Allocation{Host: host, VMs: map[string]bool{}}}
}

func (b *allocBuilder) Used(cpus int, memGiB, diskGiB int64) *allocBuilder {
	b.a.Used = model.Resources{CPUs: cpus, Memory: model.Bytes(memGiB * GiB), Disk: model.Bytes(diskGiB * GiB)}
	return b
}
func (b *allocBuilder) Reserved(cpuMilli int, memGiB int64) *allocBuilder {
	b.a.ReservedCPUMilli, b.a.Reserved.Memory = cpuMilli, model.Bytes(memGiB*GiB)
	return b
}
func (b *allocBuilder) VMs(keys ...string) *allocBuilder {
	for _, k := range keys {
		b.a.VMs[k] = true
	}
	return b
}
func (b *allocBuilder) Domain(d string, n int) *allocBuilder {
	b.a.Domains = bump(b.a.Domains, d, n)
	return b
}
func (b *allocBuilder) Group(g string, n int) *allocBuilder {
	b.a.Groups = bump(b.a.Groups, g, n)
	return b
}
func (b *allocBuilder) Obj() model.Allocation { return b.a }

// vmBuilder builds Requests: MakeVM("p/a").CPUs(2).Memory(4).Req().
type vmBuilder struct {
	key  string
	spec model.VMSpec
}

func MakeVM(key string) *vmBuilder {
	return &vmBuilder{key: key, spec: model.VMSpec{VCPUs: 1, Memory: model.GiB, Power: model.PowerRunning}}
}

func (b *vmBuilder) CPUs(n int) *vmBuilder       { b.spec.VCPUs = n; return b }
func (b *vmBuilder) Memory(gib int64) *vmBuilder { b.spec.Memory = model.Bytes(gib * GiB); return b }
func (b *vmBuilder) MemoryMiB(mib int64) *vmBuilder {
	b.spec.Memory = model.Bytes(mib) * model.MiB
	return b
}
func (b *vmBuilder) Disk(gib int64, pool, tier string) *vmBuilder {
	b.spec.Disks = append(b.spec.Disks, model.Disk{Name: "d", Size: model.Bytes(gib * GiB), Pool: pool, Tier: tier})
	return b
}
func (b *vmBuilder) Require(k, v string) *vmBuilder {
	if b.spec.Placement.RequiredLabels == nil {
		b.spec.Placement.RequiredLabels = map[string]string{}
	}
	b.spec.Placement.RequiredLabels[k] = v
	return b
}
func (b *vmBuilder) Prefer(k, v string) *vmBuilder {
	if b.spec.Placement.PreferredLabels == nil {
		b.spec.Placement.PreferredLabels = map[string]string{}
	}
	b.spec.Placement.PreferredLabels[k] = v
	return b
}
func (b *vmBuilder) Domain(d string) *vmBuilder { b.spec.Placement.IsolationDomain = d; return b }
func (b *vmBuilder) Group(g, kind string) *vmBuilder {
	b.spec.Placement.AffinityGroup, b.spec.Placement.Affinity = g, kind
	return b
}
func (b *vmBuilder) MaxPerHost(n int) *vmBuilder { b.spec.Placement.MaxPerHost = n; return b }
func (b *vmBuilder) Pin(h string) *vmBuilder     { b.spec.Placement.Host = h; return b }
func (b *vmBuilder) NIC(network, ip string) *vmBuilder {
	b.spec.NICs = append(b.spec.NICs, model.NIC{Network: network, IP: ip})
	return b
}
func (b *vmBuilder) Reserve(cpuMilli int, memGiB int64) *vmBuilder {
	b.spec.Controls.CPUReservation, b.spec.Controls.MemoryReservation = cpuMilli, model.Bytes(memGiB*GiB)
	return b
}
func (b *vmBuilder) Req() Request {
	s := b.spec
	return Request{Key: b.key, Spec: &s}
}

func newSched(t testing.TB, opts ...Option) *Scheduler {
	t.Helper()
	s, err := New(model.DefaultPolicy(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newSnap(t testing.TB, hosts []model.Host, allocs ...model.Allocation) *Snapshot {
	t.Helper()
	snap, err := NewSnapshot(model.DefaultPolicy(), hosts, allocs)
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// filterOne runs one filter for r on a one-host snapshot.
func filterOne(t *testing.T, f Filter, h model.Host, a *model.Allocation, r Request) (Status, string) {
	t.Helper()
	var allocs []model.Allocation
	if a != nil {
		a.Host = h.Name
		allocs = append(allocs, *a)
	}
	c := &Cycle{}
	c.reset(newSnap(t, []model.Host{h}, allocs...))
	if err := c.compile(r); err != nil {
		t.Fatal(err)
	}
	st := f.Filter(c, 0)
	if st.Code != Unschedulable {
		return st, ""
	}
	return st, f.Explain(c, st.Reason, st.Value)
}

func ptr[T any](v T) *T { return &v }

func bump(m map[string]int, k string, n int) map[string]int {
	if m == nil {
		m = map[string]int{}
	}
	if m[k] += n; m[k] <= 0 {
		delete(m, k)
	}
	return m
}
