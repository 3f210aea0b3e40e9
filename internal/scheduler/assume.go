package scheduler

import (
	"fmt"

	"github.com/vpool/vpool/internal/model"
)

// Assume commits a decision to the snapshot: the host's allocation grows,
// its group and domain counts too, and the free-capacity index moves it. It
// does not re-check fit (the decision was made on this snapshot; use
// Check against fresh state before a compare-and-swap).
func (s *Snapshot) Assume(d Decision) error {
	if !d.Placed() || d.host < 0 || int(d.host) >= len(s.hosts) || s.names[d.host] != d.Host {
		return fmt.Errorf("%w: %q", ErrNotPlaced, d.Key)
	}
	if _, dup := s.assumed[d.Key]; dup {
		return fmt.Errorf("%w: %q", ErrAlreadyAssumed, d.Key)
	}
	s.assumed[d.Key] = s.charge(d.host, d.d, 1, nil)
	return nil
}

// Forget undoes Assume.
func (s *Snapshot) Forget(key string) error {
	v, found := s.assumed[key]
	if !found {
		return fmt.Errorf("%w: %q", ErrNotAssumed, key)
	}
	delete(s.assumed, key)
	s.charge(v.host, v.d, -1, v.pools)
	return nil
}

// Remove takes a VM that was in the allocations the snapshot was built
// from (not assumed here) off its host: the caller knows its spec.
func (s *Snapshot) Remove(host, key string, spec *model.VMSpec) error {
	if _, assumed := s.assumed[key]; assumed {
		return s.Forget(key)
	}
	h, found := s.byName[host]
	if !found {
		return fmt.Errorf("%w: %q", ErrUnknownHost, host)
	}
	d, err := s.demandOf(key, spec)
	if err != nil {
		return err
	}
	pools, _ := choosePools(s.pools[h], d.storage, nil)
	s.charge(h, d, -1, pools)
	return nil
}

// charge adds (sign 1) or removes (sign -1) a VM's demand on host h. When
// adding without pools given, it picks the storage pools; it returns the
// record to undo it.
func (s *Snapshot) charge(h int32, d demand, sign int64, pools []int) vmRec {
	r := &s.hosts[h]
	r.cpuUsed += sign * d.cpu
	r.memUsed += sign * d.mem
	r.diskUsed += sign * d.disk
	r.cpuRes += sign * d.cpuRes
	r.memRes += sign * d.memRes
	r.vms += int32(sign)
	if d.domain != "" {
		s.addDomain(h, s.domainID(d.domain), int32(sign))
	}
	if d.group != "" {
		s.addGroup(h, s.groupID(d.group), int32(sign))
	}
	if sign > 0 && pools == nil {
		pools, _ = choosePools(s.pools[h], d.storage, nil)
	}
	for i, slot := range pools {
		if i < len(d.storage) && slot >= 0 && s.pools[h][slot].free >= 0 {
			s.pools[h][slot].free -= sign * d.storage[i].size
		}
	}
	s.reindex(h)
	return vmRec{host: h, d: d, pools: pools}
}

// Apply adds the decision's VM to a, the caller's allocation record of the
// chosen host: what a placement writes (with compare-and-swap) to etcd.
func (d *Decision) Apply(a *model.Allocation) { ApplyVM(a, d.Key, d.Spec, 1) }

// ApplyVM adds (sign 1) or removes (sign -1) one VM to or from an
// allocation record: model.Allocation.ApplyVM, the one definition of what
// a VM holds that the stored allocations and this package share.
func ApplyVM(a *model.Allocation, key string, spec *model.VMSpec, sign int) {
	a.ApplyVM(key, spec, sign)
}

// Check runs every filter for one VM against one host as it is now (the
// host record and its allocation just read from the store): the test to
// repeat before the compare-and-swap that commits a placement.
func (s *Scheduler) Check(host model.Host, alloc model.Allocation, r Request) Decision {
	alloc.Host = host.Name
	snap, err := NewSnapshot(s.policy, []model.Host{host}, []model.Allocation{alloc})
	if err != nil {
		return Decision{Key: r.Key, Spec: r.Spec, Err: err, host: -1}
	}
	r.Exhaustive = true
	return s.Place(snap, r)
}
