// Package meterstore runs the meter (internal/metering) on the leader and
// keeps its rollups in the store: a Source gives it every VM at one
// instant, a Grid function the intensities, and the Task books each
// sample, writes the changed rollups in batches at a bounded rate (a
// VM's at once when a new leader could not book it again from the
// store, else once per PersistVMEvery), then the mark that lets a new
// leader book the rest again, and compacts old months. Readers (the
// usage report, /metrics) list the rollups of the months they need and,
// on the leader, add what its task has not written yet (Live).
//
// Source is this package's (consumer side): StoreSource reads the VMs,
// hosts and energy ledger from the store today; the leader's cache can
// satisfy it instead without changing the meter.
//
// It imports internal/metering, internal/state, internal/store and
// internal/model; never the server or the controllers.
package meterstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/vpool/vpool/internal/metering"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
)

// VMUsage answers a VM's latest measured usage by project/name.
type VMUsage interface {
	VMUsage(key string) (model.VMUsage, time.Time, bool)
}

// Source gives the meter every VM at one instant.
type Source interface {
	Sample(ctx context.Context) (metering.Sample, error)
}

// StoreSource samples from the store: the VMs (spec and status, with the
// NIC byte counters agents report), their hosts' sites and the energy
// ledger's joules per VM.
type StoreSource struct {
	Store store.Store
	Clock func() time.Time
	// Usage, when set, answers a VM's latest measured usage (the NIC
	// byte counters): heartbeats keep it in the servers' memory and usage
	// samples, not in VM records (the server satisfies it). Without it,
	// or when it has not heard of a VM, the record's counters count.
	Usage VMUsage
}

// Sample implements Source.
func (s StoreSource) Sample(ctx context.Context) (metering.Sample, error) {
	repo := state.New(s.Store, s.Clock)
	vms, _, err := repo.ListVMs(ctx, "")
	if err != nil {
		return metering.Sample{}, err
	}
	hosts, _, err := repo.ListHosts(ctx)
	if err != nil {
		return metering.Sample{}, err
	}
	ledger, err := repo.EnergyLedger(ctx)
	if err != nil {
		return metering.Sample{}, err
	}
	sites := make(map[string]string, len(hosts))
	for _, h := range hosts {
		sites[h.Name] = h.Labels[model.SiteLabel]
	}
	out := metering.Sample{At: s.Clock(), VMs: make([]metering.VMSample, 0, len(vms))}
	for _, vm := range vms {
		if s.Usage != nil && vm.Status.Host != "" {
			if u, at, ok := s.Usage.VMUsage(vm.Key()); ok && !at.Before(vm.Status.ObservedAt) {
				vm.Status.Usage = u
			}
		}
		out.VMs = append(out.VMs, VMSampleOf(vm, sites[vm.Status.Host], ledger.VMJ[vm.Key()]))
	}
	return out, nil
}

// VMSampleOf is what the meter takes from a VM record (any Source may
// use it).
func VMSampleOf(vm *model.VM, site string, energyJ float64) metering.VMSample {
	st := vm.Status
	running := st.Host != "" && (st.Phase == model.PhaseRunning || st.Phase == model.PhasePaused)
	disk := vm.Spec.DiskSize()
	if len(st.Disks) > 0 { // as the host has them (grown by resizes)
		disk = 0
		for _, d := range st.Disks {
			disk += d.Size
		}
	}
	return metering.VMSample{Project: vm.Project, Name: vm.Name, Host: st.Host, Site: site, VCPUs: vm.Spec.VCPUs,
		Memory: vm.Spec.Memory, Disk: disk, Running: running, Placed: st.Host != "",
		NetBytes: st.Usage.NetRx + st.Usage.NetTx, EnergyJ: energyJ}
}

// Defaults of Config.
const (
	DefaultSampleEvery  = time.Minute
	DefaultPersistEvery = time.Minute
	// DefaultPersistVMEvery is how often a VM's rollup that changed only
	// by booking (its shape, host and counters going on as stored) is
	// written: at rest every running VM's rollup changes every sample,
	// and writing each every minute was 5 keys per host a minute at 10
	// VMs a host (docs/scale.md). A new leader books that time again from
	// the stored rollup and the mark.
	DefaultPersistVMEvery = 15 * time.Minute
	maxPutsPerTxn         = 100
	maxTxnBytes           = 512 << 10
)

