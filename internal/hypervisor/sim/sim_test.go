package sim_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/hypervisor/hypervisortest"
	"github.com/vpool/vpool/internal/hypervisor/sim"
	"github.com/vpool/vpool/internal/model"
)

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// harness runs the acceptance suite on sim hosts sharing one registry and
// one fake clock per test; persist makes Reopen go through the state file
// (a new process) instead of a new view of the same Host.
func harness(persist bool) hypervisortest.Harness {
	clock := sim.NewFakeClock(epoch)
	reg := sim.NewRegistry()
	var n atomic.Int64
	newHost := func(t *testing.T, name, file string) *sim.Host {
		h, err := sim.NewHost(sim.Config{Name: name, Clock: clock, Registry: reg, StateFile: file})
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	return hypervisortest.Harness{
		New: func(t *testing.T) hypervisor.Driver {
			name := fmt.Sprintf("h%d", n.Add(1))
			file := ""
			if persist {
				file = filepath.Join(t.TempDir(), "sim.json")
			}
			return newHost(t, name, file).Driver()
		},
		Reopen: func(t *testing.T, old hypervisor.Driver) hypervisor.Driver {
			h := old.(*sim.Driver).Host()
			if !persist {
				return sim.New(h)
			}
			return newHost(t, h.Name(), stateFileOf(t, h)).Driver()
		},
		Advance: func(_ *testing.T, d time.Duration) { clock.Advance(d) },
		WriteDisk: func(t *testing.T, d hypervisor.Driver, id, disk string, off, n int64, pat byte) {
			if err := d.(*sim.Driver).WriteDisk(context.Background(), id, disk, off, bytes.Repeat([]byte{pat}, int(n))); err != nil {
				t.Fatal(err)
			}
		},
	}
}

// stateFileOf finds the state file of a host made by harness(true).
func stateFileOf(t *testing.T, h *sim.Host) string {
	t.Helper()
	f := h.StateFile()
	if f == "" {
		t.Fatal("host has no state file")
	}
	return f
}

func TestAcceptance(t *testing.T) {
	hypervisortest.Run(t, harness(false))
}

func TestAcceptancePersistent(t *testing.T) {
	hypervisortest.Run(t, harness(true))
}

func cfg(name string, vcpus int, mem, disk model.Bytes) hypervisor.VMConfig {
	c := hypervisortest.DefaultConfig(name)
	c.Spec.VCPUs, c.Spec.Memory = vcpus, mem
	c.Spec.Disks = []model.Disk{{Name: "root", Size: disk}}
	return c
}

func TestCapacity(t *testing.T) {
	ctx := context.Background()
	h := sim.MustHost(sim.Config{CPUs: 2, CPURatio: 2, Memory: 4 * model.GiB, Disk: 100 * model.GiB})
	d := h.Driver()
	tests := []struct {
		name    string
		vm      hypervisor.VMConfig
		create  error
		start   error
		running bool
	}{
		{"fits", cfg("a", 2, 2*model.GiB, 40*model.GiB), nil, nil, true},
		{"disk-full", cfg("b", 1, model.GiB, 70*model.GiB), hypervisor.ErrNoCapacity, nil, false},
		{"memory-full", cfg("c", 1, 3*model.GiB, 10*model.GiB), nil, hypervisor.ErrNoCapacity, false},
		{"cpu-full", cfg("d", 3, model.GiB, 10*model.GiB), nil, hypervisor.ErrNoCapacity, false},
		{"last-fit", cfg("e", 2, 2*model.GiB, 10*model.GiB), nil, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := d.Create(ctx, tt.vm)
			if !errors.Is(err, tt.create) || (tt.create == nil && err != nil) {
				t.Fatalf("Create: %v, want %v", err, tt.create)
			}
			if err != nil {
				return
			}
			err = d.Start(ctx, tt.vm.ID)
			if !errors.Is(err, tt.start) || (tt.start == nil && err != nil) {
				t.Fatalf("Start: %v, want %v", err, tt.start)
			}
		})
	}
	got := h.Allocated()
	want := model.Resources{CPUs: 4, Memory: 4 * model.GiB, Disk: 70 * model.GiB}
	if got != want {
		t.Fatalf("Allocated = %+v, want %+v", got, want)
	}
	// A live grow beyond capacity is refused and changes nothing.
	if err := d.Resize(ctx, "test.a", 2, 3*model.GiB); !errors.Is(err, hypervisor.ErrNoCapacity) {
		t.Fatalf("Resize beyond capacity: %v", err)
	}
	if err := d.Resize(ctx, "test.a", 1, model.GiB); !errors.Is(err, hypervisor.ErrNeedsRestart) {
		t.Fatalf("live shrink: %v, want ErrNeedsRestart", err)
	}
}

