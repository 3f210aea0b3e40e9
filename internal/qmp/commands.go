package qmp

import (
	"context"
	"os"
)

// Args are the arguments of a command whose schema is open-ended
// (object-add, device-add, blockdev-add).
type Args = map[string]any

// StatusInfo is query-status's reply.
type StatusInfo struct {
	Running bool   `json:"running"`
	Status  string `json:"status"` // running, paused, prelaunch, inmigrate, postmigrate, shutdown, guest-panicked, ...
}

// QueryStatus returns the VM's run state.
func (c *Conn) QueryStatus(ctx context.Context) (StatusInfo, error) {
	var s StatusInfo
	err := c.Execute(ctx, "query-status", nil, &s)
	return s, err
}

// Stop pauses the guest's vCPUs.
func (c *Conn) Stop(ctx context.Context) error { return c.Execute(ctx, "stop", nil, nil) }

// Cont resumes the guest.
func (c *Conn) Cont(ctx context.Context) error { return c.Execute(ctx, "cont", nil, nil) }

// SystemPowerdown presses the ACPI power button.
func (c *Conn) SystemPowerdown(ctx context.Context) error {
	return c.Execute(ctx, "system_powerdown", nil, nil)
}

// SystemReset resets the machine (a hard reboot).
func (c *Conn) SystemReset(ctx context.Context) error {
	return c.Execute(ctx, "system_reset", nil, nil)
}

// Quit makes QEMU exit at once.
func (c *Conn) Quit(ctx context.Context) error { return c.Execute(ctx, "quit", nil, nil) }

// BlockStats are one block device's counters.
type BlockStats struct {
	Device   string `json:"device"`
	QDev     string `json:"qdev"`
	NodeName string `json:"node-name"`
	Stats    struct {
		RdBytes      int64 `json:"rd_bytes"`
		WrBytes      int64 `json:"wr_bytes"`
		RdOperations int64 `json:"rd_operations"`
		WrOperations int64 `json:"wr_operations"`
	} `json:"stats"`
}

// QueryBlockstats returns the counters of every block device.
func (c *Conn) QueryBlockstats(ctx context.Context) ([]BlockStats, error) {
	var s []BlockStats
	err := c.Execute(ctx, "query-blockstats", nil, &s)
	return s, err
}

// Throttle are I/O limits; zero means unlimited.
type Throttle struct {
	ID     string `json:"id"` // QOM path of the device's backend
	Bps    int64  `json:"bps"`
	BpsRd  int64  `json:"bps_rd"`
	BpsWr  int64  `json:"bps_wr"`
	Iops   int64  `json:"iops"`
	IopsRd int64  `json:"iops_rd"`
	IopsWr int64  `json:"iops_wr"`
}

// BlockSetIOThrottle applies t to the device t.ID names.
func (c *Conn) BlockSetIOThrottle(ctx context.Context, t Throttle) error {
	return c.Execute(ctx, "block_set_io_throttle", t, nil)
}

// ObjectAdd creates a QOM object (e.g. a secret or a memory backend).
func (c *Conn) ObjectAdd(ctx context.Context, a Args) error {
	return c.Execute(ctx, "object-add", a, nil)
}

// ObjectDel deletes a QOM object.
func (c *Conn) ObjectDel(ctx context.Context, id string) error {
	return c.Execute(ctx, "object-del", Args{"id": id}, nil)
}

// DeviceAdd hot-plugs a device.
func (c *Conn) DeviceAdd(ctx context.Context, a Args) error {
	return c.Execute(ctx, "device_add", a, nil)
}

// DeviceDel asks for a device's removal; completion is the DEVICE_DELETED
// event (the guest must cooperate).
func (c *Conn) DeviceDel(ctx context.Context, id string) error {
	return c.Execute(ctx, "device_del", Args{"id": id}, nil)
}

// HotpluggableCPU is one entry of query-hotpluggable-cpus.
type HotpluggableCPU struct {
	Type       string         `json:"type"`
	VCPUsCount int            `json:"vcpus-count"`
	QOMPath    string         `json:"qom-path"` // empty when the slot is free
	Props      map[string]any `json:"props"`
}

// QueryHotpluggableCPUs lists the CPU slots, plugged or not.
func (c *Conn) QueryHotpluggableCPUs(ctx context.Context) ([]HotpluggableCPU, error) {
	var s []HotpluggableCPU
	err := c.Execute(ctx, "query-hotpluggable-cpus", nil, &s)
	return s, err
}

