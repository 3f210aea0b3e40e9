package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/vpool/vpool/internal/energy"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// Units of the balancer's view of CPU: one physical CPU (or one vCPU) is
// MIPSPerCPU "MIPS", and a VM at CPUPercent 100 uses one vCPU.
const MIPSPerCPU = 1000

// DefaultEnergyPersistInterval is how often the energy ledger is written
// to the store.
const DefaultEnergyPersistInterval = time.Minute

// The balancer, power and energy controllers keep some memory on the
// leader, for one leadership term, each its own (they run on their own
// goroutines).

// balanceState is the balancer's memory.
type balanceState struct {
	// history holds each VM's CPU utilisation samples (fractions of its
	// vCPUs), most recent first, one per balancing round.
	history   map[string][]float64
	lastRound time.Time
	// loaded says the stored history was read this term; written is what
	// the store holds, by key (balance_history.go).
	loaded  bool
	written map[string][]byte
}

// powerState is the power controller's memory.
type powerState struct {
	// emptySince is when each host was first seen on and empty.
	emptySince map[string]time.Time
}

// energyState is the energy controller's memory.
type energyState struct {
	ledger      *energy.Ledger
	ledgerSince time.Time
	loaded      bool
	lastEnergy  time.Time
	lastUtil    map[string]float64
	lastPersist time.Time
	// persistedAt is when the ledger read at the term's start was
	// written (its header's At).
	persistedAt time.Time
	// written is what the store holds (state.WriteEnergy writes only
	// what changed); the folded energy of deleted VMs per project, of
	// deleted hosts and of deleted projects.
	written         map[string][]byte
	deletedVMs      map[string]float64
	deletedHosts    float64
	deletedProjects float64
	// shares is bookEnergy's buffer, reused host after host and pass
	// after pass (Ledger.AddHost keeps none of it)
	shares []energy.Share
	// keys, at and usage are vmUsagesOf's buffers, reused host after
	// host
	keys  []string
	at    []time.Time
	usage []model.VMUsage
}

// LoadBalanceSettings reads the balancing settings, or the defaults when
// none are stored.
func LoadBalanceSettings(ctx context.Context, st store.Store) (model.BalanceSettings, int64, error) {
	set := model.DefaultBalanceSettings()
	kv, err := st.Get(ctx, store.BalanceKey)
	if errors.Is(err, store.ErrNotFound) {
		return set, 0, nil
	}
	if err != nil {
		return set, 0, fmt.Errorf("controller: read balance settings: %w", err)
	}
	if err := json.Unmarshal(kv.Value, &set); err != nil {
		return model.DefaultBalanceSettings(), 0, fmt.Errorf("controller: decode balance settings: %w", err)
	}
	return set, kv.ModRev, nil
}

// linearModel is a power curve from host labels: linear from idle to max
// watts.
func linearModel(id string, idle, maxW, standby float64) energy.Model {
	t, err := energy.NewTable(id, []energy.Point{{Util: 0, Watts: idle}, {Util: 1, Watts: maxW}}, standby)
	if err != nil {
		return nil
	}
	return t
}

// withStandby overrides a model's standby draw.
type withStandby struct {
	energy.Model
	w float64
}

func (m withStandby) Standby() float64 { return m.w }

// HostPowerModel is the power model of a host: the built-in model named
// by its vpool.io/power-model label, else the linear curve of its
// vpool.io/power-idle-watts and vpool.io/power-max-watts labels, else a
// default of 40 W + 6 W per CPU idle and 40 W + 20 W per CPU at full
// load. vpool.io/power-standby-watts sets the standby draw (default 5 W,
// 0 for the built-in SPECpower models, which do not publish one).
func HostPowerModel(h *model.Host) energy.Model {
	lbl := func(k string) (float64, bool) {
		v, ok := h.Labels[k]
		if !ok {
			return 0, false
		}
		f, err := strconv.ParseFloat(v, 64)
		return f, err == nil && f >= 0
	}
	standby, hasStandby := lbl(model.LabelPowerStandby)
	var m energy.Model
	if b, ok := energy.Builtin(h.Labels[model.LabelPowerModel]); ok {
		m = b
	} else if idle, ok := lbl(model.LabelPowerIdle); ok {
		if mx, ok := lbl(model.LabelPowerMax); ok && mx >= idle {
			m = linearModel("labels", idle, mx, 5)
		}
	}
	if m == nil {
		cpus := float64(max(h.Capacity.CPUs, 1))
		m = linearModel(fmt.Sprintf("default-%dcpu", int(cpus)), 40+6*cpus, 40+20*cpus, 5)
	}
	if hasStandby {
		return withStandby{Model: m, w: standby}
	}
	return m
}

// hostUtil is a host's measured CPU utilisation in [0, 1].
func hostUtil(h *model.Host) float64 {
	return min(max(h.Usage.CPUPercent/100, 0), 1)
}

// hostUtilWith is hostUtil of h overlaid with its measured usage (as
// withUsage overlays a copy), without copying h.
func hostUtilWith(v UsageView, h *model.Host) float64 {
	if v != nil {
		if u, _, _, ok := v.HostUsage(h.Name); ok {
			return min(max(u.CPUPercent/100, 0), 1)
		}
	}
	return hostUtil(h)
}

// hostOn reports whether a host counts as switched on.
func hostOn(h *model.Host) bool {
	switch h.State {
	case model.HostReady, model.HostMaintenance:
		return true
	}
	return false
}

// allocOf returns the cached allocation of a host (zero when none).
func (c *cache) allocOf(host string) model.Allocation {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.allocs[host]
}
