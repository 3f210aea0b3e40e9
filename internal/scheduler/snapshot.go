package scheduler

import (
	"fmt"
	"math"
	"sort"

	"github.com/vpool/vpool/internal/model"
)

// Domain summary values of hostRec.dom.
const (
	noDomain    int32 = -1 // no VM on the host has an isolation domain
	mixedDomain int32 = -2 // VMs of several domains (only from legacy state)
)

// hostRec is the numeric view of one host that filters and scores read.
// CPU is in milli-CPUs, memory and disk in bytes.
type hostRec struct {
	cpuLimit, memLimit, diskLimit int64 // capacity × ratio
	cpuPhys, memPhys              int64 // physical capacity: reservations are covered by it 1:1
	cpuUsed, memUsed, diskUsed    int64
	cpuRes, memRes                int64
	vms                           int32 // VMs on the host
	domVMs                        int32 // of which with an isolation domain
	dom                           int32 // their domain id, noDomain or mixedDomain
	cores                         int32
	stateReason                   uint8 // reasonReady when schedulable
}

func (r *hostRec) freeMem() int64 { return r.memLimit - r.memUsed }

// indexKey is the host's free capacity in memory units on its dominant
// resource: min(free memory, free CPU × memory per CPU of the host). A VM
// needing mem bytes and cpu milli-CPUs cannot fit where the key is below
// min(mem, cpu × the smallest memory-per-CPU of all hosts), which is what
// lets the index skip hosts full in either resource.
func (r *hostRec) indexKey() int64 {
	if r.cpuLimit <= 0 {
		return -1
	}
	cpuAsMem := float64(r.cpuLimit-r.cpuUsed) * float64(r.memLimit) / float64(r.cpuLimit)
	return min(r.freeMem(), int64(cpuAsMem))
}

type poolRec struct {
	name, tier int32
	free       int64 // 0: not reported (not checked)
}

// vmRec remembers what an assumed VM takes, so Forget can give it back.
type vmRec struct {
	host  int32
	d     demand
	pools []int // host pool slots the storage needs were charged to
}

// Snapshot is the scheduler's in-memory, mutable view of the cluster:
// hosts as numeric records, label bitsets, a free-capacity index, isolation
// domain and affinity group counts. Place reads it; Assume and Forget
// change it, so a batch sees its own earlier placements. A Snapshot is not
// safe for concurrent use while it is being changed.
type Snapshot struct {
	policy model.Policy
	names  []string
	byName map[string]int32
	hosts  []hostRec
	labels []map[string]string
	pools  [][]poolRec
	nets   []netRec

	labelSets    map[string]bitset // "key=value" → hosts
	rareKeys     map[string]bitset // label keys few hosts carry → those hosts
	rareAll      bitset            // union of rareKeys
	schedulable  bitset
	notSched     [numStateReasons]int32 // hosts per hoststate reason (index 0 unused)
	index        *freeIndex
	minCores     int32
	minMemPerCPU float64 // smallest memLimit/cpuLimit of any host (bytes per milli-CPU)

	domIDs     map[string]int32
	domNames   []string
	hostDoms   []map[int32]int32 // per host: domain → VMs; nil when none
	groupIDs   map[string]int32
	groupNames []string
	groupHosts []map[int32]int32 // per group: host → members
	hostGroups []map[int32]int32 // per host: group → members; nil when none
	poolIDs    map[string]int32
	tierIDs    map[string]int32

	assumed map[string]vmRec
}

