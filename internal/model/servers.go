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
