package energy

import "maps"

// LedgerState is a Ledger as plain data (joules), for storing it and
// restoring it after a restart.
type LedgerState struct {
	Hosts    map[string]float64 `json:"hosts_j"`
	VMs      map[string]float64 `json:"vms_j"`
	Projects map[string]float64 `json:"projects_j"`
	Total    float64            `json:"total_j"`
}

// State returns a copy of the ledger's contents.
func (l *Ledger) State() LedgerState {
	return LedgerState{Hosts: maps.Clone(l.host), VMs: maps.Clone(l.vm), Projects: maps.Clone(l.project), Total: l.total}
}

// RestoreLedger returns a ledger holding s.
func RestoreLedger(s LedgerState) *Ledger {
	l := &Ledger{host: maps.Clone(s.Hosts), vm: maps.Clone(s.VMs), project: maps.Clone(s.Projects), total: s.Total}
	if l.host == nil || l.vm == nil || l.project == nil {
		l.host, l.vm, l.project = nonNil(l.host), nonNil(l.vm), nonNil(l.project)
	}
	return l
}

func nonNil(m map[string]float64) map[string]float64 {
	if m == nil {
		return map[string]float64{}
	}
	return m
}
