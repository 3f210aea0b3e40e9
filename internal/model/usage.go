package model

import (
	"encoding/json"
	"fmt"
	"math"
	"time"
)

// UsageSample is one server's sampled view of some of the hosts that
// heartbeat to it: what their agents last reported (host and VM usage)
// and when the server last saw each of them. Usage lives in the servers'
// memory; these records carry it into the store at a bounded rate (one
// write per shard of hosts per sample interval), so that the leader's
// decisions and a new leader after a failover have it without every
// heartbeat writing etcd (docs/scale.md).
type UsageSample struct {
	// Server is the agent listener address of the server that wrote it.
	Server string       `json:"server"`
	At     time.Time    `json:"at"`
	Hosts  []HostSample `json:"hosts"`
}

// HostSample is one host in a UsageSample.
type HostSample struct {
	Host string `json:"host"`
	// Seen is when the server last renewed the host's liveness lease (the
	// last heartbeat it answered); the lease expires LeaseTTL seconds
	// after it unless renewed since.
	Seen     time.Time  `json:"seen"`
	LeaseTTL int        `json:"leaseTTL,omitempty"`
	Usage    HostUsage  `json:"usage"`
	VMs      []VMSample `json:"vms,omitempty"`
}

// VMSample is one VM's usage in a HostSample, written as a JSON array
// ["project/name", cpuPercent, memory, cpuTimeNs, diskRead, diskWrite,
// netRx, netTx] to keep samples of 100,000 VMs small.
type VMSample struct {
	Key   string
	Usage VMUsage
}

// MarshalJSON implements json.Marshaler.
func (s VMSample) MarshalJSON() ([]byte, error) {
	u := s.Usage
	return json.Marshal([]any{s.Key, math.Round(u.CPUPercent*10) / 10, int64(u.Memory), u.CPUTimeNs,
		u.DiskRead, u.DiskWrite, u.NetRx, u.NetTx})
}

// UnmarshalJSON implements json.Unmarshaler.
func (s *VMSample) UnmarshalJSON(b []byte) error {
	var raw []json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	if len(raw) != 8 {
		return fmt.Errorf("model: a VM sample has 8 fields, got %d", len(raw))
	}
	var mem int64
	dst := []any{&s.Key, &s.Usage.CPUPercent, &mem, &s.Usage.CPUTimeNs, &s.Usage.DiskRead, &s.Usage.DiskWrite,
		&s.Usage.NetRx, &s.Usage.NetTx}
	for i, d := range dst {
		if err := json.Unmarshal(raw[i], d); err != nil {
			return fmt.Errorf("model: VM sample field %d: %w", i, err)
		}
	}
	s.Usage.Memory = Bytes(mem)
	return nil
}

// AliveRecord is the value of a host's liveness key, which is attached to
// the host's lease (the key vanishes when the lease expires): which
// server attached it and the lease's TTL in seconds. Any server that
// receives the host's heartbeats renews that same lease.
type AliveRecord struct {
	Server   string `json:"server"`
	LeaseTTL int    `json:"leaseTTL"`
}