func TestCPUTimeFollowsClock(t *testing.T) {
	ctx := context.Background()
	clock := sim.NewFakeClock(epoch)
	h := sim.MustHost(sim.Config{Clock: clock, Usage: sim.ConstantUsage(0.5)})
	d := h.Driver()
	c := cfg("cpu", 4, model.GiB, model.GiB)
	if err := d.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name    string
		do      func()
		advance time.Duration
		wantNs  int64
	}{
		{"running 10s at 50% of 4 vCPUs", nil, 10 * time.Second, 20e9},
		{"paused does not count", func() { _ = d.Pause(ctx, c.ID) }, 10 * time.Second, 20e9},
		{"resumed", func() { _ = d.Resume(ctx, c.ID) }, time.Second, 22e9},
		{"limit to 0.5 CPU", func() { _ = d.SetControls(ctx, c.ID, model.Controls{CPULimit: 500}) }, 4 * time.Second, 24e9},
		{"stopped does not count", func() { _ = d.Stop(ctx, c.ID, time.Second) }, time.Hour, 24e9},
	}
	for _, s := range steps {
		if s.do != nil {
			s.do()
		}
		clock.Advance(s.advance)
		st, err := d.Stats(ctx, c.ID)
		if err != nil {
			t.Fatal(err)
		}
		if st.CPUTimeNs != s.wantNs {
			t.Fatalf("%s: CPU time %d, want %d", s.name, st.CPUTimeNs, s.wantNs)
		}
	}
}

func TestDelaysWaitOnClock(t *testing.T) {
	ctx := context.Background()
	clock := sim.NewFakeClock(epoch)
	h := sim.MustHost(sim.Config{Clock: clock, BootDelay: 5 * time.Second})
	d := h.Driver()
	c := cfg("slow", 1, model.GiB, model.GiB)
	if err := d.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.Start(ctx, c.ID) }()
	for clock.Waiters() == 0 {
		time.Sleep(time.Millisecond)
	}
	if in, _ := d.List(ctx); in[0].State != hypervisor.StateStopped {
		t.Fatalf("state while booting = %s, want stopped", in[0].State)
	}
	clock.Advance(5 * time.Second)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if in, _ := d.List(ctx); in[0].State != hypervisor.StateRunning || !in[0].StartedAt.Equal(epoch.Add(5*time.Second)) {
		t.Fatalf("after boot: %+v", in[0])
	}
}

