// Package hypervisortest is the acceptance suite that every
// hypervisor.Driver must pass: one body of tests (Run) driven through a
// small Harness that each driver supplies (sim in memory, qemu with a real
// guest image). It imports only the standard library, internal/model and
// internal/hypervisor; it must not import any driver.
package hypervisortest

import (
	"context"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
)

// Harness is how a driver plugs into the suite. New is required; every
// other field has a default.
type Harness struct {
	// New returns a fresh driver on a fresh state directory. Drivers made
	// by New within one test must be able to migrate to each other where
	// the driver supports migration (same registry, same machine).
	New func(t *testing.T) hypervisor.Driver
	// Reopen returns a new driver object on the same state as old, as an
	// agent restart would: VMs running under old must stay running and be
	// listed by the new driver. old must not be used afterwards.
	// Nil skips the re-attach cases.
	Reopen func(t *testing.T, old hypervisor.Driver) hypervisor.Driver
	// Config builds the config of a VM named name (unique within a test).
	// Default: DefaultConfig.
	Config func(t *testing.T, name string) hypervisor.VMConfig
	// BadConfig builds a config whose Create must fail. Default: Config
	// with zero vCPUs and zero memory.
	BadConfig func(t *testing.T, name string) hypervisor.VMConfig
	// WaitReady waits until the guest of a started VM is up (qemu waits
	// for the guest's ready marker). Default: returns at once.
	WaitReady func(t *testing.T, d hypervisor.Driver, id string)
	// Advance lets time pass for the driver: a fake clock steps, a real
	// one sleeps. Default: time.Sleep.
	Advance func(t *testing.T, d time.Duration)
	// CheckClean is called after a VM was deleted or a create failed,
	// with the id that must have left nothing behind (files, processes,
	// taps). Default: nothing beyond the List check the suite does itself.
	CheckClean func(t *testing.T, d hypervisor.Driver, id string)
	// WriteDisk has the guest of a running VM write length bytes of
	// pattern at off on a disk (qemu: qemu-io through the monitor; sim:
	// its WriteDisk). Needed by the backup cases.
	WriteDisk func(t *testing.T, d hypervisor.Driver, id, disk string, off, length int64, pattern byte)
	// StopTimeout is the graceful-stop timeout used by the suite.
	// Default 10s.
	StopTimeout time.Duration
	// Timeout bounds each case. Default 2 minutes.
	Timeout time.Duration
	// Parallel runs the cases in parallel (off by default: a real
	// hypervisor is heavy).
	Parallel bool
	// Unsupported names the optional features this driver lacks. Their
	// cases are skipped only when named here: a driver that answers
	// ErrUnsupported for a feature its harness does not name fails, so a
	// regression cannot pass as a skip.
	Unsupported []Feature
}

// Feature is an optional part of the Driver contract.
type Feature string

// Optional features.
const (
	FeatureSnapshots       Feature = "snapshots"
	FeatureMemorySnapshots Feature = "memory snapshots"
	FeatureMigration       Feature = "migration"
	FeatureKillAll         Feature = "kill all (hypervisor.Fencer)"
)

// lacks reports whether the harness declares f unsupported.
func (h *Harness) lacks(f Feature) bool {
	for _, u := range h.Unsupported {
		if u == f {
			return true
		}
	}
	return false
}

// DefaultConfig is a small VM: 1 vCPU, 128MiB, one 1GiB disk, power on.
// Its ID is "test.<name>", the form vpool uses ("<project>.<name>").
func DefaultConfig(name string) hypervisor.VMConfig {
	return hypervisor.VMConfig{
		ID:      "test." + name,
		Name:    name,
		Project: "test",
		UID:     "uid-" + name,
		Spec: model.VMSpec{
			VCPUs:  1,
			Memory: 128 * model.MiB,
			Disks:  []model.Disk{{Name: "root", Size: model.GiB}},
			Power:  model.PowerRunning,
		},
	}
}

