package cli

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// syncBuffer is a bytes.Buffer safe for a writer and a concurrent reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type result struct {
	stdout, stderr string
	code           int
}

// invocation runs the CLI in-process with a fake environment: the given
// variables, a config directory in a temp dir, the fixed clock and fast
// polling.
type invocation struct {
	env       map[string]string
	configDir string
	ctx       context.Context
	stdout    *syncBuffer
}

func (in invocation) run(t *testing.T, args ...string) result {
	t.Helper()
	dir := in.configDir
	if dir == "" {
		dir = t.TempDir()
	}
	e := env{
		lookup:    func(k string) (string, bool) { v, ok := in.env[k]; return v, ok },
		configDir: func() (string, error) { return dir, nil },
		now:       func() time.Time { return now },
		pollMin:   time.Millisecond,
		pollMax:   2 * time.Millisecond,
	}
	root := newRoot("1.2.3", e)
	out := in.stdout
	if out == nil {
		out = &syncBuffer{}
	}
	var errb syncBuffer
	root.SetOut(out)
	root.SetErr(&errb)
	ctx := in.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	code := run(ctx, root, args)
	return result{stdout: out.String(), stderr: errb.String(), code: code}
}

// cli runs the CLI against the fake server with a good token.
func (f *fakeServer) cli(t *testing.T, args ...string) result {
	t.Helper()
	return invocation{}.run(t, append([]string{"--addr", f.srv.URL, "--token", goodToken}, args...)...)
}

// golden compares got with testdata/name.golden (-update rewrites it).
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if string(want) != got {
		t.Errorf("output differs from %s (run go test -update after checking):\n--- want\n%s--- got\n%s", path, want, got)
	}
}