// CPUInfo is one entry of query-cpus-fast.
type CPUInfo struct {
	CPUIndex int    `json:"cpu-index"`
	QOMPath  string `json:"qom-path"`
	ThreadID int    `json:"thread-id"`
}

// QueryCPUsFast lists the plugged vCPUs.
func (c *Conn) QueryCPUsFast(ctx context.Context) ([]CPUInfo, error) {
	var s []CPUInfo
	err := c.Execute(ctx, "query-cpus-fast", nil, &s)
	return s, err
}

// Balloon sets the guest's memory target through virtio-balloon.
func (c *Conn) Balloon(ctx context.Context, bytes int64) error {
	return c.Execute(ctx, "balloon", Args{"value": bytes}, nil)
}

// QueryBalloon returns the guest's current memory as the balloon sees it.
func (c *Conn) QueryBalloon(ctx context.Context) (int64, error) {
	var r struct {
		Actual int64 `json:"actual"`
	}
	err := c.Execute(ctx, "query-balloon", nil, &r)
	return r.Actual, err
}

// MemorySize is query-memory-size-summary's reply.
type MemorySize struct {
	BaseMemory    int64 `json:"base-memory"`
	PluggedMemory int64 `json:"plugged-memory"`
}

// QueryMemorySizeSummary returns boot and hot-plugged memory.
func (c *Conn) QueryMemorySizeSummary(ctx context.Context) (MemorySize, error) {
	var r MemorySize
	err := c.Execute(ctx, "query-memory-size-summary", nil, &r)
	return r, err
}

// Action is one action of a transaction.
type Action struct {
	Type string `json:"type"`
	Data Args   `json:"data"`
}

// Transaction runs actions atomically (all or none).
func (c *Conn) Transaction(ctx context.Context, actions []Action) error {
	return c.Execute(ctx, "transaction", Args{"actions": actions}, nil)
}

// BlockdevAdd adds a block node.
func (c *Conn) BlockdevAdd(ctx context.Context, a Args) error {
	return c.Execute(ctx, "blockdev-add", a, nil)
}

// BlockdevDel removes a block node nobody uses.
func (c *Conn) BlockdevDel(ctx context.Context, node string) error {
	return c.Execute(ctx, "blockdev-del", Args{"node-name": node}, nil)
}

// BlockJob is one entry of query-block-jobs.
type BlockJob struct {
	Device string `json:"device"` // the job id
	Type   string `json:"type"`
	Len    int64  `json:"len"`
	Offset int64  `json:"offset"`
	Ready  bool   `json:"ready"`
	Status string `json:"status"`
}

// QueryBlockJobs lists running block jobs.
func (c *Conn) QueryBlockJobs(ctx context.Context) ([]BlockJob, error) {
	var s []BlockJob
	err := c.Execute(ctx, "query-block-jobs", nil, &s)
	return s, err
}

// BlockNode is one entry of query-named-block-nodes.
type BlockNode struct {
	NodeName string `json:"node-name"`
	File     string `json:"file"`
	Drv      string `json:"drv"`
	RO       bool   `json:"ro"`
}

// QueryNamedBlockNodes lists the block graph's named nodes.
func (c *Conn) QueryNamedBlockNodes(ctx context.Context) ([]BlockNode, error) {
	var s []BlockNode
	err := c.Execute(ctx, "query-named-block-nodes", Args{"flat": true}, &s)
	return s, err
}

// MigrationInfo is query-migrate's reply (the fields vpool reads).
type MigrationInfo struct {
	Status           string `json:"status"` // setup, active, completed, failed, cancelled, ...
	TotalTime        int64  `json:"total-time"`
	Downtime         int64  `json:"downtime"`
	ExpectedDowntime int64  `json:"expected-downtime"`
	SetupTime        int64  `json:"setup-time"`
	ErrorDesc        string `json:"error-desc"`
	RAM              *struct {
		Transferred int64   `json:"transferred"`
		Remaining   int64   `json:"remaining"`
		Total       int64   `json:"total"`
		DirtyRate   int64   `json:"dirty-pages-rate"`
		PageSize    int64   `json:"page-size"`
		MbpsRate    float64 `json:"mbps"`
	} `json:"ram"`
}

// QueryMigrate reports the current or last migration.
func (c *Conn) QueryMigrate(ctx context.Context) (MigrationInfo, error) {
	var m MigrationInfo
	err := c.Execute(ctx, "query-migrate", nil, &m)
	return m, err
}

// Getfd hands f to QEMU under name (for fd: URIs).
func (c *Conn) Getfd(ctx context.Context, name string, f *os.File) error {
	return c.ExecuteWithFile(ctx, "getfd", Args{"fdname": name}, nil, f)
}