// NewSnapshot builds a snapshot from hosts and their allocations under a
// cluster policy. Allocations of unknown hosts are ignored (a host deleted
// after its allocation was read); a host without an allocation falls back
// to Host.Allocated and Host.VMs. Two hosts with one name are an error.
func NewSnapshot(policy model.Policy, hosts []model.Host, allocs []model.Allocation) (*Snapshot, error) {
	s := &Snapshot{
		policy:    policy,
		byName:    make(map[string]int32, len(hosts)),
		labelSets: map[string]bitset{},
		domIDs:    map[string]int32{},
		groupIDs:  map[string]int32{},
		poolIDs:   map[string]int32{},
		tierIDs:   map[string]int32{},
		assumed:   map[string]vmRec{},
	}
	byHost := make(map[string]*model.Allocation, len(allocs))
	for i := range allocs {
		byHost[allocs[i].Host] = &allocs[i]
	}
	var maxMem int64
	for i := range hosts {
		if _, dup := s.byName[hosts[i].Name]; dup {
			return nil, fmt.Errorf("%w: %q", ErrDuplicateHost, hosts[i].Name)
		}
		h := s.appendHost(&hosts[i])
		s.setAllocation(h, &hosts[i], byHost[hosts[i].Name])
		maxMem = max(maxMem, s.hosts[h].memLimit)
	}
	s.index = newFreeIndex(maxMem, len(hosts))
	for h := range s.hosts {
		if s.schedulable.has(int32(h)) {
			s.index.add(int32(h), s.hosts[h].indexKey())
		}
	}
	s.recount()
	s.recountRare()
	return s, nil
}

// Len is the number of hosts.
func (s *Snapshot) Len() int { return len(s.hosts) }

// Policy is the policy the snapshot's ratios were resolved with.
func (s *Snapshot) Policy() model.Policy { return s.policy }

// HostIndex returns the index of the named host, or -1.
func (s *Snapshot) HostIndex(name string) int {
	if h, ok := s.byName[name]; ok {
		return int(h)
	}
	return -1
}

// HostName returns the name of host i.
func (s *Snapshot) HostName(i int) string { return s.names[i] }

// Free returns what host i can still take: allocatable (capacity × ratio)
// minus allocated, CPU in milli-CPUs.
func (s *Snapshot) Free(i int) (cpuMilli, mem, disk int64) {
	r := &s.hosts[i]
	return r.cpuLimit - r.cpuUsed, r.memLimit - r.memUsed, r.diskLimit - r.diskUsed
}

// Used returns what host i has allocated (CPU in milli-CPUs) and its VM count.
func (s *Snapshot) Used(i int) (cpuMilli, mem, disk int64, vms int) {
	r := &s.hosts[i]
	return r.cpuUsed, r.memUsed, r.diskUsed, int(r.vms)
}

// Reserved returns the reservations on host i (milli-CPUs, bytes).
func (s *Snapshot) Reserved(i int) (cpuMilli, mem int64) {
	r := &s.hosts[i]
	return r.cpuRes, r.memRes
}

// ratio resolves one allocation ratio: host override, cluster policy,
// built-in default, clamped to [lo, hi].
func ratio(host, cluster, def, hi float64) float64 {
	r := host
	if r <= 0 {
		r = cluster
	}
	if r <= 0 {
		r = def
	}
	return min(r, hi)
}

// Ratio ceilings: the model's policy validation allows no more.
const (
	maxCPURatio  = 64
	maxMemRatio  = 3
	maxDiskRatio = 20
)

func scale(v int64, r float64) int64 { return int64(math.Floor(float64(v) * r)) }

func (s *Snapshot) appendHost(h *model.Host) int32 {
	i := int32(len(s.hosts))
	s.names = append(s.names, h.Name)
	s.byName[h.Name] = i
	s.hosts = append(s.hosts, hostRec{})
	s.labels = append(s.labels, nil)
	s.pools = append(s.pools, nil)
	s.nets = append(s.nets, netRec{})
	s.hostDoms = append(s.hostDoms, nil)
	s.hostGroups = append(s.hostGroups, nil)
	s.setHost(i, h)
	return i
}

