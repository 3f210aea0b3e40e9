package agent

import (
	"context"
	"fmt"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
)

// usageMeter turns cumulative driver counters into rates: CPU% is the CPU
// time consumed between two samples over the time between them.
type usageMeter struct {
	last map[string]hypervisor.Stats
}

func newUsageMeter() *usageMeter { return &usageMeter{last: map[string]hypervisor.Stats{}} }

// observe records s for id and returns the VM's usage.
func (u *usageMeter) observe(id string, s hypervisor.Stats) model.VMUsage {
	out := model.VMUsage{
		CPUTimeNs: s.CPUTimeNs,
		Memory:    s.Memory,
		DiskRead:  s.DiskRead,
		DiskWrite: s.DiskWrite,
		NetRx:     s.NetRx,
		NetTx:     s.NetTx,
	}
	if p, ok := u.last[id]; ok {
		dt := s.At.Sub(p.At)
		dc := s.CPUTimeNs - p.CPUTimeNs
		// A counter that went down means a new process (restart or
		// migration): no rate for this sample.
		if dt > 0 && dc >= 0 {
			out.CPUPercent = float64(dc) / float64(dt) * 100
		}
	}
	u.last[id] = s
	return out
}

// forget drops samples of VMs that are no longer listed.
func (u *usageMeter) forget(present map[string]bool) {
	for id := range u.last {
		if !present[id] {
			delete(u.last, id)
		}
	}
}

// heartbeat builds a heartbeat from the driver's inventory and the usage
// of every VM it has; VM reports are sent for assigned VMs only.
func (a *Agent) heartbeat(ctx context.Context, u *usageMeter) (api.Heartbeat, error) {
	d := a.cfg.Driver
	inv, err := d.Inventory(ctx)
	if err != nil {
		return api.Heartbeat{}, fmt.Errorf("inventory: %w", err)
	}
	infos, err := d.List(ctx)
	if err != nil {
		return api.Heartbeat{}, fmt.Errorf("list: %w", err)
	}
	hb := api.Heartbeat{
		Host:     a.cfg.HostName,
		Labels:   a.cfg.Labels,
		Capacity: model.Resources{CPUs: inv.CPUs, Memory: inv.Memory, Disk: inv.Disk},
		Driver:   d.Name(),
		Accel:    inv.Accel,
		Pools:    inv.Pools,
		Address:  a.cfg.Address,
		Version:  a.cfg.Version,

		CPUModel:          inv.CPUModel,
		HypervisorVersion: inv.Version,
		MachineType:       inv.Machine,
		Networks:          a.cfg.Networks,
		Net:               a.netCaps(),
	}
	present := make(map[string]bool, len(infos))
	usages := make(map[string]model.VMUsage, len(infos))
	var cpuPct float64
	for _, in := range infos {
		present[in.ID] = true
		hb.Usage.DiskUsed += in.Config.Spec.DiskSize()
		if in.State != hypervisor.StateRunning && in.State != hypervisor.StatePaused {
			continue
		}
		s, err := d.Stats(ctx, in.ID)
		if err != nil {
			continue // gone meanwhile; the next beat catches up
		}
		vu := u.observe(in.ID, s)
		usages[infoKey(in)] = vu
		cpuPct += vu.CPUPercent
		hb.Usage.MemoryUsed += vu.Memory
	}
	u.forget(present)
	if inv.CPUs > 0 {
		hb.Usage.CPUPercent = cpuPct / float64(inv.CPUs)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, in := range infos {
		key := infoKey(in)
		vm, ok := a.assigned[key]
		if !ok {
			continue
		}
		st := a.vmState(key)
		st.usage = usages[key]
		// Heartbeats carry usage; phases come from converge reports only
		// (an empty phase leaves the server's alone). Error, message and
		// restart nonce are repeated from the newest of what the server
		// holds and what it last accepted from us, so that a beat never
		// rolls them back.
		rep := api.VMReport{Project: vm.Project, Name: vm.Name, UID: vm.UID, Usage: st.usage,
			Error: vm.Status.LastError, Message: vm.Status.Message, AppliedRestartNonce: vm.Status.AppliedRestartNonce}
		if l := st.last; l != nil && st.lastRev > vm.Revision {
			rep.Error, rep.Message, rep.AppliedRestartNonce = l.Error, l.Message, l.AppliedRestartNonce
		}
		if vm.DeletedAt != nil {
			continue
		}
		hb.VMs = append(hb.VMs, rep)
	}
	return hb, nil
}