// seed fills the fake with a small cluster: two hosts, three VMs in two
// projects (one with a placement explanation), tokens and events.
func seed(f *fakeServer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hosts["h1"] = &model.Host{Meta: model.Meta{Name: "h1", CreatedAt: now.Add(-48 * time.Hour)},
		Labels: map[string]string{"zone": "a", "ssd": "true"}, State: model.HostReady, Driver: "sim", Accel: "sim",
		Capacity:  model.Resources{CPUs: 16, Memory: 64 * model.GiB, Disk: 1024 * model.GiB},
		Allocated: model.Resources{CPUs: 2, Memory: model.GiB, Disk: 10 * model.GiB}, VMs: 1,
		Usage:    model.HostUsage{CPUPercent: 12.5, MemoryUsed: 3 * model.GiB, DiskUsed: 20 * model.GiB},
		LastSeen: now.Add(-3 * time.Second), Address: "10.0.0.1", AgentVer: "1.2.3",
		Pools: []model.StoragePoolRef{{Name: "local", Tier: "ssd", Free: 900 * model.GiB}}}
	f.hosts["h2"] = &model.Host{Meta: model.Meta{Name: "h2", CreatedAt: now.Add(-48 * time.Hour)},
		State: model.HostMaintenance, Cordoned: true, Driver: "qemu", Accel: "kvm",
		Capacity: model.Resources{CPUs: 8, Memory: 32 * model.GiB, Disk: 512 * model.GiB},
		Ratios:   model.Ratios{CPU: 2}, LastSeen: now.Add(-90 * time.Minute), Balancers: 2}
	started := now.Add(-4 * time.Minute)
	f.addVM(model.VM{Meta: model.Meta{Name: "web1", UID: "uid-web1"},
		Spec: model.VMSpec{VCPUs: 2, Memory: model.GiB, Power: model.PowerRunning, Image: "debian-12",
			Disks:      []model.Disk{{Name: "root", Size: 10 * model.GiB}, {Name: "data", Size: 50 * model.GiB, Tier: "ssd"}},
			Labels:     map[string]string{"app": "web"},
			Placement:  model.Placement{RequiredLabels: map[string]string{"zone": "a"}, AffinityGroup: "web", Affinity: model.AntiAffinityHard},
			Controls:   model.Controls{CPUShares: 2048, CPUReservation: 500, MemoryLimit: 2 * model.GiB},
			HAPriority: 100, Watchdog: &model.Watchdog{Model: model.WatchdogI6300ESB, Action: model.WatchdogReset}},
		Status: model.VMStatus{Phase: model.PhaseRunning, Host: "h1", StartedAt: &started, Addresses: []string{"10.1.0.5"},
			Watchdog: &model.WatchdogFiring{At: now.Add(-2 * time.Minute), Action: model.WatchdogReset, Count: 2},
			Usage:    model.VMUsage{CPUPercent: 37.5, Memory: 700 * model.MiB, CPUTimeNs: 1e9},
			Explanation: &model.Explanation{Time: now.Add(-5 * time.Minute), Hosts: 3, Chosen: "h1",
				Summary: "placed on h1: best of 2 feasible hosts",
				Filters: []model.FilterOut{{Filter: "labels", Rejected: 1, Reason: "missing zone=a"}},
				Candidates: []model.Candidate{
					{Host: "h1", Score: 0.82, Parts: map[string]float64{"binpack": 0.7, "balance": 0.12}},
					{Host: "h3", Score: 0.41, Parts: map[string]float64{"binpack": 0.3, "balance": 0.11}}}}}})
	f.addVM(model.VM{Meta: model.Meta{Name: "db", CreatedAt: now.Add(-30 * time.Hour)},
		Spec:   model.VMSpec{VCPUs: 4, Memory: 8 * model.GiB, Power: model.PowerStopped, Disks: []model.Disk{{Name: "root", Size: 100 * model.GiB}}},
		Status: model.VMStatus{Phase: model.PhaseStopped, Host: "h1"}})
	f.addVM(model.VM{Meta: model.Meta{Name: "batch1", Project: "team-a", CreatedAt: now.Add(-90 * time.Second)},
		Spec:   model.VMSpec{VCPUs: 1, Memory: 512 * model.MiB, Power: model.PowerRunning},
		Status: model.VMStatus{Phase: model.PhaseFailed, LastError: "no host fits"}})
	p := apiProject("team-a", "the A team", model.Quota{VCPUs: 32, Memory: 64 * model.GiB, VMs: 10},
		model.Usage{VCPUs: 1, Memory: 512 * model.MiB, VMs: 1})
	f.projects["team-a"] = &p
	f.projects["default"].Usage = model.Usage{VCPUs: 6, Memory: 9 * model.GiB, Disk: 160 * model.GiB, VMs: 2}
	f.tokens = []model.Token{
		{ID: "tok-admin", Role: model.RoleAdmin, CreatedAt: now.Add(-72 * time.Hour)},
		{ID: "tok-a", Project: "team-a", Role: model.RoleMember, CreatedAt: now.Add(-time.Hour), ExpiresAt: now.Add(23 * time.Hour)},
		{ID: "tok-join", Role: model.RoleAgent, Purpose: "join", CreatedAt: now.Add(-10 * time.Minute), ExpiresAt: now.Add(50 * time.Minute)},
	}
	f.dryRun = api.DryRunResponse{Host: "h1", Fits: true, Explanation: &model.Explanation{Hosts: 2, Chosen: "h1",
		Summary:    "h1 scores best of 2 feasible hosts",
		Candidates: []model.Candidate{{Host: "h1", Score: 0.9, Parts: map[string]float64{"binpack": 0.9}}, {Host: "h2", Score: 0.5}}}}
	f.events = []model.Event{
		{ID: 10, Time: now.Add(-20 * time.Minute), Kind: "vm.created", Object: "vm/default/web1", Project: "default", Message: "created by admin"},
		{ID: 11, Time: now.Add(-5 * time.Minute), Kind: "vm.phase", Object: "vm/default/web1", Project: "default", From: "pending", To: "scheduling"},
		{ID: 12, Time: now.Add(-4 * time.Minute), Kind: "vm.phase", Object: "vm/default/web1", Project: "default", From: "creating", To: "running", Message: "on h1"},
		{ID: 13, Time: now.Add(-time.Minute), Kind: "host.down", Object: "host/h3", Message: "lease expired"},
	}
}

func apiProject(name, desc string, q model.Quota, u model.Usage) api.ProjectView {
	return api.ProjectView{Project: model.Project{Meta: model.Meta{Name: name, CreatedAt: now.Add(-24 * time.Hour)}, Description: desc, Quota: q}, Usage: u}
}

// lines splits output into lines without the trailing empty one.
func lines(s string) []string {
	return strings.Split(strings.TrimRight(s, "\n"), "\n")
}
