package model

import "time"

// The energy ledger is stored split, so that no value grows with the
// cluster's history: a header, a record per host, kept in shards of many
// hosts (so that a persist writes a key per shard, not per host), and one
// per project (/vpool/energy/meta, /vpool/energy/shards/<n>,
// /vpool/energy/projects/<project>). A VM's energy lives on the record of
// the host it runs on; when the VM is deleted it is folded into its
// project (DeletedVMsJ), and a deleted host's or project's record is
// folded into the header. EnergyLedger is the assembled view readers get.

// EnergyMeta is the ledger's header: the period it covers, the energy
// booked in it, and what deleted hosts and projects took with them.
type EnergyMeta struct {
	Since  time.Time `json:"since"`
	At     time.Time `json:"at"`
	TotalJ float64   `json:"totalJ"`
	// DeletedHostsJ is what hosts since deleted drew.
	DeletedHostsJ float64 `json:"deletedHostsJ,omitempty"`
	// DeletedProjectsJ is what was attributed to projects since deleted.
	DeletedProjectsJ float64 `json:"deletedProjectsJ,omitempty"`
}

// EnergyHostRecord is one host's part of the ledger: what it drew, its
// power at the time of the ledger, and the energy attributed so far to
// each VM that runs on it now (over the VM's whole life, on any host).
type EnergyHostRecord struct {
	Joules float64 `json:"joules"`
	EnergyHost
	VMs map[string]float64 `json:"vms,omitempty"`
}

// EnergyHostShard holds the records of the hosts whose name hashes to
// its shard. A host found in two records (a persist that changed the
// shard count and was cut short) is read from the one with more Joules:
// a host's energy only grows, so that is the newer.
type EnergyHostShard struct {
	Hosts map[string]EnergyHostRecord `json:"hosts"`
}

// EnergyProjectRecord is one project's part of the ledger: the energy
// attributed to its VMs (deleted ones included), of which DeletedVMsJ to
// VMs since deleted, and the energy of its VMs placed on no host now.
type EnergyProjectRecord struct {
	Joules      float64            `json:"joules"`
	DeletedVMsJ float64            `json:"deletedVMsJ,omitempty"`
	VMs         map[string]float64 `json:"vms,omitempty"`
}

// Names of the lines that carry folded energy in an assembled
// EnergyLedger: EnergyDeletedVMs after "<project>/" in VMJ, the others as
// host and project names.
const (
	EnergyDeletedVMs      = "(deleted VMs)"
	EnergyDeletedHosts    = "(deleted hosts)"
	EnergyDeletedProjects = "(deleted projects)"
)
