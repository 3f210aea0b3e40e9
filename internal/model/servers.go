package model

import "time"

// ServerRecord is a running vpool server as it announces itself in the
// store (/vpool/servers/<name>, attached to its lease: it vanishes a few
// seconds after the server stops).
type ServerRecord struct {
	Name string `json:"name"`
	// API is the user API's URL and Agent the agent listener's, as the
	// server listens (a wildcard address is shown as it is).
	API     string    `json:"api"`
	Agent   string    `json:"agent"`
	Version string    `json:"version,omitempty"`
	Started time.Time `json:"started"`
}

// BalanceHistory is the balancer's usage history of the VMs on one host
// (/vpool/balance/history/<host>), written every balancing round, so
// that a new leader plans exactly as the old one would have.
type BalanceHistory struct {
	// Round is the time of the round that took the newest samples.
	Round time.Time `json:"round"`
	// VMs holds each VM's CPU samples (project/name → most recent first)
	// in ten-thousandths of its vCPUs.
	VMs map[string][]uint16 `json:"vms"`
}

// BalanceHistoryScale is the unit of BalanceHistory samples.
const BalanceHistoryScale = 10000