func (h *Harness) withDefaults() Harness {
	c := *h
	if c.Config == nil {
		c.Config = func(_ *testing.T, name string) hypervisor.VMConfig { return DefaultConfig(name) }
	}
	if c.BadConfig == nil {
		cfgf := c.Config
		c.BadConfig = func(t *testing.T, name string) hypervisor.VMConfig {
			cfg := cfgf(t, name)
			cfg.Spec.VCPUs = 0
			cfg.Spec.Memory = 0
			return cfg
		}
	}
	if c.WaitReady == nil {
		c.WaitReady = func(*testing.T, hypervisor.Driver, string) {}
	}
	if c.Advance == nil {
		c.Advance = func(_ *testing.T, d time.Duration) { time.Sleep(d) }
	}
	if c.CheckClean == nil {
		c.CheckClean = func(*testing.T, hypervisor.Driver, string) {}
	}
	if c.StopTimeout == 0 {
		c.StopTimeout = 10 * time.Second
	}
	if c.Timeout == 0 {
		c.Timeout = 2 * time.Minute
	}
	return c
}

// env is the state of one case: the harness, a context bounded by the
// case timeout, and the drivers to clean up at the end.
type env struct {
	t   *testing.T
	h   Harness
	ctx context.Context
	// drivers holds the live driver of each New, updated on Reopen, so
	// cleanup deletes through the newest view.
	drivers []*hypervisor.Driver
}

func newEnv(t *testing.T, h Harness) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), h.Timeout)
	e := &env{t: t, h: h, ctx: ctx}
	t.Cleanup(func() {
		// Best-effort teardown: delete every VM left behind so a failing
		// case does not leak guests into the next one.
		cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
		defer ccancel()
		for _, dp := range e.drivers {
			d := *dp
			infos, err := d.List(cctx)
			if err != nil {
				continue
			}
			for _, in := range infos {
				_ = d.Delete(cctx, in.ID)
			}
		}
		cancel()
	})
	return e
}

// driver returns a fresh driver and a handle that Reopen updates.
func (e *env) driver() *hypervisor.Driver {
	e.t.Helper()
	d := e.h.New(e.t)
	if d == nil {
		e.t.Fatal("hypervisortest: Harness.New returned nil")
	}
	p := &d
	e.drivers = append(e.drivers, p)
	return p
}

func (e *env) reopen(p *hypervisor.Driver) {
	e.t.Helper()
	nd := e.h.Reopen(e.t, *p)
	if nd == nil {
		e.t.Fatal("hypervisortest: Harness.Reopen returned nil")
	}
	*p = nd
}

// created creates and returns a VM config on d.
func (e *env) created(d hypervisor.Driver, name string) hypervisor.VMConfig {
	e.t.Helper()
	cfg := e.h.Config(e.t, name)
	if err := d.Create(e.ctx, cfg); err != nil {
		e.t.Fatalf("Create(%s): %v", cfg.ID, err)
	}
	return cfg
}

// running creates, starts and waits for a VM.
func (e *env) running(d hypervisor.Driver, name string) hypervisor.VMConfig {
	e.t.Helper()
	cfg := e.created(d, name)
	if err := d.Start(e.ctx, cfg.ID); err != nil {
		e.t.Fatalf("Start(%s): %v", cfg.ID, err)
	}
	e.h.WaitReady(e.t, d, cfg.ID)
	return cfg
}

// info returns the listed Info of id, failing when it is absent.
func (e *env) info(d hypervisor.Driver, id string) hypervisor.Info {
	e.t.Helper()
	in, ok := e.find(d, id)
	if !ok {
		e.t.Fatalf("List: %s is not listed", id)
	}
	return in
}

func (e *env) find(d hypervisor.Driver, id string) (hypervisor.Info, bool) {
	e.t.Helper()
	infos, err := d.List(e.ctx)
	if err != nil {
		e.t.Fatalf("List: %v", err)
	}
	for _, in := range infos {
		if in.ID == id {
			return in, true
		}
	}
	return hypervisor.Info{}, false
}

func (e *env) wantState(d hypervisor.Driver, id string, want ...hypervisor.State) hypervisor.Info {
	e.t.Helper()
	in := e.info(d, id)
	for _, w := range want {
		if in.State == w {
			return in
		}
	}
	e.t.Fatalf("%s: state %q, want one of %v", id, in.State, want)
	return in
}

func (e *env) wantGone(d hypervisor.Driver, id string) {
	e.t.Helper()
	if in, ok := e.find(d, id); ok {
		e.t.Fatalf("%s still listed after it should be gone (state %q)", id, in.State)
	}
	e.h.CheckClean(e.t, d, id)
}
