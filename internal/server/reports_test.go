package server

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/memstore"
)

// slowVMWrites is a store whose transactions that write a VM take a
// few milliseconds (an fsync on a busy disk) and are counted. The first
// one takes 300 ms: on a loaded machine the test's hundred requests
// arrived spread over more than the 3 ms a commit takes (CI once saw 52
// transactions at load 6), and what the test checks is that the reports
// waiting behind a commit share the next one.
type slowVMWrites struct {
	store.Store
	on   atomic.Bool
	txns atomic.Int32
}

func (s *slowVMWrites) Txn(ctx context.Context, conds []store.Cond, ops []store.Op) (bool, int64, error) {
	if s.on.Load() {
		for _, op := range ops {
			if strings.HasPrefix(op.Key, store.VMsPrefix) {
				if s.txns.Add(1) == 1 {
					time.Sleep(300 * time.Millisecond)
				}
				time.Sleep(3 * time.Millisecond)
				break
			}
		}
	}
	return s.Store.Txn(ctx, conds, ops)
}

// Status reports that arrive together share transactions; each VM still
// gets its phase and exactly one phase event, and a report about a VM of
// another host is refused as before.
func TestStatusReportsShareTransactions(t *testing.T) {
	mem := memstore.New()
	defer mem.Close()
	st := &slowVMWrites{Store: mem}
	ts := startServer(t, st)
	ctx := context.Background()
	const hosts, perHost = 5, 20
	agents := make([]*testAgent, hosts)
	for i := range agents {
		agents[i] = joinAgent(t, ts, fmt.Sprintf("h%d", i))
		agents[i].beat()
	}
	for i := range hosts * perHost {
		name := fmt.Sprintf("v%03d", i)
		if _, err := ts.Repo().CreateVM(ctx, &model.VM{Meta: model.Meta{Name: name, Project: "default"}, Spec: vmReq("").Spec}); err != nil {
			t.Fatal(err)
		}
		if _, err := ts.Repo().UpdateVM(ctx, "default", name, func(v *model.VM) error {
			v.Status.Host, v.Status.Phase = fmt.Sprintf("h%d", i%hosts), model.PhaseCreating
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ts.view.consistent(ctx); err != nil {
		t.Fatal(err)
	}
	st.on.Store(true)
	var wg sync.WaitGroup
	codes := make([]int, hosts*perHost)
	answers := make([]model.VM, hosts*perHost)
	for i := range hosts * perHost {
		wg.Go(func() {
			codes[i] = agents[i%hosts].do("PUT", fmt.Sprintf("/agent/v1/vms/default/v%03d/status", i), api.VMReport{Phase: model.PhaseRunning}, &answers[i])
		})
	}
	wg.Wait()
	st.on.Store(false)
	for i, c := range codes {
		if c != 200 {
			t.Fatalf("report %d: %d", i, c)
		}
	}
	vms, _, _ := ts.Repo().ListVMs(ctx, "default")
	for i, vm := range vms {
		if vm.Status.Phase != model.PhaseRunning || vm.Status.StartedAt == nil {
			t.Fatalf("%s: %s after its running report", vm.Name, vm.Status.Phase)
		}
		// the answer is the VM as stored (sent as the stored bytes)
		if !reflect.DeepEqual(answers[i], *vm) {
			t.Fatalf("%s: the report was answered with %+v, the store has %+v", vm.Name, answers[i], *vm)
		}
	}
	evs, _, _ := ts.Repo().ListEvents(ctx, 0, "")
	running := map[string]int{}
	for _, e := range evs {
		if e.Kind == state.EventVMPhase && e.To == string(model.PhaseRunning) {
			running[e.Object]++
		}
	}
	if len(running) != hosts*perHost {
		t.Fatalf("%d VMs have a running event, want %d", len(running), hosts*perHost)
	}
	txns := st.txns.Load()
	t.Logf("%d reports in %d transactions", hosts*perHost, txns)
	if txns > hosts*perHost/2 { // one report per transaction before
		t.Errorf("%d reports took %d transactions: no group commits", hosts*perHost, txns)
	}
	if code := agents[0].do("PUT", "/agent/v1/vms/default/v001/status", api.VMReport{Phase: model.PhaseFailed}, nil); code != 409 {
		t.Fatalf("a report about another host's VM: %d", code)
	}
}