// setHost (re)loads capacity, ratios, state, labels and pools of host i.
func (s *Snapshot) setHost(i int32, h *model.Host) {
	r := &s.hosts[i]
	r.setCapacity(h, s.policy)
	r.stateReason = stateReasonOf(h)
	if r.stateReason == reasonReady {
		s.schedulable.set(i)
	} else {
		s.schedulable.clear(i)
	}
	for k, v := range s.labels[i] {
		s.labelSets[k+"="+v].clear(i)
	}
	s.labels[i] = h.Labels
	for k, v := range h.Labels {
		b := s.labelSets[k+"="+v]
		b.set(i)
		s.labelSets[k+"="+v] = b
	}
	s.pools[i] = s.pools[i][:0]
	for _, p := range h.Pools {
		free := int64(p.Free)
		if free <= 0 {
			free = -1 // not reported: not checked
		}
		s.pools[i] = append(s.pools[i], poolRec{name: intern(s.poolIDs, p.Name), tier: intern(s.tierIDs, p.Tier), free: free})
	}
	s.nets[i] = netRecOf(h)
}

// recount refreshes the per-state counts and the smallest core count.
func (s *Snapshot) recount() {
	s.notSched = [numStateReasons]int32{}
	s.minCores = 0
	s.minMemPerCPU = 0
	for i := range s.hosts {
		r := &s.hosts[i]
		if r.cpuLimit > 0 {
			if m := float64(r.memLimit) / float64(r.cpuLimit); s.minMemPerCPU == 0 || m < s.minMemPerCPU {
				s.minMemPerCPU = m
			}
		}
		s.notSched[r.stateReason]++
		if r.cores > 0 && (s.minCores == 0 || r.cores < s.minCores) {
			s.minCores = r.cores
		}
	}
	s.notSched[reasonReady] = 0
}

func intern(m map[string]int32, name string) int32 {
	if id, ok := m[name]; ok {
		return id
	}
	id := int32(len(m))
	m[name] = id
	return id
}

