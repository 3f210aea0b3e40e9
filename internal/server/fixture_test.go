package server

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/imagepool"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/memstore"
)

// A small cluster for the tests that walk every route: projects alpha
// (VMs vm1, vm2, mig), beta (bvm) and empty; hosts h1 (every placed VM),
// h2 (the target of migration m1) and h3 (empty); snapshot s1 of vm1;
// token tok1; a balance plan. Host-internal detail is planted where
// agents put it — vm1's last error holds a QEMU command line and host
// paths, m1's target address carries its control key — so that a test
// can check that no tenant is ever shown any of secretMarkers.

const (
	plantedError = "qemu: QEMU exited during start-up; qemu.log: 2025-01-01T00:00:00Z starting: /usr/bin/qemu-system-x86_64 " +
		"-name guest=alpha-vm1,debug-threads=on -machine type=q35 -chardev socket,id=qmp,path=/var/lib/vpool/qemu/vms/alpha-vm1/qmp.sock " +
		"-device virtio-net-pci,id=net0,netdev=nnet0,mac=52:54:00:12:34:56,romfile=/etc/shadow " +
		`-blockdev {"driver":"file","filename":"/var/lib/vpool/pools/default/alpha-vm1/disk0.qcow2"}` + "\n" +
		"qemu-system-x86_64: -device virtio-net-pci,id=net0,romfile=/etc/shadow: failed to load romfile"
	plantedAddr = "qemu://10.0.0.5?ctl=4003&key=SECRETKEY0123456789abcdef&mig=4001&nbd=4002"
	plantedNote = "dial tcp 10.0.0.5:4001: connection refused (/var/lib/vpool/qemu/vms/alpha-mig/mig.sock)"

	memberSecret = "vpt_member_alpha"
	viewerSecret = "vpt_viewer_alpha"
	otherSecret  = "vpt_member_beta"
	scrapeSecret = "vpt_metrics"
)

// secretMarkers must never appear in what a tenant is answered.
var secretMarkers = []string{"/etc/shadow", "/usr/bin", "/var/lib/vpool", "SECRETKEY", "10.0.0.5", "-machine", "-blockdev", "qmp.sock"}

// plantedFragments are longer pieces of the planted detail that no seed
// sends: they stay leaks even after a tenant stored a marker itself.
var plantedFragments = []string{"debug-threads=on", "SECRETKEY0123456789abcdef", "alpha-mig/mig.sock", "alpha-vm1/qmp.sock"}

