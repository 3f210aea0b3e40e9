package simulate

// entry is one point of a host's or VM's state history.
type entry struct {
	t, alloc, req float64
	flag          bool // host: active; VM: in migration
}

// history folds a CloudSim-style state history into running sums as it
// is written. An entry written at the same time as the previous one
// replaces it, like HostDynamicWorkload.addStateHistoryEntry; an interval
// is accounted once the entry after it is known.
type history struct {
	prev, cur    entry
	hasPrev, has bool
	onCommit     func(prev, cur entry, first bool)
}

func (h *history) add(e entry) {
	if h.has && h.cur.t == e.t {
		h.cur = e
		return
	}
	if h.has {
		h.commit()
	}
	h.cur, h.has = e, true
}

func (h *history) commit() {
	h.onCommit(h.prev, h.cur, !h.hasPrev)
	h.prev, h.hasPrev = h.cur, true
}

// hostMetrics accumulates SLATAH and shutdowns over all hosts.
type hostMetrics struct {
	activeTime, violTime float64
	shutdowns            int
}

func (m *hostMetrics) fold(prev, cur entry, first bool) {
	// Helper.getTimesBeforeHostShutdown starts from "active".
	prevActive := true
	if !first {
		prevActive = prev.flag
		if prev.flag {
			dt := cur.t - prev.t
			m.activeTime += dt
			if prev.alloc < prev.req {
				m.violTime += dt
			}
		}
	}
	if prevActive && !cur.flag {
		m.shutdowns++
	}
}

// vmMetrics accumulates PDM over all VMs.
type vmMetrics struct {
	requested, allocated, underMigration float64
}

func (m *vmMetrics) fold(prev, cur entry, first bool) {
	if first {
		return
	}
	dt := cur.t - prev.t
	m.allocated += prev.alloc * dt
	m.requested += prev.req * dt
	if prev.alloc < prev.req && prev.flag {
		m.underMigration += (prev.req - prev.alloc) * dt
	}
}

// finish commits the last entry.
func (h *history) finish() {
	if h.has {
		h.commit()
		h.has = false
	}
}
