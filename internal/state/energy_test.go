package state

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/memstore"
)

// countingStore counts the keys transactions write.
type countingStore struct {
	store.Store
	puts, deletes int
}

func (c *countingStore) Txn(ctx context.Context, conds []store.Cond, ops []store.Op) (bool, int64, error) {
	for _, op := range ops {
		if op.Kind == store.OpDelete {
			c.deletes++
		} else {
			c.puts++
		}
	}
	return c.Store.Txn(ctx, conds, ops)
}

func TestEnergyRecordsRoundTripAndWriteOnlyWhatChanged(t *testing.T) {
	ctx := context.Background()
	st := memstore.New()
	t.Cleanup(func() { st.Close() })
	cs := &countingStore{Store: st}
	r := New(cs, nil)
	// A ledger stored whole by an older leader is read and converted.
	old := model.EnergyLedger{Since: time.Unix(1e9, 0).UTC(), TotalJ: 10, HostJ: map[string]float64{"h1": 6, "h2": 4},
		VMJ: map[string]float64{"p/a": 5}, ProjectJ: map[string]float64{"p": 5},
		Hosts: map[string]model.EnergyHost{"h1": {State: model.HostReady, Watts: 100}}}
	b, _ := json.Marshal(old)
	if _, _, err := st.Txn(ctx, nil, []store.Op{store.Put(store.EnergyKey, b)}); err != nil {
		t.Fatal(err)
	}
	rec, written, found, err := r.ReadEnergy(ctx)
	if err != nil || !found || !rec.Legacy {
		t.Fatalf("read legacy: %v found %v legacy %v", err, found, rec.Legacy)
	}
	if got := rec.Ledger(); got.TotalJ != 10 || got.VMJ["p/a"] != 5 || got.HostJ["h2"] != 4 || got.Hosts["h1"].Watts != 100 {
		t.Fatalf("legacy view %+v", got)
	}
	// The first write stores the records and drops the old value.
	rec.Projects["p"] = model.EnergyProjectRecord{Joules: 5, DeletedVMsJ: 5}
	written, err = r.WriteEnergy(ctx, rec, written)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Get(ctx, store.EnergyKey); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the old whole-ledger value survived: %v", err)
	}
	// Only what changed is written again (and the header).
	cs.puts, cs.deletes = 0, 0
	h1 := rec.Hosts["h1"]
	h1.Joules = 7
	rec.Hosts["h1"] = h1
	delete(rec.Hosts, "h2")
	rec.Meta.DeletedHostsJ, rec.Meta.TotalJ = 4, 11
	if _, err := r.WriteEnergy(ctx, rec, written); err != nil {
		t.Fatal(err)
	}
	if cs.puts != 2 || cs.deletes != 1 {
		t.Errorf("wrote %d keys and deleted %d, want 2 (h1, header) and 1 (h2)", cs.puts, cs.deletes)
	}
	got, err := r.EnergyLedger(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got.HostJ["h1"] != 7 || got.HostJ[model.EnergyDeletedHosts] != 4 || got.VMJ["p/"+model.EnergyDeletedVMs] != 5 || got.TotalJ != 11 {
		t.Errorf("assembled %+v", got)
	}
}
