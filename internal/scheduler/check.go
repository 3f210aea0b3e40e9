package scheduler

import (
	"fmt"

	"github.com/vpool/vpool/internal/model"
)

// CheckOn runs every filter of s for r on one host of snap and says why
// the host is refused ("fit: insufficient memory (needs 8GiB, most free
// 6GiB)"), or "" when it passes. The rest of snap stays in view, so group
// and isolation-domain counts are whole: this is the re-check a plan
// applier runs on its latest view before it commits a decision. An
// unknown host or a broken request is refused with the reason.
func (s *Scheduler) CheckOn(snap *Snapshot, r Request, host string) string {
	h, found := snap.byName[host]
	if !found {
		return fmt.Sprintf("host %q is not known", host)
	}
	c := s.cycles.Get().(*Cycle)
	defer s.cycles.Put(c)
	c.reset(snap)
	if err := c.compile(r); err != nil {
		return err.Error()
	}
	return s.verdict(c, h)
}

// CheckMove is CheckOn for a VM that runs on from and would move to to
// (a migration): the VM is taken off from for the check — its own group
// membership, domain and resources do not count against it — and put
// back before CheckMove returns. from may be unknown to snap (nothing is
// taken off). CheckMove changes snap while it runs: callers serialise.
func (s *Scheduler) CheckMove(snap *Snapshot, r Request, from, to string) string {
	if from == to {
		return fmt.Sprintf("the VM is on %s already", to)
	}
	lift, err := snap.lift(from, r)
	if err != nil {
		return err.Error()
	}
	defer snap.settle(lift)
	return s.CheckOn(snap, r, to)
}

// lifted is a VM taken off its host for a check.
type lifted struct {
	ok  bool
	rec vmRec
}

// lift takes r's VM off host (if the host is known) and returns how to
// put it back.
func (s *Snapshot) lift(host string, r Request) (lifted, error) {
	h, found := s.byName[host]
	if !found {
		return lifted{}, nil
	}
	d, err := s.demandOf(r.Key, r.Spec)
	if err != nil {
		return lifted{}, err
	}
	pools, _ := choosePools(s.pools[h], d.storage, nil)
	return lifted{ok: true, rec: s.charge(h, d, -1, pools)}, nil
}

// settle puts a lifted VM back exactly where it was.
func (s *Snapshot) settle(l lifted) {
	if l.ok {
		s.charge(l.rec.host, l.rec.d, 1, l.rec.pools)
	}
}

// passes reports whether host h passes every filter of the compiled
// cycle: verdict without the reason.
func (s *Scheduler) passes(c *Cycle, h int32) bool {
	for _, f := range s.filters {
		if f.Filter(c, int(h)).Code != Success {
			return false
		}
	}
	return true
}

// verdict runs the filters in order on host h of the compiled cycle.
func (s *Scheduler) verdict(c *Cycle, h int32) string {
	for _, f := range s.filters {
		st := f.Filter(c, int(h))
		switch st.Code {
		case Success:
			continue
		case Error:
			return fmt.Sprintf("%s: %v", f.Name(), st.Err)
		}
		return f.Name() + ": " + f.Explain(c, st.Reason%maxReasons, st.Value)
	}
	return ""
}

// MoveVM is one VM a move planner may move: its key (project/name), spec
// and the host it runs on.
type MoveVM struct {
	Key  string
	Spec *model.VMSpec
	Host string
}

// MoveCheck answers a move planner (the balancer, internal/balance's
// Feasibility) whether VM v may move to host h under every filter of a
// Scheduler, with the moves it planned so far held on their targets: a
// migration reserves its target while the VM still runs on its source,
// so a planned move frees nothing on the source. Hosts and VMs are the
// planner's indices. It works on its own copy of the snapshot and is not
// safe for concurrent use.
type MoveCheck struct {
	s     *Scheduler
	snap  *Snapshot
	hosts []string
	vms   []MoveVM

	c   Cycle  // compiled for cur, lifted off its host
	cur int    // -1: none
	lft lifted // cur's lift
	bad string // cur's request is broken: why

	held  map[[2]int]bool // (VM, host) pairs held by Hold
	nHeld []int32         // per VM: how many hosts it holds
	idx   []int32         // the snapshot's index of hosts[i], -1 unknown
}

// NewMoveCheck returns a MoveCheck over a copy of snap; hosts[i] names
// the planner's host i and vms[v] describes its VM v.
func (s *Scheduler) NewMoveCheck(snap *Snapshot, hosts []string, vms []MoveVM) *MoveCheck {
	m := &MoveCheck{s: s, snap: snap.Clone(), hosts: hosts, vms: vms, cur: -1, held: map[[2]int]bool{},
		nHeld: make([]int32, len(vms)), idx: make([]int32, len(hosts))}
	for i, name := range hosts {
		m.idx[i] = -1
		if hi, found := m.snap.byName[name]; found {
			m.idx[i] = hi
		}
	}
	return m
}

