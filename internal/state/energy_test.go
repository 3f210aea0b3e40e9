package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/memstore"
)

// countingStore counts the keys transactions write, and the largest
// transaction's bytes.
type countingStore struct {
	store.Store
	puts, deletes int
	maxTxnBytes   int
}

func (c *countingStore) Txn(ctx context.Context, conds []store.Cond, ops []store.Op) (bool, int64, error) {
	size := 0
	for _, op := range ops {
		size += len(op.Key) + len(op.Value)
		if op.Kind == store.OpDelete {
			c.deletes++
		} else {
			c.puts++
		}
	}
	c.maxTxnBytes = max(c.maxTxnBytes, size)
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
	if cs.puts != 2 || cs.deletes != 0 {
		t.Errorf("wrote %d keys and deleted %d, want 2 (the shard of h1 and h2, header) and none", cs.puts, cs.deletes)
	}
	got, err := r.EnergyLedger(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got.HostJ["h1"] != 7 || got.HostJ[model.EnergyDeletedHosts] != 4 || got.VMJ["p/"+model.EnergyDeletedVMs] != 5 || got.TotalJ != 11 {
		t.Errorf("assembled %+v", got)
	}
}

// TestEnergyHostsInShards: the hosts' records are stored many to a key,
// so that a persist at 10,000 hosts and 100,000 VMs writes some 80 keys
// not one per host (the energy ledger was the largest writer of keys at
// rest: about one per host a minute, docs/scale.md). A ledger stored a
// record per host (before the shards) is read, rewritten in shards and
// its per-host keys deleted; every record survives the round trip; no
// transaction passes etcd's request size.
func TestEnergyHostsInShards(t *testing.T) {
	ctx := context.Background()
	st := memstore.New()
	t.Cleanup(func() { st.Close() })
	cs := &countingStore{Store: st}
	r := New(cs, nil)
	const hosts, vmsPerHost = 4000, 10
	rec := EnergyRecords{Meta: model.EnergyMeta{Since: time.Unix(1e9, 0).UTC(), TotalJ: 1},
		Hosts: map[string]model.EnergyHostRecord{}, Projects: map[string]model.EnergyProjectRecord{"p": {Joules: 1}}}
	var legacy []store.Op
	for i := range hosts {
		h := fmt.Sprintf("host-%05d", i)
		hr := model.EnergyHostRecord{Joules: float64(i), EnergyHost: model.EnergyHost{State: model.HostReady, PowerModel: "ml110-g5", Watts: 93.7}, VMs: map[string]float64{}}
		for j := range vmsPerHost {
			hr.VMs[fmt.Sprintf("p/vm-%05d-%d", i, j)] = float64(j) + 0.5
		}
		rec.Hosts[h] = hr
		b, _ := json.Marshal(hr)
		legacy = append(legacy, store.Put(store.EnergyHostKey(h), b))
	}
	for len(legacy) > 0 { // a ledger stored a record per host
		n := min(len(legacy), 100)
		if _, _, err := st.Txn(ctx, nil, legacy[:n]); err != nil {
			t.Fatal(err)
		}
		legacy = legacy[n:]
	}
	b, _ := json.Marshal(rec.Meta)
	if _, _, err := st.Txn(ctx, nil, []store.Op{store.Put(store.EnergyMetaKey, b)}); err != nil {
		t.Fatal(err)
	}
	got, written, found, err := r.ReadEnergy(ctx)
	if err != nil || !found || len(got.Hosts) != hosts || got.Hosts["host-00042"].VMs["p/vm-00042-3"] != 3.5 {
		t.Fatalf("read the per-host records: %v, found %v, %d hosts", err, found, len(got.Hosts))
	}
	if written, err = r.WriteEnergy(ctx, rec, written); err != nil {
		t.Fatal(err)
	}
	if kvs, _, _ := st.List(ctx, store.EnergyHostsPrefix); len(kvs) != 0 {
		t.Fatalf("%d per-host records left after the write in shards", len(kvs))
	}
	shards, _, _ := st.List(ctx, store.EnergyShardsPrefix)
	if want := EnergyShards(hosts, hosts*vmsPerHost); len(shards) != want || want > hosts/100 {
		t.Fatalf("%d shards, want %d (about one per 128 hosts)", len(shards), want)
	}
	back, _, _, err := r.ReadEnergy(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.Hosts, rec.Hosts) {
		t.Fatal("the hosts' records read back differ from those written")
	}
	// At rest every host's energy grows each persist: a key per shard.
	cs.puts, cs.deletes = 0, 0
	for h, hr := range rec.Hosts {
		hr.Joules += 10
		rec.Hosts[h] = hr
	}
	if _, err := r.WriteEnergy(ctx, rec, written); err != nil {
		t.Fatal(err)
	}
	if cs.puts != len(shards)+1 || cs.deletes != 0 { // the shards, the header
		t.Errorf("a persist at %d hosts wrote %d keys and deleted %d, want %d and none", hosts, cs.puts, cs.deletes, len(shards)+1)
	}
	if cs.maxTxnBytes > 1<<20 {
		t.Errorf("a transaction of %d bytes: etcd takes at most 1.5 MiB", cs.maxTxnBytes)
	}
}

// TestEnergyHostInTwoRecords: a persist cut short between the new
// shards and the deletion of old records leaves a host in two records;
// the one with more energy (the newer: a host's energy only grows) is
// read, whichever key comes first.
func TestEnergyHostInTwoRecords(t *testing.T) {
	ctx := context.Background()
	for _, newer := range []string{store.EnergyHostKey("h1"), store.EnergyShardKey(0), store.EnergyShardKey(7)} {
		st := memstore.New()
		t.Cleanup(func() { st.Close() })
		put := func(key string, j float64) {
			hr := model.EnergyHostRecord{Joules: j}
			var b []byte
			if key == store.EnergyHostKey("h1") {
				b, _ = json.Marshal(hr)
			} else {
				b, _ = json.Marshal(model.EnergyHostShard{Hosts: map[string]model.EnergyHostRecord{"h1": hr}})
			}
			if _, _, err := st.Txn(ctx, nil, []store.Op{store.Put(key, b)}); err != nil {
				t.Fatal(err)
			}
		}
		for _, k := range []string{store.EnergyHostKey("h1"), store.EnergyShardKey(0), store.EnergyShardKey(7)} {
			j := 5.0
			if k == newer {
				j = 9
			}
			put(k, j)
		}
		rec, _, _, err := New(st, nil).ReadEnergy(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := rec.Hosts["h1"].Joules; got != 9 {
			t.Errorf("newer record in %s: read %v J, want 9", newer, got)
		}
	}
}
