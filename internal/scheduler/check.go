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
}

// NewMoveCheck returns a MoveCheck over a copy of snap; hosts[i] names
// the planner's host i and vms[v] describes its VM v.
func (s *Scheduler) NewMoveCheck(snap *Snapshot, hosts []string, vms []MoveVM) *MoveCheck {
	return &MoveCheck{s: s, snap: snap.Clone(), hosts: hosts, vms: vms, cur: -1}
}

// Feasible reports whether VM v may move to host h now.
func (m *MoveCheck) Feasible(v, h int) bool { return m.Why(v, h) == "" }

// Why says why VM v may not move to host h, or "" when it may. A VM
// "moving" to the host it runs on, or to a host it holds already, may.
func (m *MoveCheck) Why(v, h int) string {
	if v < 0 || v >= len(m.vms) || h < 0 || h >= len(m.hosts) {
		return "no such VM or host"
	}
	if m.hosts[h] == m.vms[v].Host {
		return ""
	}
	if _, held := m.snap.assumed[holdKey(m.vms[v].Key, m.hosts[h])]; held {
		return "" // planned there already
	}
	hi, found := m.snap.byName[m.hosts[h]]
	if !found {
		return fmt.Sprintf("host %q is not known", m.hosts[h])
	}
	m.focus(v)
	if m.bad != "" {
		return m.bad
	}
	return m.s.verdict(&m.c, hi)
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
	m.unfocus()
	vm := m.vms[v]
	hi, found := m.snap.byName[m.hosts[h]]
	if !found || m.hosts[h] == vm.Host {
		return
	}
	d, err := m.snap.demandOf(vm.Key, vm.Spec)
	if err != nil {
		return
	}
	key := holdKey(vm.Key, m.hosts[h])
	if _, dup := m.snap.assumed[key]; dup {
		return
	}
	_ = m.snap.Assume(Decision{Key: key, Host: m.hosts[h], host: hi, d: d}) // hi is known: cannot fail
}

// Release undoes Hold(v, h) (the planner dropped the move).
func (m *MoveCheck) Release(v, h int) {
	if v < 0 || v >= len(m.vms) || h < 0 || h >= len(m.hosts) {
		return
	}
	m.unfocus()
	_ = m.snap.Forget(holdKey(m.vms[v].Key, m.hosts[h])) // not held: nothing to undo
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
