package devenv_test

import (
	"context"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/controller"
	"github.com/vpool/vpool/internal/devenv"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store/memstore"
)

// TestStandbyAndWakeInProcess runs a server and two sim agents: with
// standby on, one empty host goes to standby (its agent sleeps), and a
// VM that fits only there wakes it; the VM then runs on it. The energy
// ledger and the balance plan are served meanwhile.
func TestStandbyAndWakeInProcess(t *testing.T) {
	st := memstore.New()
	t.Cleanup(func() { st.Close() })
	cl := startCluster(t, devenv.ServerConfig{Store: st, Controller: controller.Config{
		ResyncInterval: 100 * time.Millisecond, EnergyPersistInterval: 100 * time.Millisecond}}, 2)
	ctx := context.Background()
	mode, standby, idle, minOn, iv := model.BalanceRecommend, true, 0, 1, 10
	if _, err := cl.c.PatchBalanceSettings(ctx, api.BalanceSettingsPatch{Mode: &mode, Standby: &standby, IdleSeconds: &idle,
		MinHostsOn: &minOn, IntervalSeconds: &iv}); err != nil {
		t.Fatal(err)
	}
	var sleeper, awake string
	cl.eventually("one host in standby", func() bool {
		hs, err := cl.c.ListHosts(ctx)
		if err != nil {
			return false
		}
		n := 0
		for _, h := range hs {
			if h.State == model.HostStandby {
				sleeper, n = h.Name, n+1
			} else {
				awake = h.Name
			}
		}
		return n == 1
	})
	// A 12 GiB VM fits on the awake host (16 GiB); a second one does not,
	// and wakes the sleeper.
	for _, n := range []string{"a", "b"} {
		if _, err := cl.c.CreateVM(ctx, api.DefaultProject, api.VMCreateRequest{Name: n, Spec: model.VMSpec{
			VCPUs: 1, Memory: 12 * model.GiB, Disks: []model.Disk{{Name: "root", Size: model.GiB}}}}); err != nil {
			t.Fatal(err)
		}
		if n == "a" {
			if vm := cl.waitPhase("a", model.PhaseRunning); vm.Status.Host != awake {
				t.Fatalf("a runs on %s, want %s", vm.Status.Host, awake)
			}
		}
	}
	vm := cl.waitPhase("b", model.PhaseRunning)
	if vm.Status.Host != sleeper {
		t.Fatalf("b runs on %s, want the woken %s", vm.Status.Host, sleeper)
	}
	evs, err := cl.c.ListEvents(ctx, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, e := range evs {
		if e.Object == "host/"+sleeper {
			kinds[e.Kind]++
		}
	}
	if kinds[controller.EventHostStandby] != 1 || kinds[controller.EventHostWake] != 1 || kinds["host.up"] != 1 {
		t.Fatalf("events of %s: %v", sleeper, kinds)
	}
	cl.eventually("an energy report of both hosts", func() bool {
		rep, err := cl.c.Energy(ctx, false)
		return err == nil && len(rep.Hosts) == 2 && rep.TotalKWh > 0
	})
	plan, err := cl.c.BalancePlan(ctx)
	if err != nil || plan.Policy != "vpool" || plan.Mode != model.BalanceRecommend {
		t.Fatalf("plan %+v: %v", plan, err)
	}
}
