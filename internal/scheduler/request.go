package scheduler

import (
	"fmt"
	"sort"
	"strings"

	"github.com/vpool/vpool/internal/model"
)

// Request is one VM to place.
type Request struct {
	Key  string // "project/name"
	Spec *model.VMSpec
	// Exhaustive examines every host instead of stopping once enough
	// feasible hosts were found: slower, but the explanation then counts
	// every host (dry runs, "why is it pending").
	Exhaustive bool
}

// Affinity kinds, compiled.
const (
	affNone uint8 = iota
	affHard
	affAnti
	affSoft
	affSoftAnti
)

const (
	anyID     int32 = -1 // storage need: any pool / any tier
	unknownID int32 = -3 // a name no host has (yet)
	noPin     int32 = -1
)

type storageNeed struct {
	pool, tier         int32
	poolName, tierName string
	size               int64
}

// demand is a request compiled to numbers and interned ids.
type demand struct {
	key, project                   string
	cpu, mem, disk, cpuRes, memRes int64
	domain                         string
	dom                            int32 // noDomain, an id, or unknownID
	group                          string
	grp                            int32 // -1 none, an id, or unknownID
	affinity                       uint8
	maxPerHost                     int32
	required, preferred            map[string]string
	storage                        []storageNeed
	pin                            int32
	pinName                        string
	// vpoolNet: a NIC is on a vpool network (it has an address), so the
	// host must serve vpool networks; hostNets: networks of the other
	// NICs, which the host must list when it reports its networks.
	vpoolNet bool
	hostNets []string
}

// demandOf compiles a VM spec against the snapshot's interned names.
func (s *Snapshot) demandOf(key string, spec *model.VMSpec) (demand, error) {
	if spec == nil || spec.VCPUs <= 0 || spec.Memory < 0 {
		return demand{}, fmt.Errorf("%w: %q needs a spec with vcpus > 0", ErrBadRequest, key)
	}
	p := &spec.Placement
	d := demand{
		key: key, project: projectOf(key),
		cpu: int64(spec.VCPUs) * 1000, mem: int64(spec.Memory),
		cpuRes: int64(spec.Controls.CPUReservation), memRes: int64(spec.Controls.MemoryReservation),
		domain: p.IsolationDomain, dom: noDomain, grp: -1, pin: noPin,
		maxPerHost: int32(p.MaxPerHost),
		required:   p.RequiredLabels, preferred: p.PreferredLabels,
	}
	if d.domain != "" {
		d.dom = lookup(s.domIDs, d.domain)
	}
	if p.AffinityGroup != "" {
		d.group = d.project + "/" + p.AffinityGroup
		d.grp = lookup(s.groupIDs, d.group)
		if d.grp == unknownID {
			d.grp = -1 // no members anywhere yet
		}
	}
	switch p.Affinity {
	case model.AffinityHard:
		d.affinity = affHard
	case model.AntiAffinityHard:
		d.affinity = affAnti
	case model.AffinitySoft:
		d.affinity = affSoft
	case model.AntiAffinitySoft:
		d.affinity = affSoftAnti
	}
	if p.Host != "" {
		d.pinName = p.Host
		d.pin = lookup(s.byName, p.Host)
	}
	for _, disk := range spec.Disks {
		d.disk += int64(disk.Size)
		if disk.Pool == "" && disk.Tier == "" {
			continue
		}
		n := storageNeed{pool: anyID, tier: anyID, poolName: disk.Pool, tierName: disk.Tier, size: int64(disk.Size)}
		if disk.Pool != "" {
			n.pool = lookup(s.poolIDs, disk.Pool)
		}
		if disk.Tier != "" {
			n.tier = lookup(s.tierIDs, disk.Tier)
		}
		d.addStorage(n)
	}
	for _, nic := range spec.NICs {
		switch {
		case nic.IP != "":
			d.vpoolNet = true
		case nic.Network != "":
			d.hostNets = append(d.hostNets, nic.Network)
		}
	}
	return d, nil
}

func (d *demand) addStorage(n storageNeed) {
	for i := range d.storage {
		if d.storage[i].pool == n.pool && d.storage[i].tier == n.tier {
			d.storage[i].size += n.size
			return
		}
	}
	d.storage = append(d.storage, n)
}

func lookup(m map[string]int32, name string) int32 {
	if id, ok := m[name]; ok {
		return id
	}
	return unknownID
}

func projectOf(key string) string {
	if i := strings.IndexByte(key, '/'); i >= 0 {
		return key[:i]
	}
	return ""
}

// compile fills the cycle from a request: demand, label masks, group state.
func (c *Cycle) compile(r Request) error {
	d, err := c.snap.demandOf(r.Key, r.Spec)
	if err != nil {
		return err
	}
	c.d = d
	s := c.snap
	if len(d.required) > 0 {
		words := len(s.schedulable)
		if cap(c.required) < words {
			c.required = make(bitset, words)
		}
		c.required = c.required[:words]
		copy(c.required, s.schedulable)
		for k, v := range d.required {
			andInto(c.required, c.required, s.labelSets[k+"="+v])
		}
		c.reqCount = c.required.count()
	}
	for k, v := range d.preferred {
		c.preferred = append(c.preferred, s.labelSets[k+"="+v])
	}
	if d.grp >= 0 {
		for h := range s.groupHosts[d.grp] {
			if s.schedulable.has(h) {
				c.groupLive = true
				break
			}
		}
	}
	return nil
}

// selector renders a label map as "k=v,k2=v2", sorted.
func selector(m map[string]string) string {
	parts := make([]string, 0, len(m))
	for k, v := range m {
		parts = append(parts, k+"="+v)
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}
