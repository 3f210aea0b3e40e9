package state

import (
	"encoding/json"
	"testing"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// TestVMDecoderSharesOneDecode: two readers of the same versions get the
// same decoded VM (one decode), a reader behind gets its own version,
// and nothing is left once both readers passed (or saw the deletion).
func TestVMDecoderSharesOneDecode(t *testing.T) {
	d := NewVMDecoder()
	kv := func(rev int64, phase model.Phase) store.KV {
		b, _ := json.Marshal(model.VM{Meta: model.Meta{Project: "p", Name: "a"}, Status: model.VMStatus{Phase: phase}})
		return store.KV{Key: store.VMKey("p", "a"), Value: b, ModRev: rev}
	}
	a1, _ := d.Decode(kv(1, model.PhasePending))
	a2, _ := d.Decode(kv(2, model.PhaseCreating)) // reader A runs ahead
	b1, _ := d.Decode(kv(1, model.PhasePending))  // reader B behind: decodes its own
	b2, _ := d.Decode(kv(2, model.PhaseCreating))
	if a2 != b2 {
		t.Fatal("the second reader of version 2 decoded it again")
	}
	if b1 == a1 || b1.Revision != 1 || b1.Status.Phase != model.PhasePending {
		t.Fatalf("reader B's version 1: %+v", b1)
	}
	if n := d.Len(); n != 0 {
		t.Fatalf("%d versions held after both readers passed them", n)
	}
	d.Decode(kv(3, model.PhaseRunning))
	d.Forget(store.VMKey("p", "a"), 4)
	if n := d.Len(); n != 0 {
		t.Fatalf("%d versions held after the deletion", n)
	}
	var nilD *VMDecoder
	if vm, err := nilD.Decode(kv(5, model.PhaseRunning)); err != nil || vm.Revision != 5 {
		t.Fatalf("a nil decoder: %+v %v", vm, err)
	}
}