// setAllocation (re)loads what is allocated on host i.
func (s *Snapshot) setAllocation(i int32, h *model.Host, a *model.Allocation) {
	r := &s.hosts[i]
	for g, n := range s.hostGroups[i] {
		s.addGroup(i, g, -n)
	}
	s.hostDoms[i] = nil
	r.domVMs, r.dom = 0, noDomain
	if a == nil {
		r.cpuUsed, r.memUsed, r.diskUsed = int64(h.Allocated.CPUs)*1000, int64(h.Allocated.Memory), int64(h.Allocated.Disk)
		r.cpuRes, r.memRes, r.vms = 0, 0, int32(h.VMs)
		return
	}
	r.setUsage(a)
	for _, name := range sortedKeys(a.Domains) {
		s.addDomain(i, s.domainID(name), int32(a.Domains[name]))
	}
	for _, name := range sortedKeys(a.Groups) {
		s.addGroup(i, s.groupID(name), int32(a.Groups[name]))
	}
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k, n := range m {
		if n > 0 {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

func (s *Snapshot) domainID(name string) int32 {
	if id, ok := s.domIDs[name]; ok {
		return id
	}
	id := int32(len(s.domNames))
	s.domIDs[name] = id
	s.domNames = append(s.domNames, name)
	return id
}

func (s *Snapshot) groupID(name string) int32 {
	if id, ok := s.groupIDs[name]; ok {
		return id
	}
	id := int32(len(s.groupNames))
	s.groupIDs[name] = id
	s.groupNames = append(s.groupNames, name)
	s.groupHosts = append(s.groupHosts, nil)
	return id
}

// addDomain adds n (possibly negative) VMs of domain d to host i.
func (s *Snapshot) addDomain(i, d, n int32) {
	m := s.hostDoms[i]
	if m == nil {
		m = map[int32]int32{}
		s.hostDoms[i] = m
	}
	if m[d] += n; m[d] <= 0 {
		delete(m, d)
	}
	r := &s.hosts[i]
	r.domVMs, r.dom = 0, noDomain
	for id, c := range m {
		r.domVMs += c
		if r.dom == noDomain {
			r.dom = id
		} else {
			r.dom = mixedDomain
		}
	}
	if len(m) == 0 {
		s.hostDoms[i] = nil
	}
}

// addGroup adds n (possibly negative) members of group g to host i.
func (s *Snapshot) addGroup(i, g, n int32) {
	gh := s.groupHosts[g]
	if gh == nil {
		gh = map[int32]int32{}
		s.groupHosts[g] = gh
	}
	if gh[i] += n; gh[i] <= 0 {
		delete(gh, i)
	}
	hg := s.hostGroups[i]
	if hg == nil {
		hg = map[int32]int32{}
		s.hostGroups[i] = hg
	}
	if hg[g] += n; hg[g] <= 0 {
		delete(hg, g)
	}
}

// SetHost adds a host or reloads an existing one (capacity, ratios, state,
// cordon, labels, pools) without touching its allocation. Use it to keep a
// long-lived snapshot current from a watch.
func (s *Snapshot) SetHost(h model.Host) {
	i, ok := s.byName[h.Name]
	relabel := !ok || !sameLabels(s.labels[i], h.Labels)
	if !ok {
		i = s.appendHost(&h)
		s.hosts[i].vms = int32(h.VMs)
		s.hosts[i].cpuUsed, s.hosts[i].memUsed, s.hosts[i].diskUsed = int64(h.Allocated.CPUs)*1000, int64(h.Allocated.Memory), int64(h.Allocated.Disk)
		s.index.grow(len(s.hosts))
	} else {
		s.setHost(i, &h)
	}
	s.reindex(i)
	s.recount()
	if relabel {
		s.recountRare()
	}
}

func sameLabels(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// SetAllocation replaces the allocation of a known host (from a watch, or
// after a lost compare-and-swap). It returns ErrUnknownHost otherwise.
func (s *Snapshot) SetAllocation(a model.Allocation) error {
	i, ok := s.byName[a.Host]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownHost, a.Host)
	}
	s.setAllocation(i, nil, &a)
	s.reindex(i)
	return nil
}

func (s *Snapshot) reindex(i int32) {
	if s.schedulable.has(i) {
		s.index.update(i, s.hosts[i].indexKey())
	} else {
		s.index.remove(i)
	}
}

// Clone returns an independent copy (for dry runs: place on the clone,
// throw it away).
func (s *Snapshot) Clone() *Snapshot {
	c := *s
	c.names = append([]string(nil), s.names...)
	c.byName = cloneMap(s.byName)
	c.hosts = append([]hostRec(nil), s.hosts...)
	c.labels = append([]map[string]string(nil), s.labels...)
	c.pools = make([][]poolRec, len(s.pools))
	for i, p := range s.pools {
		c.pools[i] = append([]poolRec(nil), p...)
	}
	c.labelSets = make(map[string]bitset, len(s.labelSets))
	for k, b := range s.labelSets {
		c.labelSets[k] = b.clone()
	}
	c.rareKeys = make(map[string]bitset, len(s.rareKeys))
	for k, b := range s.rareKeys {
		c.rareKeys[k] = b.clone()
	}
	c.rareAll = s.rareAll.clone()
	c.schedulable = s.schedulable.clone()
	c.index = s.index.clone()
	c.domIDs, c.groupIDs = cloneMap(s.domIDs), cloneMap(s.groupIDs)
	c.poolIDs, c.tierIDs = cloneMap(s.poolIDs), cloneMap(s.tierIDs)
	c.domNames = append([]string(nil), s.domNames...)
	c.groupNames = append([]string(nil), s.groupNames...)
	c.hostDoms = cloneMaps(s.hostDoms)
	c.groupHosts = cloneMaps(s.groupHosts)
	c.hostGroups = cloneMaps(s.hostGroups)
	c.assumed = cloneMap(s.assumed)
	return &c
}

func cloneMap[K comparable, V any](m map[K]V) map[K]V {
	c := make(map[K]V, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

func cloneMaps(ms []map[int32]int32) []map[int32]int32 {
	c := make([]map[int32]int32, len(ms))
	for i, m := range ms {
		if m != nil {
			c[i] = cloneMap(m)
		}
	}
	return c
}
