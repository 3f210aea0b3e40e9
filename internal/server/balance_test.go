package server

import (
	"context"
	"encoding/json"
	"math"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/memstore"
)

func TestBalanceSettingsAPI(t *testing.T) {
	ts := startServer(t, nil)
	admin := ts.AdminToken()
	var set model.BalanceSettings
	ts.mustCall(200, "GET", "/api/v1/cluster/balance", admin, nil, &set)
	if set != model.DefaultBalanceSettings() {
		t.Fatalf("defaults = %+v", set)
	}
	mode, iv, pue := model.BalanceAutomatic, 600, 1.2
	ts.mustCall(200, "PATCH", "/api/v1/cluster/balance", admin, api.BalanceSettingsPatch{Mode: &mode, IntervalSeconds: &iv, PUE: &pue}, &set)
	if set.Mode != mode || set.IntervalSeconds != 600 || set.Energy.PUE != 1.2 || set.Policy != "vpool" {
		t.Fatalf("after patch = %+v", set)
	}
	ts.mustCall(200, "GET", "/api/v1/cluster/balance", admin, nil, &set)
	if set.Mode != mode {
		t.Fatal("patch not stored")
	}
	bad := "nope-nope"
	badMode := model.BalanceMode("sometimes")
	badPUE := 0.5
	for name, tc := range map[string]struct {
		p     api.BalanceSettingsPatch
		field string
	}{
		"unknown policy": {api.BalanceSettingsPatch{Policy: &bad}, "policy"},
		"unknown mode":   {api.BalanceSettingsPatch{Mode: &badMode}, "mode"},
		"pue below 1":    {api.BalanceSettingsPatch{PUE: &badPUE}, "energy.pue"},
	} {
		code, e := ts.call("PATCH", "/api/v1/cluster/balance", admin, tc.p, nil)
		if code != 400 || e.Field != tc.field {
			t.Errorf("%s: %d %+v, want 400 on %s", name, code, e, tc.field)
		}
	}
	member := ts.tokenFor("default", model.RoleMember)
	if code, _ := ts.call("PATCH", "/api/v1/cluster/balance", member, api.BalanceSettingsPatch{PUE: &pue}, nil); code != 403 {
		t.Errorf("member patch = %d, want 403", code)
	}
}

func TestBalancePlanAPI(t *testing.T) {
	ts := startServer(t, nil)
	admin := ts.AdminToken()
	if code, e := ts.call("GET", "/api/v1/balance/plan", admin, nil, nil); code != 404 || e.Code != api.CodeNotFound {
		t.Fatalf("no plan yet = %d %+v", code, e)
	}
	plan := model.BalancePlan{Time: time.Unix(1e9, 0).UTC(), Mode: model.BalanceRecommend, Policy: "vpool", Note: "1 overloaded host",
		Moves: []model.BalanceMove{{VM: "default/a", From: "h1", To: "h2", Reason: "overload", Detail: "h1 is overloaded"}}}
	b, _ := json.Marshal(plan)
	if _, _, err := ts.st.Txn(context.Background(), nil, []store.Op{store.Put(store.BalancePlanKey, b)}); err != nil {
		t.Fatal(err)
	}
	var got model.BalancePlan
	ts.mustCall(200, "GET", "/api/v1/balance/plan", admin, nil, &got)
	if len(got.Moves) != 1 || got.Moves[0].Detail != "h1 is overloaded" {
		t.Fatalf("plan = %+v", got)
	}
}