// Config configures a Task.
type Config struct {
	Source Source
	// Grid returns the intensities in force (settings and series).
	Grid   func(ctx context.Context, st store.Store) (metering.Grid, error)
	Clock  func() time.Time
	Logger *slog.Logger
	// PersistEvery is how often the due rollups and the mark are written.
	PersistEvery time.Duration
	// PersistVMEvery is how often a rollup that changed only by booking
	// is written (DefaultPersistVMEvery); a VM that is new, deleted,
	// changed shape, host or counters, or was met after a capped gap is
	// written at the next persist. Negative: every change at every
	// persist.
	PersistVMEvery time.Duration
	// Live, when set, is where the task offers what it booked and has
	// not written yet (the leader's usage reports read it).
	Live *Live
}

// Task is the leader's metering for one term: New makes one per term.
type Task struct {
	cfg         Config
	mu          sync.Mutex // guards meter and sampled (Live reads them)
	meter       *metering.Meter
	sampled     time.Time // the last sample booked
	loaded      bool
	lastPersist time.Time
	compacted   string // the month compaction last ran for
}

// NewTask returns a term's metering task.
func NewTask(cfg Config) *Task {
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.PersistEvery <= 0 {
		cfg.PersistEvery = DefaultPersistEvery
	}
	if cfg.PersistVMEvery == 0 {
		cfg.PersistVMEvery = DefaultPersistVMEvery
	}
	if cfg.Grid == nil {
		cfg.Grid = SettingsGrid(nil)
	}
	t := &Task{cfg: cfg, meter: metering.New()}
	if cfg.Live != nil {
		cfg.Live.set(t)
	}
	return t
}

// Step books one sample, and writes and compacts when due.
func (t *Task) Step(ctx context.Context, st store.Store) error {
	now := t.cfg.Clock()
	month := metering.Month(now)
	if !t.loaded {
		if err := t.load(ctx, st, month); err != nil {
			return err
		}
	}
	sample, err := t.cfg.Source.Sample(ctx)
	if err != nil {
		return err
	}
	grid, err := t.cfg.Grid(ctx, st)
	if err != nil {
		return err
	}
	t.mu.Lock()
	t.meter.Add(sample, grid)
	t.sampled = sample.At
	t.mu.Unlock()
	// a tenth of slack: steps come every PersistEvery give or take the
	// ticker's jitter, and a step a millisecond early would skip a
	// persist (the mark then moved every other minute)
	if now.Sub(t.lastPersist) >= t.cfg.PersistEvery-t.cfg.PersistEvery/10 {
		if err := t.persist(ctx, st, t.cfg.PersistVMEvery); err != nil {
			return err
		}
		t.lastPersist = now
	}
	if t.compacted != month {
		if err := t.compact(ctx, st, month); err != nil {
			return err
		}
		t.compacted = month
		t.mu.Lock()
		t.meter.Forget(metering.MonthsBefore(month, 1))
		t.mu.Unlock()
	}
	return nil
}

// load reads the mark, then the rollups of this month and the last (in
// that order: the rollups are at least as new as the mark says).
func (t *Task) load(ctx context.Context, st store.Store, month string) error {
	mark, err := ReadMark(ctx, st)
	if err != nil {
		return err
	}
	var rs []model.UsageRollup
	for _, m := range []string{metering.MonthsBefore(month, 1), month} {
		got, err := List(ctx, st, m, "")
		if err != nil {
			return err
		}
		rs = append(rs, got...)
	}
	t.mu.Lock()
	t.meter.Load(rs, mark.At)
	t.mu.Unlock()
	t.loaded = true
	return nil
}

// Flush writes every rollup booked and not written yet, and the mark.
func (t *Task) Flush(ctx context.Context, st store.Store) error {
	return t.persist(ctx, st, -1)
}

