package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// balanceScenario runs rounds of a local-regression balancer on a host
// whose load rises round by round, with a new leadership term (a
// failover: the old leader's memory is gone) before round `failAt` when
// failAt > 0, and returns the plan of every round.
func balanceScenario(t *testing.T, rounds, failAt int) []model.BalancePlan {
	set := model.DefaultBalanceSettings()
	set.Mode, set.Policy, set.IntervalSeconds = model.BalanceRecommend, "lr-mmt-1.2", 60
	g := newGreenEnv(t, set)
	for _, h := range []string{"h1", "h2", "h3"} {
		g.addHost(h, 8, 32*model.GiB, nil)
	}
	for i := 1; i <= 4; i++ {
		g.putVM(fmt.Sprintf("a%d", i), "h1", 2, 20, nil)
	}
	g.putVM("b1", "h2", 2, 30, nil)
	g.putVM("c1", "h3", 2, 10, nil)
	var plans []model.BalancePlan
	for round := 1; round <= rounds; round++ {
		// h1's VMs grow busier every round (percent of one vCPU).
		for i := 1; i <= 4; i++ {
			g.setVMUsage(fmt.Sprintf("a%d", i), float64(20+12*round+3*i))
		}
		g.syncHostUsage()
		g.must(g.r.balanceRound)
		plans = append(plans, g.plan())
		// Half an interval later, the leader may be replaced; a pass then
		// runs no round (the interval has not passed).
		g.clock.Step(30 * time.Second)
		if round+1 == failAt {
			g.restart()
		}
		g.must(g.r.balanceRound)
		if p := g.plan(); !p.Time.Equal(plans[len(plans)-1].Time) {
			t.Errorf("round %d: a round ran half an interval after the last one", round)
		}
		g.clock.Step(30 * time.Second)
	}
	return plans
}

// TestBalancerDecidesAlikeAcrossAFailover: the balancer's usage history
// is in the store, so a new leader plans every round exactly as the old
// one would have — same samples, same moves, same round times. Before,
// the history lived in the leader's memory: a failover restarted it from
// one sample, and the regression fell back to its static threshold.
func TestBalancerDecidesAlikeAcrossAFailover(t *testing.T) {
	const rounds, failAt = 14, 12
	want := balanceScenario(t, rounds, 0)
	got := balanceScenario(t, rounds, failAt)
	if want[rounds-1].Samples != rounds || len(want[rounds-1].Moves) == 0 {
		t.Fatalf("the scenario decides nothing from history: samples %d, moves %d (%s)",
			want[rounds-1].Samples, len(want[rounds-1].Moves), want[rounds-1].Note)
	}
	for i := failAt - 1; i < rounds; i++ {
		if diff := cmp.Diff(want[i], got[i]); diff != "" {
			t.Errorf("round %d after a failover differs (-without failover +with):\n%s", i+1, diff)
		}
	}
}

// The history stays bounded: a deleted VM leaves no samples behind.
func TestBalanceHistoryForgetsDeletedVMs(t *testing.T) {
	set := recommend()
	set.IntervalSeconds = 60
	g := newGreenEnv(t, set)
	g.addHost("h1", 8, 32*model.GiB, nil)
	g.addHost("h2", 8, 32*model.GiB, nil)
	g.putVM("a1", "h1", 2, 50, nil)
	g.putVM("b1", "h2", 2, 50, nil)
	g.must(g.r.balanceRound)
	if got := storedHistory(t, g); len(got) != 2 {
		t.Fatalf("history of %v, want a1 and b1", got)
	}
	if _, _, err := g.st.Txn(context.Background(), nil, []store.Op{store.Delete(store.VMKey("p", "b1"))}); err != nil {
		t.Fatal(err)
	}
	g.clock.Step(time.Minute)
	g.must(g.r.balanceRound)
	if got := storedHistory(t, g); len(got) != 1 || got["p/a1"] == 0 {
		t.Fatalf("history of %v after b1 was deleted, want a1 alone", got)
	}
}

// storedHistory counts the samples stored of each VM.
func storedHistory(t *testing.T, g *greenEnv) map[string]int {
	t.Helper()
	kvs, _, err := g.st.List(context.Background(), store.BalanceHistoryPrefix)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, kv := range kvs {
		var rec model.BalanceHistory
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			t.Fatal(err)
		}
		for vm, units := range rec.VMs {
			out[vm] += len(units)
		}
	}
	return out
}

func historyRecords(t *testing.T, g *greenEnv) int {
	t.Helper()
	kvs, _, err := g.st.List(context.Background(), store.BalanceHistoryPrefix)
	if err != nil {
		t.Fatal(err)
	}
	return len(kvs)
}

// TestBalanceHistoryInShards: a round writes the history of many hosts
// in a key — 300 hosts holding VMs in 3 keys, not 300 (a record per host
// was 0.23 keys per host a minute at rest: docs/scale.md) — and a new
// term reads the records a leader before the shards stored one a host,
// plans from their samples and deletes them at its first round.
func TestBalanceHistoryInShards(t *testing.T) {
	set := recommend()
	set.IntervalSeconds = 60
	g := newGreenEnv(t, set)
	const hosts = 300
	for i := range hosts {
		h := fmt.Sprintf("h%03d", i)
		g.addHost(h, 8, 32*model.GiB, nil)
		g.putVM(fmt.Sprintf("v%03d", i), h, 2, 20, nil)
	}
	// an older leader's record of h000: seven samples of v000
	old := model.BalanceHistory{Round: g.clock.Now().Add(-time.Minute), VMs: map[string][]uint16{"p/v000": {1, 2, 3, 4, 5, 6, 7}}}
	b, _ := json.Marshal(old)
	if _, _, err := g.st.Txn(context.Background(), nil, []store.Op{store.Put(store.BalanceHistoryKey("h000"), b)}); err != nil {
		t.Fatal(err)
	}
	g.must(g.r.balanceRound)
	if n := historyRecords(t, g); n != 3 {
		t.Errorf("%d history records for %d hosts, want 3", n, hosts)
	}
	if _, err := g.st.Get(context.Background(), store.BalanceHistoryKey("h000")); err == nil {
		t.Error("the record of one host an older leader stored is still there")
	}
	got := storedHistory(t, g)
	if len(got) != hosts || got["p/v000"] != 8 || got["p/v001"] != 1 {
		t.Errorf("stored %d VMs' history, v000 %d samples (want %d, 8: the old record's seven and this round's), v001 %d (want 1)",
			len(got), got["p/v000"], hosts, got["p/v001"])
	}
}
