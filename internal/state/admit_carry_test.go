package state

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/memstore"
)

// intentOf is a call's audit intent (store.Carrier).
type intentOf string

func (i intentOf) Intent() (string, []byte) {
	return store.AuditPendingPrefix + "t/" + string(i), []byte(string(i))
}

// carryingSlow adds the context's carried write to a transaction that
// lacks it, as the server's store does (auditlog.Carrying), and makes
// usage writes slow, so that concurrent creates share transactions.
type carryingSlow struct{ store.Store }

func (s carryingSlow) Txn(ctx context.Context, conds []store.Cond, ops []store.Op) (bool, int64, error) {
	if op, ok := store.CarriedOp(ctx); ok && len(ops) > 0 {
		dup := false
		for _, o := range ops {
			dup = dup || o.Key == op.Key
		}
		if !dup {
			ops = append(ops[:len(ops):len(ops)], op)
		}
	}
	for _, op := range ops {
		if strings.HasPrefix(op.Key, store.UsagePrefix) {
			time.Sleep(time.Millisecond)
			break
		}
	}
	return s.Store.Txn(ctx, conds, ops)
}

// TestAdmittedCallsCarryTheirOwnIntents: group-committed creates write
// the intent of every call they admit, in the transaction of its VMs,
// and never the intent of a call they refuse — not even the intent of
// the call that leads the group commit.
func TestAdmittedCallsCarryTheirOwnIntents(t *testing.T) {
	st := memstore.New()
	t.Cleanup(func() { st.Close() })
	r := New(carryingSlow{st}, nil)
	ctx := context.Background()
	mustProject(t, r, "race", model.Quota{VMs: 10})
	var wg sync.WaitGroup
	var mu sync.Mutex
	admitted := map[string]int64{}
	for i := range 50 {
		wg.Go(func() {
			name := fmt.Sprintf("vm%d", i)
			vm, err := r.CreateVM(store.WithCarrier(ctx, intentOf(name)), mkVM("race", name, 1, 64*model.MiB))
			if err == nil {
				mu.Lock()
				admitted[name] = vm.Revision
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	kvs, _, err := st.List(ctx, store.AuditPendingPrefix)
	if err != nil {
		t.Fatal(err)
	}
	if len(admitted) != 10 || len(kvs) != 10 {
		t.Fatalf("%d admitted, %d intents stored; want 10 and 10", len(admitted), len(kvs))
	}
	for _, kv := range kvs {
		rev, ok := admitted[string(kv.Value)]
		if !ok || rev != kv.ModRev {
			t.Fatalf("intent of %s at revision %d; its VM admitted %v at %d", kv.Value, kv.ModRev, ok, rev)
		}
	}
}