func TestCrashAndFaults(t *testing.T) {
	ctx := context.Background()
	boom := errors.New("boom")
	h := sim.MustHost(sim.Config{Fail: func(op, id string) error {
		if op == "start" && id == "test.bad" {
			return boom
		}
		return nil
	}})
	d := h.Driver()
	for _, n := range []string{"ok", "bad"} {
		if err := d.Create(ctx, cfg(n, 1, model.GiB, model.GiB)); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Start(ctx, "test.bad"); !errors.Is(err, boom) {
		t.Fatalf("injected fault: %v", err)
	}
	if err := d.Start(ctx, "test.ok"); err != nil {
		t.Fatal(err)
	}
	if err := h.Crash("test.ok"); err != nil {
		t.Fatal(err)
	}
	in, _ := d.List(ctx)
	if in[1].ID != "test.ok" || in[1].State != hypervisor.StateCrashed {
		t.Fatalf("after crash: %+v", in)
	}
}

// TestColdMigration moves stopped and crashed VMs between two hosts and
// checks the failures: an injected fault, a cancelled context and the
// target dropping its copy mid-copy leave the VM on the source as it was.
func TestColdMigration(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name       string
		crash      bool   // run and crash the VM first (else: never started)
		fail       string // the source's op that fails
		cancel     bool   // ctx cancelled during the copy
		dropTarget bool   // the target deletes its copy during the copy
		wantErr    error  // nil: success; else errors.Is (or any error when ErrNotFound is not expected)
	}{
		{name: "stopped"},
		{name: "crashed", crash: true},
		{name: "fault", fail: "migrate-out", wantErr: boom},
		{name: "cancelled", cancel: true, wantErr: context.Canceled},
		{name: "target-gone", dropTarget: true, wantErr: errAny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			clock := sim.NewFakeClock(epoch)
			reg := sim.NewRegistry()
			fail := func(op, id string) error {
				if op == tt.fail {
					return boom
				}
				return nil
			}
			src := sim.MustHost(sim.Config{Name: "src", Clock: clock, Registry: reg, MigrateDelay: 4 * time.Second, Fail: fail}).Driver()
			dst := sim.MustHost(sim.Config{Name: "dst", Clock: clock, Registry: reg}).Driver()
			c := cfg("cold", 2, model.GiB, 10*model.GiB)
			mustSim(t, src.Create(ctx, c))
			want := hypervisor.StateStopped
			if tt.crash {
				mustSim(t, src.Start(ctx, c.ID))
				mustSim(t, src.Host().Crash(c.ID))
				want = hypervisor.StateCrashed
			}
			addr, err := dst.MigrateIn(ctx, c)
			mustSim(t, err)
			var stages []string
			type out struct {
				res hypervisor.MigrationResult
				err error
			}
			done := make(chan out, 1)
			go func() {
				res, err := src.MigrateOut(ctx, c.ID, addr, hypervisor.MigrateOptions{}, func(p hypervisor.MigrationProgress) {
					stages = append(stages, p.Stage)
				})
				done <- out{res, err}
			}()
			if tt.fail == "" { // the copy waits on the clock (1 s)
				for clock.Waiters() == 0 {
					time.Sleep(time.Millisecond)
				}
				switch {
				case tt.cancel:
					cancel()
				case tt.dropTarget:
					mustSim(t, dst.Delete(context.Background(), c.ID))
				}
				clock.Advance(time.Second)
			}
			o := <-done
			bg := context.Background()
			if tt.wantErr != nil {
				if o.err == nil || (tt.wantErr != errAny && !errors.Is(o.err, tt.wantErr)) {
					t.Fatalf("MigrateOut: %v, want %v", o.err, tt.wantErr)
				}
				if in := listed(t, src, c.ID); in == nil || in.State != want {
					t.Fatalf("source after the failure: %+v, want %s", in, want)
				}
				if err := dst.Delete(bg, c.ID); err != nil && !errors.Is(err, hypervisor.ErrNotFound) {
					t.Fatalf("Delete on the target: %v", err)
				}
				if in := listed(t, dst, c.ID); in != nil {
					t.Fatalf("target lists %+v after the failure", in)
				}
				return
			}
			mustSim(t, o.err)
			if !o.res.Cold || o.res.Downtime != 0 || o.res.Bytes != int64(10*model.GiB) || o.res.DiskBytes != o.res.Bytes ||
				o.res.Total <= 0 || o.res.Stage != hypervisor.MigrationStageDisks {
				t.Fatalf("result %+v", o.res)
			}
			if len(stages) == 0 || stages[0] != hypervisor.MigrationStageDisks {
				t.Fatalf("progress stages %v", stages)
			}
			if in := listed(t, src, c.ID); in != nil {
				t.Fatalf("source still lists %+v", in)
			}
			in := listed(t, dst, c.ID)
			if in == nil || in.State != hypervisor.StateStopped || in.Pid != 0 {
				t.Fatalf("target lists %+v, want stopped", in)
			}
			if got := dst.Host().Allocated(); got.CPUs != 0 || got.Memory != 0 {
				t.Fatalf("target holds %+v for a stopped VM", got)
			}
			mustSim(t, dst.Start(bg, c.ID))
		})
	}
}

// errAny in a table means "some error".
var errAny = errors.New("any error")

func mustSim(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// listed returns the Info of id on d, nil when it is not listed.
func listed(t *testing.T, d *sim.Driver, id string) *hypervisor.Info {
	t.Helper()
	infos, err := d.List(context.Background())
	mustSim(t, err)
	for _, in := range infos {
		if in.ID == id {
			return &in
		}
	}
	return nil
}

// BenchmarkManyHosts measures the cost of a simulated host with 20
// running VMs: memory per host and a Stats+List round over all of them.
func BenchmarkManyHosts(b *testing.B) {
	ctx := context.Background()
	const hosts, perHost = 500, 20
	var ds []*sim.Driver
	for i := 0; i < hosts; i++ {
		d := sim.MustHost(sim.Config{Name: fmt.Sprintf("h%d", i)}).Driver()
		for j := 0; j < perHost; j++ {
			c := cfg(fmt.Sprintf("vm%d", j), 1, 512*model.MiB, 10*model.GiB)
			if err := d.Create(ctx, c); err != nil {
				b.Fatal(err)
			}
			if err := d.Start(ctx, c.ID); err != nil {
				b.Fatal(err)
			}
		}
		ds = append(ds, d)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, d := range ds {
			infos, _ := d.List(ctx)
			for _, in := range infos {
				if _, err := d.Stats(ctx, in.ID); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*hosts*perHost), "ns/vm-observation")
}
