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
	"sort"
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
	// PerShard bounds the VMs of a shard of rollups
	// (metering.DefaultPerShard when zero).
	PerShard int
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
	if cfg.PerShard > 0 {
		t.meter.PerShard = cfg.PerShard
	}
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
	var shards []model.UsageRollupShard
	var legacy []model.UsageRollup
	for _, m := range []string{metering.MonthsBefore(month, 1), month} {
		got, err := read(ctx, st, store.MeteringMonthPrefix(m))
		if err != nil {
			return err
		}
		shards, legacy = append(shards, got.shards...), append(legacy, got.legacy...)
	}
	t.mu.Lock()
	t.meter.LoadShards(shards, legacy, mark.At)
	t.mu.Unlock()
	t.loaded = true
	return nil
}

// Flush writes every rollup booked and not written yet, and the mark.
func (t *Task) Flush(ctx context.Context, st store.Store) error {
	return t.persist(ctx, st, -1)
}

// persist writes the due shards (metering.Meter.Due) whole, with the
// deletes of the records of their VMs that older leaders stored one a
// VM, at most maxPutsPerTxn operations and maxTxnBytes per transaction,
// then the mark: every rollup a new leader could not book again from the
// store is written by then.
func (t *Task) persist(ctx context.Context, st store.Store, every time.Duration) error {
	t.mu.Lock()
	now, at := t.cfg.Clock(), t.sampled
	due := t.meter.Due(now, every)
	t.mu.Unlock()
	for len(due) > 0 {
		var ops []store.Op
		size, n := 0, 0
		for _, w := range due {
			b, err := json.Marshal(w.Shard)
			if err != nil {
				return fmt.Errorf("meterstore: encode rollups: %w", err)
			}
			if n > 0 && (size+len(b) > maxTxnBytes || len(ops)+1+len(w.Legacy) > maxPutsPerTxn) {
				break
			}
			size += len(b)
			n++
			ops = append(ops, store.Put(store.MeteringShardKey(w.Shard.Month, w.Shard.Project, w.Shard.Shard), b))
			for _, vm := range w.Legacy {
				ops = append(ops, store.Delete(store.MeteringKey(w.Shard.Month, w.Shard.Project, vm)))
			}
		}
		if _, _, err := st.Txn(ctx, nil, ops); err != nil {
			return fmt.Errorf("meterstore: write rollups: %w", err)
		}
		t.mu.Lock()
		for _, w := range due[:n] {
			t.meter.Clean(w, now)
		}
		t.mu.Unlock()
		due = due[n:]
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

// compact bounds the stored months (metering.Compact): a project's
// month that compaction changes, or that holds rollups stored one a VM,
// is stored again as shards (metering.Pack), in one transaction when it
// fits (a compacted month holds totals only, some 300 bytes a VM: about
// 1,500 VMs); a larger one in several, puts first, so a cut-short
// compaction leaves a VM in two records (read once: List), never in
// none. Months past retention are deleted.
func (t *Task) compact(ctx context.Context, st store.Store, month string) error {
	got, err := read(ctx, st, store.MeteringPrefix)
	if err != nil {
		return err
	}
	detailFrom := metering.MonthsBefore(month, 1)
	type projectMonth struct {
		rs      map[string]model.UsageRollup // by VM
		keys    []string                     // stored
		touched bool
	}
	pms := map[string]*projectMonth{}
	pm := func(month, project string) *projectMonth {
		p := pms[month+"/"+project]
		if p == nil {
			p = &projectMonth{rs: map[string]model.UsageRollup{}}
			pms[month+"/"+project] = p
		}
		return p
	}
	for _, rec := range got.records {
		p := pm(rec.month, rec.project)
		p.keys = append(p.keys, rec.key)
		p.touched = p.touched || (rec.legacy && rec.month < detailFrom)
	}
	for _, r := range got.rollups() {
		pm(r.Month, r.Project).rs[r.VM] = r
	}
	c := metering.Compact(got.rollups(), month)
	for _, r := range c.Delete {
		p := pm(r.Month, r.Project)
		delete(p.rs, r.VM)
		p.touched = true
	}
	for _, r := range c.Put {
		p := pm(r.Month, r.Project)
		p.rs[r.VM] = r
		p.touched = true
	}
	names := make([]string, 0, len(pms))
	for k, p := range pms {
		if p.touched {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	for _, k := range names {
		m, project, _ := strings.Cut(k, "/")
		p := pms[k]
		rs := make([]model.UsageRollup, 0, len(p.rs))
		for _, r := range p.rs {
			rs = append(rs, r)
		}
		if err := t.storeProjectMonth(ctx, st, m, project, rs, p.keys); err != nil {
			return err
		}
	}
	if n := len(c.Put) + len(c.Delete); n > 0 {
		t.cfg.Logger.Info("metering rollups compacted", "month", month, "written", len(c.Put), "deleted", len(c.Delete))
	}
	return nil
}

// storeProjectMonth stores rs as a project's month, in shards, and
// deletes the stored keys (old) it no longer uses.
func (t *Task) storeProjectMonth(ctx context.Context, st store.Store, month, project string, rs []model.UsageRollup, old []string) error {
	var ops []store.Op
	used := map[string]bool{}
	for _, sh := range metering.Pack(month, project, rs, t.meter.PerShard) {
		b, err := json.Marshal(sh)
		if err != nil {
			return fmt.Errorf("meterstore: encode rollups: %w", err)
		}
		key := store.MeteringShardKey(month, project, sh.Shard)
		used[key] = true
		ops = append(ops, store.Put(key, b))
	}
	for _, k := range old {
		if !used[k] {
			ops = append(ops, store.Delete(k))
		}
	}
	for len(ops) > 0 { // puts first (Pack's order): a cut-short write leaves a VM twice, never nowhere
		n, bytes := 0, 0
		for n < len(ops) && n < maxPutsPerTxn && (n == 0 || bytes+len(ops[n].Value) <= maxTxnBytes) {
			bytes += len(ops[n].Value)
			n++
		}
		if _, _, err := st.Txn(ctx, nil, ops[:n]); err != nil {
			return fmt.Errorf("meterstore: compact rollups: %w", err)
		}
		ops = ops[n:]
	}
	return nil
}

// stored is what a prefix of the rollups holds.
type stored struct {
	shards  []model.UsageRollupShard
	legacy  []model.UsageRollup // stored one a VM, by leaders before shards
	records []record
}

type record struct {
	key, month, project string
	legacy              bool
}

// read reads the rollups under prefix: shards and records of one VM.
func read(ctx context.Context, st store.Store, prefix string) (stored, error) {
	var out stored
	kvs, _, err := st.List(ctx, prefix)
	if err != nil {
		return out, fmt.Errorf("meterstore: list rollups: %w", err)
	}
	for _, kv := range kvs {
		if kv.Key == store.MeteringMarkKey {
			continue
		}
		rest := strings.TrimPrefix(kv.Key, store.MeteringPrefix)
		parts := strings.Split(rest, "/")
		if len(parts) != 3 {
			continue
		}
		rec := record{key: kv.Key, month: parts[0], project: parts[1]}
		if strings.HasPrefix(parts[2], store.MeteringShardMark) {
			var sh model.UsageRollupShard
			if err := json.Unmarshal(kv.Value, &sh); err != nil {
				return out, fmt.Errorf("meterstore: decode %s: %w", rest, err)
			}
			out.shards = append(out.shards, sh)
		} else {
			var r model.UsageRollup
			if err := json.Unmarshal(kv.Value, &r); err != nil {
				return out, fmt.Errorf("meterstore: decode %s: %w", rest, err)
			}
			rec.legacy = true
			out.legacy = append(out.legacy, r)
		}
		out.records = append(out.records, rec)
	}
	return out, nil
}

// rollups flattens s: one rollup a VM and month, the newest where a VM
// is stored twice (a write cut short, an older leader's record beside a
// shard).
func (s stored) rollups() []model.UsageRollup {
	n := len(s.legacy)
	for _, sh := range s.shards {
		n += len(sh.Rollups)
	}
	out := make([]model.UsageRollup, 0, n)
	at := make(map[string]int, n)
	add := func(r model.UsageRollup) {
		k := r.Month + "/" + r.Project + "/" + r.VM
		if i, ok := at[k]; ok {
			if r.LastAt.After(out[i].LastAt) {
				out[i] = r
			}
			return
		}
		at[k] = len(out)
		out = append(out, r)
	}
	for _, sh := range s.shards {
		for _, r := range sh.Rollups {
			add(r)
		}
	}
	for _, r := range s.legacy {
		add(r)
	}
	return out
}

// List reads a month's rollups ("" project: every project's), one a VM.
func List(ctx context.Context, st store.Store, month, project string) ([]model.UsageRollup, error) {
	prefix := store.MeteringMonthPrefix(month)
	if project != "" {
		prefix += project + "/"
	}
	got, err := read(ctx, st, prefix)
	if err != nil {
		return nil, err
	}
	return got.rollups(), nil
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
