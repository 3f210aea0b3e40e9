package api

import "github.com/vpool/vpool/internal/model"

// MigrationRequest starts a migration of one VM
// (POST /migrations?project=P). Without To the scheduler picks the
// target (never the VM's current host), with the usual placement rules.
// A running VM moves live, a stopped one cold.
type MigrationRequest struct {
	VM string `json:"vm"`
	To string `json:"to,omitempty"`
	// DowntimeLimitMs and AllowPostCopy override the VM's own settings
	// (spec.migration) and the defaults (300 ms, no post-copy).
	DowntimeLimitMs *int  `json:"downtimeLimitMs,omitempty"`
	AllowPostCopy   *bool `json:"allowPostCopy,omitempty"`
	// BandwidthBps caps the stream at the start (bytes/s; 0: the
	// driver's default, 1 GiB/s for QEMU); escalation may raise it.
	BandwidthBps int64 `json:"bandwidthBps,omitempty"`
	// DryRun runs the pre-checks and answers the plan; nothing is stored.
	DryRun bool `json:"dryRun,omitempty"`
}

// MigrationList is the body of GET /migrations.
type MigrationList struct {
	Items []model.Migration `json:"items"`
}

// DrainRequest drains a host (POST /hosts/{name}/drain).
type DrainRequest struct {
	// MaxConcurrent bounds the migrations running at once from the host
	// (default model.DefaultDrainConcurrency).
	MaxConcurrent int `json:"maxConcurrent,omitempty"`
}

// DrainPlanItem is one VM of a drain plan.
type DrainPlanItem struct {
	VM     string              `json:"vm"` // project/name
	Mode   model.MigrationMode `json:"mode,omitempty"`
	Target string              `json:"target,omitempty"` // the host it would go to now
	// Reason says why it cannot move (then Target is empty).
	Reason string `json:"reason,omitempty"`
}

// DrainResponse answers a drain: the host (now in maintenance) and the
// plan as it stands; the migration controller carries it out, at most
// MaxConcurrent at a time, re-planning as capacity changes.
type DrainResponse struct {
	Host    model.Host      `json:"host"`
	Movable []DrainPlanItem `json:"movable"`
	Blocked []DrainPlanItem `json:"blocked"`
}

// --- agent protocol ---

// AgentMigrations is the body of GET /agent/v1/migrations?after=REV&wait=30s:
// the migrations the calling host takes part in that still need
// something of it. The call blocks until one changed after REV or wait
// elapsed.
type AgentMigrations struct {
	Revision int64             `json:"revision"`
	Items    []model.Migration `json:"items"`
}

// MigrationReport is what an agent tells about its side of a migration
// (PUT /agent/v1/migrations/{id}/report). The server knows the side from
// the caller's certificate; fields that do not apply to it are refused.
type MigrationReport struct {
	// Target side.
	Addr        string `json:"addr,omitempty"`        // MigrateIn answered this address
	TargetError string `json:"targetError,omitempty"` // MigrateIn failed
	Arrived     bool   `json:"arrived,omitempty"`     // the VM is listed here
	// Absent: the source is unsure of the outcome and the VM is not here.
	Absent bool `json:"absent,omitempty"`
	// Source side.
	Progress    *model.MigrationProgress `json:"progress,omitempty"`
	Result      *model.MigrationResult   `json:"result,omitempty"` // MigrateOut succeeded
	SourceError string                   `json:"sourceError,omitempty"`
	SourceGone  bool                     `json:"sourceGone,omitempty"`
	// Unsure goes with SourceError: the switchover was sent but never
	// answered; the source holds its copy paused until the target's
	// report decides.
	Unsure bool `json:"unsure,omitempty"`
	// Either side, after a final phase: no copy of the VM is left here
	// that is not its own.
	Cleaned bool `json:"cleaned,omitempty"`
}