func TestEnergyAPI(t *testing.T) {
	ts := startServer(t, nil)
	admin := ts.AdminToken()
	var rep api.EnergyReport
	ts.mustCall(200, "GET", "/api/v1/cluster/energy", admin, nil, &rep)
	if rep.TotalKWh != 0 || len(rep.Hosts) != 0 {
		t.Fatalf("empty report = %+v", rep)
	}
	// 1 kWh on h1 (all to default/a), 0.5 kWh on h2 of which 0.5 to other/b.
	rec := model.EnergyLedger{Since: time.Unix(1e9, 0).UTC(), At: time.Unix(1e9+3600, 0).UTC(), TotalJ: 5.4e6,
		HostJ: map[string]float64{"h1": 3.6e6, "h2": 1.8e6}, VMJ: map[string]float64{"default/a": 3.6e6, "other/b": 1.8e6},
		ProjectJ: map[string]float64{"default": 3.6e6, "other": 1.8e6},
		Hosts:    map[string]model.EnergyHost{"h1": {State: model.HostReady, PowerModel: "ml110g5", Watts: 116}, "h2": {State: model.HostStandby, Watts: 5}}}
	b, _ := json.Marshal(rec)
	if _, _, err := ts.st.Txn(context.Background(), nil, []store.Op{store.Put(store.EnergyKey, b)}); err != nil {
		t.Fatal(err)
	}
	ts.mustCall(200, "GET", "/api/v1/cluster/energy?vms=true", admin, nil, &rep)
	// Defaults: 400 g/kWh, PUE 1.5 → 1.5 kWh IT = 2.25 kWh facility = 900 g.
	if math.Abs(rep.TotalKWh-1.5) > 1e-9 || math.Abs(rep.FacilityKWh-2.25) > 1e-9 || math.Abs(rep.CO2g-900) > 1e-6 {
		t.Fatalf("totals = %+v", rep)
	}
	if len(rep.Hosts) != 2 || rep.Hosts[0].Watts != 116 || rep.Hosts[1].State != model.HostStandby || rep.Watts != 121 {
		t.Fatalf("hosts = %+v", rep.Hosts)
	}
	if len(rep.Projects) != 2 || len(rep.VMs) != 2 || math.Abs(rep.Projects[0].CO2g-600) > 1e-6 {
		t.Fatalf("projects %+v vms %+v", rep.Projects, rep.VMs)
	}
	// A project member sees hosts but only its own project and VMs.
	member := ts.tokenFor("default", model.RoleMember)
	ts.mustCall(200, "GET", "/api/v1/cluster/energy?vms=true", member, nil, &rep)
	if len(rep.Projects) != 1 || rep.Projects[0].Name != "default" || len(rep.VMs) != 1 || len(rep.Hosts) != 2 {
		t.Fatalf("member view: projects %+v vms %+v", rep.Projects, rep.VMs)
	}
}

