package state

import (
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// storedPlacedVM is a VM as the gate stores it: placed, with the scheduler's
// explanation (a few filters and candidates with their score parts).
func storedPlacedVM() *model.VM {
	now := time.Unix(1.7e9, 0).UTC()
	vm := mkVM("proj-3", "e-004711", 2, 2*model.GiB)
	vm.UID = NewID()
	vm.CreatedAt, vm.UpdatedAt = now, now
	vm.Spec.Placement = model.Placement{}
	vm.Status = model.VMStatus{Phase: model.PhaseCreating, Host: "fleet-000731", ObservedAt: now}
	ex := &model.Explanation{Time: now, Hosts: 1000, Chosen: "fleet-000731", Summary: "fleet-000731: the fullest host that fits (best of 412)"}
	ex.Filters = []model.FilterOut{{Filter: "capacity", Rejected: 588, Reason: "not enough free memory"}, {Filter: "state", Rejected: 0, Reason: "not ready"}}
	for _, h := range []string{"fleet-000731", "fleet-000732", "fleet-000100"} {
		ex.Candidates = append(ex.Candidates, model.Candidate{Host: h, Score: 0.91, Parts: map[string]float64{"pack": 0.8, "spread": 0.1, "affinity": 0}})
	}
	vm.Status.Explanation = ex
	return vm
}

// BenchmarkDecodeVM is the decoding of one stored VM version (the view
// and the controllers' cache decode each once: VMDecoder).
func BenchmarkDecodeVM(b *testing.B) {
	v := storedPlacedVM()
	kv := store.KV{Key: store.VMKey(v.Project, v.Name), Value: encodeVM(v), ModRev: 7}
	b.ReportMetric(float64(len(kv.Value)), "bytes/vm")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeVM(kv); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodeVM is the encoding of one VM version (admission, the
// gate, status reports).
func BenchmarkEncodeVM(b *testing.B) {
	v := storedPlacedVM()
	b.ReportAllocs()
	for b.Loop() {
		_ = encodeVM(v)
	}
}
