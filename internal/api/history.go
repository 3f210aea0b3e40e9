package api

import (
	"time"

	"github.com/vpool/vpool/internal/model"
)

// ClusterHistory is the body of GET /cluster/history: each host's load
// sampled by the server that answers, newest last (the server keeps
// MaxHistory samples in memory; a restart starts again).
type ClusterHistory struct {
	IntervalSeconds float64         `json:"intervalSeconds"`
	Samples         []HistorySample `json:"samples"`
}

// HistorySample is every host at one time.
type HistorySample struct {
	Time  time.Time    `json:"time"`
	Hosts []HostSample `json:"hosts"`
}

// HostSample is one host's measured load and draw.
type HostSample struct {
	Host        string          `json:"host"`
	State       model.HostState `json:"state"`
	CPUs        int             `json:"cpus"`
	CPUPercent  float64         `json:"cpuPercent"`
	MemUsed     model.Bytes     `json:"memoryUsed"`
	MemCapacity model.Bytes     `json:"memoryCapacity"`
	Watts       float64         `json:"watts"`
	VMs         int             `json:"vms"`
}

// MaxHistory is how many samples a server keeps (two hours at the
// default interval of 10 s).
const MaxHistory = 720