// Feasible reports whether VM v may move to host h now. It formats no
// reason: a planner asks it for many hosts per VM.
func (m *MoveCheck) Feasible(v, h int) bool {
	hi, why, decided := m.target(v, h)
	if decided {
		return why == ""
	}
	return m.s.passes(&m.c, hi)
}

// Why says why VM v may not move to host h, or "" when it may. A VM
// "moving" to the host it runs on, or to a host it holds already, may.
func (m *MoveCheck) Why(v, h int) string {
	hi, why, decided := m.target(v, h)
	if decided {
		return why
	}
	return m.s.verdict(&m.c, hi)
}

// target prepares the check of VM v on host h: the host's index with v
// in focus, or decided with the answer when no filter needs to run.
func (m *MoveCheck) target(v, h int) (hi int32, why string, decided bool) {
	if v < 0 || v >= len(m.vms) || h < 0 || h >= len(m.hosts) {
		return 0, "no such VM or host", true
	}
	if m.hosts[h] == m.vms[v].Host || m.nHeld[v] > 0 && m.held[[2]int{v, h}] {
		return 0, "", true // home, or planned there already
	}
	hi = m.idx[h]
	if hi < 0 {
		return 0, fmt.Sprintf("host %q is not known", m.hosts[h]), true
	}
	m.focus(v)
	if m.bad != "" {
		return 0, m.bad, true
	}
	return hi, "", false
}

// focus lifts VM v off its host and compiles its request, unless it is
// the VM in focus already.
func (m *MoveCheck) focus(v int) {
	if m.cur == v {
		return
	}
	m.unfocus()
	vm := m.vms[v]
	r := Request{Key: vm.Key, Spec: vm.Spec}
	m.cur = v
	lft, err := m.snap.lift(vm.Host, r)
	if err != nil {
		m.bad = err.Error()
		return
	}
	m.lft = lft
	m.c.reset(m.snap)
	if err := m.c.compile(r); err != nil {
		m.bad = err.Error()
	}
}

// unfocus puts the VM in focus back on its host.
func (m *MoveCheck) unfocus() {
	m.snap.settle(m.lft)
	m.lft, m.cur, m.bad = lifted{}, -1, ""
}

func holdKey(key, host string) string { return key + "\x00" + host }

// Hold records that the plan moves VM v to host h: the target holds the
// VM from now on (its source keeps it too). Holding twice does nothing.
func (m *MoveCheck) Hold(v, h int) {
	if v < 0 || v >= len(m.vms) || h < 0 || h >= len(m.hosts) {
		return
	}
	vm := m.vms[v]
	if m.hosts[h] == vm.Host || m.held[[2]int{v, h}] {
		return
	}
	hi := m.idx[h]
	if hi < 0 {
		return
	}
	m.unfocus()
	d, err := m.snap.demandOf(vm.Key, vm.Spec)
	if err != nil {
		return
	}
	if m.snap.Assume(Decision{Key: holdKey(vm.Key, m.hosts[h]), Host: m.hosts[h], host: hi, d: d}) == nil {
		m.held[[2]int{v, h}] = true
		m.nHeld[v]++
	}
}

// Release undoes Hold(v, h) (the planner dropped the move).
func (m *MoveCheck) Release(v, h int) {
	if v < 0 || v >= len(m.vms) || h < 0 || h >= len(m.hosts) {
		return
	}
	if !m.held[[2]int{v, h}] {
		return // not held: nothing to undo
	}
	m.unfocus()
	delete(m.held, [2]int{v, h})
	m.nHeld[v]--
	_ = m.snap.Forget(holdKey(m.vms[v].Key, m.hosts[h])) // held: cannot fail
}

// AssumeVM charges a VM that no allocation of snap holds yet to host, as
// Assume does for a decision of Place: a plan applier checking several
// placements in order (a gang) makes each later one see the earlier
// ones. Forget(key) undoes it.
func (s *Snapshot) AssumeVM(key string, spec *model.VMSpec, host string) error {
	h, found := s.byName[host]
	if !found {
		return fmt.Errorf("%w: %q", ErrUnknownHost, host)
	}
	d, err := s.demandOf(key, spec)
	if err != nil {
		return err
	}
	return s.Assume(Decision{Key: key, Host: host, host: h, d: d})
}