func TestAgentPowerProtocol(t *testing.T) {
	ts := startServer(t, nil)
	a := joinAgent(t, ts, "h1")
	a.beat()
	var st api.HostPowerState
	if code := a.do("GET", "/agent/v1/power", nil, &st); code != 200 || st.Desired != model.HostPowerOn {
		t.Fatalf("power = %d %+v", code, st)
	}
	// The power controller puts the host to standby: heartbeats say so
	// and the host stays in standby.
	if _, err := ts.repo.UpdateHost(context.Background(), "h1", func(h *model.Host) error {
		h.State, h.Power = model.HostStandby, &model.HostPower{Desired: model.HostPowerStandby}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var res api.HeartbeatResponse
	hb := api.Heartbeat{Host: "h1", Capacity: model.Resources{CPUs: 8, Memory: 16 * model.GiB}, Driver: "sim"}
	if code := a.do("PUT", "/agent/v1/heartbeat", hb, &res); code != 200 || res.Power != model.HostPowerStandby {
		t.Fatalf("heartbeat = %d %+v", code, res)
	}
	if code := a.do("GET", "/agent/v1/power", nil, &st); code != 200 || st.Desired != model.HostPowerStandby {
		t.Fatalf("power = %d %+v", code, st)
	}
	h, _ := ts.repo.GetHost(context.Background(), "h1")
	if h.State != model.HostStandby {
		t.Fatalf("state = %s after a heartbeat, want standby", h.State)
	}
	// Asked to wake: the answer flips.
	if _, err := ts.repo.UpdateHost(context.Background(), "h1", func(h *model.Host) error {
		h.Power = &model.HostPower{Desired: model.HostPowerOn}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if code := a.do("GET", "/agent/v1/power", nil, &st); code != 200 || st.Desired != model.HostPowerOn {
		t.Fatalf("power = %d %+v", code, st)
	}
}

// TestHistoryWattsFromEnergyShards: the history's samples take each
// host's power from the energy ledger, whose host records are stored in
// shards of many hosts (before: a key per host, which the sampler read).
func TestHistoryWattsFromEnergyShards(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	if _, err := ts.repo.UpsertHost(ctx, "h1", func(h *model.Host, _ bool) error {
		h.State, h.Capacity = model.HostReady, model.Resources{CPUs: 4, Memory: 4 * model.GiB}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	rec := state.EnergyRecords{Meta: model.EnergyMeta{TotalJ: 1},
		Hosts: map[string]model.EnergyHostRecord{"h1": {Joules: 1, EnergyHost: model.EnergyHost{State: model.HostReady, Watts: 116}}}}
	if _, err := ts.repo.WriteEnergy(ctx, rec, nil); err != nil {
		t.Fatal(err)
	}
	if kvs, _, _ := ts.st.List(ctx, store.EnergyShardsPrefix); len(kvs) != 1 {
		t.Fatalf("%d shards stored, want 1", len(kvs))
	}
	smp, err := ts.sampleHosts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(smp.Hosts) != 1 || smp.Hosts[0].Watts != 116 {
		t.Fatalf("history sample %+v, want h1 at 116 W", smp.Hosts)
	}
}

// energyListCounter counts the listings of the energy ledger.
type energyListCounter struct {
	store.Store
	lists atomic.Int64
}

func (c *energyListCounter) List(ctx context.Context, prefix string) ([]store.KV, int64, error) {
	if strings.HasPrefix(prefix, store.EnergyPrefix) {
		c.lists.Add(1)
	}
	return c.Store.List(ctx, prefix)
}

// TestHistoryReadsTheLedgerOncePerPersist: the history samples the hosts
// every 10 s and takes their power from the energy ledger, which the
// leader persists every minute (header last): a sample reads and decodes
// the ledger only when its header moved (every sample read all of it,
// every VM's energy, before), and sees each persist's figures.
func TestHistoryReadsTheLedgerOncePerPersist(t *testing.T) {
	ms := memstore.New()
	t.Cleanup(func() { ms.Close() })
	st := &energyListCounter{Store: ms}
	ts := startServer(t, st)
	ctx := context.Background()
	if _, err := ts.repo.UpsertHost(ctx, "h1", func(h *model.Host, _ bool) error {
		h.State, h.Capacity = model.HostReady, model.Resources{CPUs: 4, Memory: 4 * model.GiB}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	persist := func(w float64, written map[string][]byte) map[string][]byte {
		rec := state.EnergyRecords{Meta: model.EnergyMeta{TotalJ: w, At: time.Now()},
			Hosts: map[string]model.EnergyHostRecord{"h1": {Joules: w, EnergyHost: model.EnergyHost{State: model.HostReady, Watts: w},
				VMs: map[string]float64{"p/v1": w}}}}
		out, err := ts.repo.WriteEnergy(ctx, rec, written)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	sample := func(want float64) {
		t.Helper()
		smp, err := ts.sampleHosts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(smp.Hosts) != 1 || smp.Hosts[0].Watts != want {
			t.Fatalf("history sample %+v, want h1 at %v W", smp.Hosts, want)
		}
	}
	written := persist(116, nil)
	before := st.lists.Load()
	for range 6 {
		sample(116)
	}
	if n := st.lists.Load() - before; n != 1 {
		t.Fatalf("six samples read the ledger %d times between two persists, want once", n)
	}
	persist(120, written)
	sample(120)
	sample(120)
	if n := st.lists.Load() - before; n != 2 {
		t.Fatalf("the ledger read %d times over two persists, want twice", n)
	}
}
