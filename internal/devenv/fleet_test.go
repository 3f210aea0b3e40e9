package devenv_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/client"
	"github.com/vpool/vpool/internal/devenv"
	"github.com/vpool/vpool/internal/fleet"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/memstore"
	"github.com/vpool/vpool/internal/trace"
)

// Fleet hosts join over mutual TLS, beat, run the VMs placed on them and
// report their usage; at rest their heartbeats write nothing but the
// sampled usage.
func TestFleetHostsRunVMs(t *testing.T) {
	st := memstore.New()
	defer st.Close()
	cl := startCluster(t, devenv.ServerConfig{Store: st}, 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tr := &trace.Trace{Interval: 300, VMs: []trace.VM{{Name: "busy", CPU: []float64{0.5}}, {Name: "busy2", CPU: []float64{0.5}}}}
	f, err := fleet.New(fleet.Config{Servers: []string{cl.srv.AgentURL()}, Hosts: 25, Prefix: "fl", Trace: tr,
		Capacity: model.Resources{CPUs: 8, Memory: 32 * model.GiB, Disk: model.TiB}, PollWait: 5 * time.Second,
		Tokens: func(ctx context.Context) (string, error) {
			tok, err := cl.srv.NewJoinToken(ctx, time.Hour, 1000)
			return tok.Token, err
		}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	cl.eventually("25 fleet hosts ready", func() bool {
		hs, err := cl.c.ListHosts(ctx)
		ready := 0
		for _, h := range hs {
			if h.State == model.HostReady && h.Driver == "fleet" {
				ready++
			}
		}
		return err == nil && ready == 25
	})
	const n = 100
	for i := 0; i < n; i += 50 {
		if _, err := cl.c.CreateVMs(ctx, "", api.VMBatchRequest{Prefix: fmt.Sprintf("b%d", i), Count: 50,
			Spec: &model.VMSpec{VCPUs: 2, Memory: model.GiB, Disks: []model.Disk{{Size: 10 * model.GiB}}}}); err != nil {
			t.Fatal(err)
		}
	}
	cl.eventually("every VM running on a fleet host", func() bool {
		list, err := cl.c.ListVMs(ctx, client.ListVMsOptions{AllProjects: true})
		if err != nil {
			return false
		}
		running := 0
		for _, vm := range list.Items {
			if vm.Status.Phase == model.PhaseRunning {
				running++
			}
		}
		return running == n
	})
	// usage comes from the trace: 50% of 2 vCPUs per VM
	cl.eventually("usage reported", func() bool {
		vm, err := cl.c.GetVM(ctx, "", "b0-1")
		return err == nil && vm.Status.Usage.CPUPercent == 100
	})
	// at rest, a few seconds of heartbeats write nothing (but the sampled
	// usage and the controllers' own periodic records, and the audit
	// export's mark: it moves late, after the creates' records, when the
	// exporter's pass comes on a loaded machine; CI saw it once)
	wctx, stop := context.WithTimeout(ctx, 4*time.Second)
	defer stop()
	for resp := range st.Watch(wctx, store.Root, 0) {
		for _, ev := range resp.Events {
			k := ev.KV.Key
			if !strings.HasPrefix(k, store.SamplesPrefix) && !strings.HasPrefix(k, store.EnergyPrefix) && k != store.BalancePlanKey && k != store.AuditExportedKey {
				t.Errorf("a write at rest: %s", k)
			}
		}
	}
	if s := f.Stats(); s.Beats == 0 || s.BeatErrors > 0 {
		t.Errorf("fleet stats %+v", s)
	}
	cancel()
	<-done
}