// seedFixture writes the cluster above through the repository.
func seedFixture(t testing.TB, s *Server) {
	t.Helper()
	ctx := context.Background()
	repo := s.repo
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{"alpha", "beta", "empty"} {
		must(repo.CreateProject(ctx, &model.Project{Meta: model.Meta{Name: p}}))
	}
	for name, pools := range map[string][]model.StoragePoolRef{"h1": {{Name: "fast", Tier: "ssd", Free: 500 * model.GiB}}, "h2": nil, "h3": nil} {
		must(repo.UpsertHost(ctx, name, func(h *model.Host, _ bool) error {
			h.State, h.Pools, h.Driver, h.Capacity = model.HostReady, pools, "sim", model.Resources{CPUs: 16, Memory: 64 * model.GiB, Disk: model.TiB}
			h.Address, h.AgentVer, h.Usage = "10.0.0.5:8441", "1.2.3", model.HostUsage{CPUPercent: 77}
			return nil
		}))
	}
	tokens := []*model.Token{
		{ID: "member-a", Hash: state.HashSecret(memberSecret), Project: "alpha", Role: model.RoleMember},
		{ID: "viewer-a", Hash: state.HashSecret(viewerSecret), Project: "alpha", Role: model.RoleViewer},
		{ID: "member-b", Hash: state.HashSecret(otherSecret), Project: "beta", Role: model.RoleMember},
		{ID: "metrics", Hash: state.HashSecret(scrapeSecret), Role: model.RoleMetrics},
		{ID: "tok1", Hash: state.HashSecret("vpt_tok1"), Project: "alpha", Role: model.RoleViewer},
	}
	for _, tok := range tokens {
		tok.CreatedAt = s.now()
		if err := repo.CreateToken(ctx, tok); err != nil {
			t.Fatal(err)
		}
	}
	place := func(project, name, host string, edit func(*model.VM)) *model.VM {
		spec := model.VMSpec{VCPUs: 1, Memory: 64 * model.MiB, Power: model.PowerRunning,
			Disks: []model.Disk{{Name: "root", Size: model.GiB}, {Name: "data", Size: model.GiB}}}
		must(repo.CreateVM(ctx, &model.VM{Meta: model.Meta{Name: name, Project: project}, Spec: spec}))
		vm, err := repo.UpdateVM(ctx, project, name, func(v *model.VM) error {
			v.Status.Host = host
			if host != "" {
				v.Status.Phase = model.PhaseRunning
			}
			if edit != nil {
				edit(v)
			}
			return nil
		})
		must(vm, err)
		return vm
	}
	vm1 := place("alpha", "vm1", "h1", func(v *model.VM) {
		v.Status.Phase, v.Status.LastError, v.Status.Message = model.PhaseFailed, plantedError, plantedNote
	})
	place("alpha", "vm2", "", nil)
	place("alpha", "mig", "h1", nil)
	place("beta", "bvm", "h1", nil)
	must(repo.CreateSnapshot(ctx, vm1, &model.Snapshot{Meta: model.Meta{Name: "s1"}}))
	must(repo.UpdateSnapshot(ctx, "alpha", "vm1", "s1", func(sn *model.Snapshot) error {
		sn.Phase, sn.Error = model.SnapshotReady, plantedNote
		return nil
	}))
	must(repo.CreateMigration(ctx, &model.Migration{Meta: model.Meta{Name: "m1", Project: "alpha"}, VM: "mig",
		Source: "h1", Target: "h2", Mode: model.MigrationLive}))
	must(repo.UpdateMigration(ctx, "m1", func(m *model.Migration) error {
		m.Phase, m.TargetAddr, m.SourceError, m.Progress.Note = model.MigrationTransferring, plantedAddr, plantedNote, plantedNote
		return nil
	}))
	for _, name := range []string{"img1", "img3"} {
		must(repo.CreateImage(ctx, &model.Image{Meta: model.Meta{Name: name}, Phase: model.ImageReady, Pool: "/var/lib/vpool/image-pool",
			Source: "http://10.0.0.5/images/" + name, Error: plantedNote,
			Files: []model.ImageFile{{Role: "disk", Format: "qcow2", Size: model.MiB, SHA256: strings.Repeat("0", 64)}}}))
	}
	seedNetworks(t, s)
	seedBalancers(t, s)
	plan, _ := json.Marshal(model.BalancePlan{Time: s.now(), Mode: model.BalanceRecommend, Policy: "vpool", Note: "nothing to do"})
	if _, _, err := s.cfg.Store.Txn(ctx, nil, []store.Op{store.Put(store.BalancePlanKey, plan)}); err != nil {
		t.Fatal(err)
	}
}

// walkPlanner answers dry runs and migration pre-checks for the walks.
type walkPlanner struct{}

func (walkPlanner) Place(context.Context, *model.VM) (api.DryRunResponse, error) {
	return api.DryRunResponse{Fits: true, Host: "h1"}, nil
}

func (walkPlanner) PlaceBatch(_ context.Context, vms []*model.VM) ([]api.DryRunResponse, error) {
	out := make([]api.DryRunResponse, len(vms))
	for i := range out {
		out[i] = api.DryRunResponse{Fits: true, Host: "h1"}
	}
	return out, nil
}

func (walkPlanner) PlanMigration(_ context.Context, vm *model.VM, to string) (string, model.MigrationMode, *model.Explanation, error) {
	if to == "" {
		to = "h2"
	}
	return to, model.MigrationLive, nil, nil
}

func (walkPlanner) PlanDrain(context.Context, string) ([]api.DrainPlanItem, []api.DrainPlanItem, error) {
	return nil, nil, nil
}

// newIdleServerWith is newIdleServer with a configuration edit.
func newIdleServerWith(t testing.TB, edit func(*Config)) *Server {
	t.Helper()
	st := memstore.New()
	t.Cleanup(func() { st.Close() })
	cfg := Config{Store: st, Listen: "127.0.0.1:0", AgentListen: "127.0.0.1:0"}
	edit(&cfg)
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.ln.Close(); s.agentLn.Close(); s.audit.Close() })
	return s
}

// newFixtureServer is an idle server (handlers called in process) over
// a fresh store holding the fixture.
func newFixtureServer(t testing.TB) *Server {
	t.Helper()
	s := newIdleServerWith(t, func(c *Config) {
		c.Placer = walkPlanner{}
		c.Clock = func() time.Time { return time.Unix(1.7e9, 0).UTC() }
		pool, err := imagepool.New(imagepool.Config{Dir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		c.Images = pool // no converter: URL imports never reach the network
	})
	seedFixture(t, s)
	return s
}
