package controller

import (
	"sync"
	"time"

	"github.com/vpool/vpool/internal/model"
)

// UsageCache holds each VM's CPU use from the latest heartbeat the
// server received, so the scaling groups' controller sees a load step
// within one heartbeat: the VM records carry usage too, but are
// rewritten from heartbeats only every few seconds (the server's
// usageRefresh, 10 s), which would make scale-out wait for it. It is a
// VMUsage (Config.VMUsage); the server feeds it (server.Config.VMUsage).
// A VM it has no fresh sample of — the heartbeat went to another server
// of the control plane — is read from its record, as without the cache.
type UsageCache struct {
	mu      sync.Mutex
	samples map[string]usageSample // project/name → newest sample
	seen    int
}

type usageSample struct {
	uid string
	cpu float64 // percent of one CPU, as agents report it
	at  time.Time
}

// NewUsageCache returns an empty cache.
func NewUsageCache() *UsageCache { return &UsageCache{samples: map[string]usageSample{}} }

var _ VMUsage = (*UsageCache)(nil)

// ObserveVMUsage records a heartbeat's usage of VM project/name (uid) at.
func (c *UsageCache) ObserveVMUsage(project, name, uid string, u model.VMUsage, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.samples[project+"/"+name] = usageSample{uid: uid, cpu: u.CPUPercent, at: at}
	// Now and then, forget VMs not heard of for long (deleted, moved to
	// hosts that beat to another server).
	if c.seen++; c.seen%4096 == 0 {
		for k, s := range c.samples {
			if at.Sub(s.at) > 2*usageFreshness {
				delete(c.samples, k)
			}
		}
	}
}

// VMCPU is the newest of the cached sample and the record's usage, when
// fresh: percent of the VM's vCPUs.
func (c *UsageCache) VMCPU(vm *model.VM, now time.Time) (float64, bool) {
	c.mu.Lock()
	s, ok := c.samples[vm.Project+"/"+vm.Name]
	c.mu.Unlock()
	if !ok || (s.uid != "" && s.uid != vm.UID) || s.at.Before(vm.Status.ObservedAt) || now.Sub(s.at) > usageFreshness || vm.Spec.VCPUs <= 0 {
		return recordUsage{}.VMCPU(vm, now)
	}
	return s.cpu / float64(vm.Spec.VCPUs), true
}