// persist writes the due rollups (metering.Meter.Due), at most
// maxPutsPerTxn and maxTxnBytes per transaction, then the mark: every
// rollup a new leader could not book again from the store is written by
// then.
func (t *Task) persist(ctx context.Context, st store.Store, every time.Duration) error {
	t.mu.Lock()
	now, at := t.cfg.Clock(), t.sampled
	due := t.meter.Due(now, every)
	t.mu.Unlock()
	for len(due) > 0 {
		ops := make([]store.Op, 0, min(len(due), maxPutsPerTxn))
		size := 0
		for _, r := range due[:min(len(due), maxPutsPerTxn)] {
			b, err := json.Marshal(r)
			if err != nil {
				return fmt.Errorf("meterstore: encode rollup: %w", err)
			}
			if len(ops) > 0 && size+len(b) > maxTxnBytes {
				break
			}
			size += len(b)
			ops = append(ops, store.Put(store.MeteringKey(r.Month, r.Project, r.VM), b))
		}
		if _, _, err := st.Txn(ctx, nil, ops); err != nil {
			return fmt.Errorf("meterstore: write rollups: %w", err)
		}
		t.mu.Lock()
		t.meter.Clean(due[:len(ops)], now)
		t.mu.Unlock()
		due = due[len(ops):]
	}
	if at.IsZero() {
		return nil
	}
	b, _ := json.Marshal(model.MeteringMark{At: at})
	if _, _, err := st.Txn(ctx, nil, []store.Op{store.Put(store.MeteringMarkKey, b)}); err != nil {
		return fmt.Errorf("meterstore: write the mark: %w", err)
	}
	return nil
}

// ReadMark reads the metering mark (zero when none is stored).
func ReadMark(ctx context.Context, st store.Store) (model.MeteringMark, error) {
	var m model.MeteringMark
	kv, err := st.Get(ctx, store.MeteringMarkKey)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return m, nil
	case err != nil:
		return m, fmt.Errorf("meterstore: read the mark: %w", err)
	}
	if err := json.Unmarshal(kv.Value, &m); err != nil {
		return m, fmt.Errorf("meterstore: decode the mark: %w", err)
	}
	return m, nil
}

// compact bounds the stored months (metering.Compact).
func (t *Task) compact(ctx context.Context, st store.Store, month string) error {
	kvs, _, err := st.List(ctx, store.MeteringPrefix)
	if err != nil {
		return fmt.Errorf("meterstore: list rollups: %w", err)
	}
	rs := make([]model.UsageRollup, 0, len(kvs))
	for _, kv := range kvs {
		if kv.Key == store.MeteringMarkKey {
			continue
		}
		var r model.UsageRollup
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			return fmt.Errorf("meterstore: decode %s: %w", kv.Key, err)
		}
		rs = append(rs, r)
	}
	c := metering.Compact(rs, month)
	ops := make([]store.Op, 0, maxPutsPerTxn)
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		_, _, err := st.Txn(ctx, nil, ops)
		ops = ops[:0]
		if err != nil {
			return fmt.Errorf("meterstore: compact rollups: %w", err)
		}
		return nil
	}
	for _, r := range c.Delete {
		if ops = append(ops, store.Delete(store.MeteringKey(r.Month, r.Project, r.VM))); len(ops) == maxPutsPerTxn {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	for _, r := range c.Put {
		b, _ := json.Marshal(r)
		if ops = append(ops, store.Put(store.MeteringKey(r.Month, r.Project, r.VM), b)); len(ops) == maxPutsPerTxn {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if n := len(c.Put) + len(c.Delete); n > 0 {
		t.cfg.Logger.Info("metering rollups compacted", "month", month, "written", len(c.Put), "deleted", len(c.Delete))
	}
	return flush()
}

// List reads a month's rollups ("" project: every project's).
func List(ctx context.Context, st store.Store, month, project string) ([]model.UsageRollup, error) {
	prefix := store.MeteringMonthPrefix(month)
	if project != "" {
		prefix += project + "/"
	}
	kvs, _, err := st.List(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("meterstore: list rollups: %w", err)
	}
	out := make([]model.UsageRollup, 0, len(kvs))
	for _, kv := range kvs {
		var r model.UsageRollup
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			return nil, fmt.Errorf("meterstore: decode %s: %w", strings.TrimPrefix(kv.Key, store.MeteringPrefix), err)
		}
		out = append(out, r)
	}
	return out, nil
}

// Range reads the rollups of every month from..to (inclusive).
func Range(ctx context.Context, st store.Store, from, to time.Time, project string) ([]model.UsageRollup, error) {
	var out []model.UsageRollup
	last := metering.Month(to)
	first := max(metering.Month(from), metering.MonthsBefore(last, metering.Retention))
	for m := first; m <= last; m = nextMonth(m) {
		rs, err := List(ctx, st, m, project)
		if err != nil {
			return nil, err
		}
		out = append(out, rs...)
	}
	return out, nil
}

func nextMonth(m string) string { return metering.MonthsBefore(m, -1) }
