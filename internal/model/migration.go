package model

import (
	"fmt"
	"time"
)

// MigrationPhase is where a migration is in its life. The controller moves
// it forward; only completed, failed and cancelled are final.
type MigrationPhase string

// Migration phases.
const (
	MigrationPending         MigrationPhase = "pending"
	MigrationPreparingTarget MigrationPhase = "preparing-target"
	MigrationTransferring    MigrationPhase = "transferring"
	MigrationSwitchingOver   MigrationPhase = "switching-over"
	MigrationCompleted       MigrationPhase = "completed"
	MigrationFailed          MigrationPhase = "failed"
	MigrationCancelled       MigrationPhase = "cancelled"
)

// Final reports whether no further phase follows.
func (p MigrationPhase) Final() bool {
	return p == MigrationCompleted || p == MigrationFailed || p == MigrationCancelled
}

// MigrationMode says how a VM moves.
type MigrationMode string

// Migration modes.
const (
	// MigrationLive moves a running VM: memory (and local disks) stream
	// from QEMU to QEMU while the guest runs.
	MigrationLive MigrationMode = "live"
	// MigrationCold moves a stopped VM: its host is reassigned (and its
	// local disks copied, where it has any).
	MigrationCold MigrationMode = "cold"
)

// DefaultDowntimeLimitMs is the downtime limit of a live migration when
// neither the request nor the VM's spec gives one.
const DefaultDowntimeLimitMs = 300

// MaxDowntimeLimitMs bounds any downtime limit.
const MaxDowntimeLimitMs = 60000

// MaxMultifdChannels bounds a live migration's multifd channels (the
// connections its memory stream is split over).
const MaxMultifdChannels = 16

// MaxMigrationBandwidth bounds a migration's bandwidth cap (bytes/s).
const MaxMigrationBandwidth int64 = 1 << 40

// MigrationSpec is a VM's own migration settings (VMSpec.Migration); a
// migration request may override them.
type MigrationSpec struct {
	// DowntimeLimitMs caps the pause at switch-over (0: the default).
	DowntimeLimitMs int `json:"downtimeLimitMs,omitempty"`
	// AllowPostCopy lets a live migration that does not converge switch to
	// post-copy (the guest runs on the target while memory still arrives;
	// losing either host then loses the VM).
	AllowPostCopy bool `json:"allowPostCopy,omitempty"`
	// MultifdChannels is how many connections a live migration's memory
	// stream is split over: 0 lets the source host choose (one stream
	// for a guest that dirties little, its --migration-multifd-channels
	// for one that dirties faster than one stream moves), 1 one stream,
	// 2 to MaxMultifdChannels that many. Post-copy needs one stream.
	MultifdChannels int `json:"multifdChannels,omitempty"`
}

func (m *MigrationSpec) validate() error {
	if m == nil {
		return nil
	}
	if m.DowntimeLimitMs < 0 || m.DowntimeLimitMs > MaxDowntimeLimitMs {
		return fieldErr("spec.migration.downtimeLimitMs", "must be 0 (default %d) to %d ms (got %d)",
			DefaultDowntimeLimitMs, MaxDowntimeLimitMs, m.DowntimeLimitMs)
	}
	if m.MultifdChannels < 0 || m.MultifdChannels > MaxMultifdChannels {
		return fieldErr("spec.migration.multifdChannels", "must be 0 (the source host chooses), 1 (one stream) or up to %d channels (got %d)",
			MaxMultifdChannels, m.MultifdChannels)
	}
	if m.MultifdChannels > 1 && m.AllowPostCopy {
		return fieldErr("spec.migration.multifdChannels", "cannot be combined with allowPostCopy (post-copy needs one stream): set it to 0 or 1, or allowPostCopy to false (got %d)",
			m.MultifdChannels)
	}
	return nil
}

// MigrationOptions tune one migration.
type MigrationOptions struct {
	DowntimeLimitMs int   `json:"downtimeLimitMs"`
	BandwidthBps    int64 `json:"bandwidthBps,omitempty"` // 0: the driver's default
	// MaxBandwidthBps is what the first escalation raises the bandwidth to
	// (0: the driver's default).
	MaxBandwidthBps int64 `json:"maxBandwidthBps,omitempty"`
	AllowPostCopy   bool  `json:"allowPostCopy,omitempty"`
	// MultifdChannels is the memory stream's channels (0: the source
	// host's choice; see MigrationSpec.MultifdChannels).
	MultifdChannels int `json:"multifdChannels,omitempty"`
	// StageTimeoutMs bounds each escalation stage (0: the driver's default).
	StageTimeoutMs int64 `json:"stageTimeoutMs,omitempty"`
}

// MigrationProgress is the last progress the source reported.
type MigrationProgress struct {
	BytesSent          int64     `json:"bytesSent"`
	BytesLeft          int64     `json:"bytesLeft"`
	BytesTotal         int64     `json:"bytesTotal"`
	DirtyRate          int64     `json:"dirtyRateBps"` // bytes/s
	ExpectedDowntimeMs int64     `json:"expectedDowntimeMs"`
	ETASeconds         float64   `json:"etaSeconds"`
	UpdatedAt          time.Time `json:"updatedAt"`
	// Stage is the driver's stage: disks, precopy, downtime, bandwidth,
	// auto-converge, postcopy, switchover (escalation steps in order);
	// Note says why the stage was entered.
	Stage string `json:"stage,omitempty"`
	Note  string `json:"note,omitempty"`
	// Iteration counts pre-copy passes; BandwidthBps is the measured
	// stream rate; ThrottlePct the guest's CPU throttle (auto-converge);
	// DiskSent/DiskTotal the local disks' copy.
	Iteration    int64 `json:"iteration,omitempty"`
	BandwidthBps int64 `json:"bandwidthBps,omitempty"`
	ThrottlePct  int   `json:"throttlePct,omitempty"`
	DiskSent     int64 `json:"diskSent,omitempty"`
	DiskTotal    int64 `json:"diskTotal,omitempty"`
}

// MigrationResult is what a finished migration measured.
type MigrationResult struct {
	TotalMs    int64 `json:"totalMs"`    // as the hypervisor measured the transfer
	DowntimeMs int64 `json:"downtimeMs"` // as the hypervisor measured it
	BytesSent  int64 `json:"bytesSent"`
	// GuestGapMs is the guest-visible pause, the migration's SLO, measured
	// as GuestGapBy says: "guest-ticks" (the guest's own periodic output),
	// or "qemu-pause" (no figure from inside the guest: QEMU's PauseMs).
	GuestGapMs int64  `json:"guestGapMs,omitempty"`
	GuestGapBy string `json:"guestGapBy,omitempty"`
	// PauseMs is how long QEMU held the guest's vCPUs: from the source
	// stopping them to the target resuming them, switchover included
	// (DowntimeMs is QEMU's own, shorter figure).
	PauseMs int64 `json:"pauseMs,omitempty"`
	// WallMs is the orchestration's own time, creation to completion.
	WallMs int64 `json:"wallMs"`
	// RAMBytes and DiskBytes split BytesSent (DiskBytes: local disks
	// copied; disks on shared storage stay put and are listed in
	// SharedDisks).
	RAMBytes    int64    `json:"ramBytes,omitempty"`
	DiskBytes   int64    `json:"diskBytes,omitempty"`
	SharedDisks []string `json:"sharedDisks,omitempty"`
	// Stage is the last escalation stage reached; Notes say why each
	// escalation happened.
	Stage    string   `json:"stage,omitempty"`
	Notes    []string `json:"notes,omitempty"`
	PostCopy bool     `json:"postCopy,omitempty"`
	// TLS: the streams between the hosts were encrypted.
	TLS bool `json:"tls,omitempty"`
}

// Migration moves one VM from Source to Target. It is stored at
// /vpool/migrations/<id> (Meta.Name is the id, Meta.Project the VM's
// project) and driven by the migration controller through its phases,
// so it survives the restart of any process.
type Migration struct {
	Meta
	VM      string           `json:"vm"` // the VM's name (in Meta.Project)
	VMUID   string           `json:"vmUid,omitempty"`
	Source  string           `json:"source"`
	Target  string           `json:"target"`
	Mode    MigrationMode    `json:"mode"`
	Phase   MigrationPhase   `json:"phase"`
	Options MigrationOptions `json:"options"`
	// Spec is the VM's spec when the migration began: what the target
	// prepares for and what its capacity hold counts.
	Spec VMSpec `json:"spec"`
	// Drain names the host being drained when a drain asked for this.
	Drain string `json:"drain,omitempty"`
	// Explanation says why the scheduler chose Target (when it chose).
	Explanation *Explanation `json:"explanation,omitempty"`

	Progress MigrationProgress `json:"progress"`
	Result   *MigrationResult  `json:"result,omitempty"`
	Reason   string            `json:"reason,omitempty"` // why it failed or was cancelled

	// Facts reported by the agents; the controller acts on them.
	TargetAddr  string `json:"targetAddr,omitempty"`  // where the target listens (MigrateIn)
	TargetError string `json:"targetError,omitempty"` // the target could not prepare
	SourceError string `json:"sourceError,omitempty"` // the transfer failed or was aborted
	// SourceDone: the source's MigrateOut returned success.
	SourceDone bool `json:"sourceDone,omitempty"`
	// SourceGone: the source no longer has the VM (and lost track of the
	// transfer, e.g. its agent restarted).
	SourceGone bool `json:"sourceGone,omitempty"`
	// Arrived: the target lists the VM as its own (the transfer completed
	// there) although it is not yet assigned to it.
	Arrived bool `json:"arrived,omitempty"`
	// SourceUnsure: the source sent the switchover but never heard back;
	// its copy waits paused. The target's Arrived or TargetAbsent decides.
	SourceUnsure bool `json:"sourceUnsure,omitempty"`
	TargetAbsent bool `json:"targetAbsent,omitempty"`
	// Abort is set by the controller (cancel, target lost, timeout) while
	// transferring: the source must stop and confirm with SourceError.
	Abort string `json:"abort,omitempty"`
	// CancelRequested is set by the API.
	CancelRequested bool `json:"cancelRequested,omitempty"`
	// HoldTarget: capacity is reserved on the target's allocation.
	HoldTarget bool `json:"holdTarget,omitempty"`
	// SourceCleaned / TargetCleaned: after a final phase, the side that
	// must drop a copy (the source after completion, the target after a
	// failure) confirmed it holds none.
	SourceCleaned bool `json:"sourceCleaned,omitempty"`
	TargetCleaned bool `json:"targetCleaned,omitempty"`

	StartedAt  *time.Time `json:"startedAt,omitempty"`  // transfer began
	FinishedAt *time.Time `json:"finishedAt,omitempty"` // reached a final phase
}

// VMKey is "project/name" of the VM that moves.
func (m *Migration) VMKey() string { return m.Project + "/" + m.VM }

// ID is the migration's id (its Meta.Name).
func (m *Migration) ID() string { return m.Name }

// HostDrain records an operator's drain of a host (Host.Drain).
type HostDrain struct {
	MaxConcurrent int       `json:"maxConcurrent"`
	StartedAt     time.Time `json:"startedAt"`
	// Blocked lists VMs that cannot move now and why.
	Blocked []DrainBlocked `json:"blocked,omitempty"`
	// Done is set once no VM is left on the host.
	Done bool `json:"done,omitempty"`
}

// DrainBlocked is one VM a drain cannot move.
type DrainBlocked struct {
	VM     string `json:"vm"` // project/name
	Reason string `json:"reason"`
}

// DefaultDrainConcurrency is how many migrations a drain runs at once
// from one host when the operator gives no number.
const DefaultDrainConcurrency = 2

// EffectiveMigrationOptions merges a request's overrides over the VM's
// spec over the defaults (Policy.MigrationOptions with the cluster's
// policy is the same with the cluster's limit between the two).
func EffectiveMigrationOptions(spec *VMSpec, downtimeMs *int, postCopy *bool) (MigrationOptions, error) {
	return (*Policy)(nil).MigrationOptions(spec, downtimeMs, postCopy)
}

// MigrationOptions merges a request's overrides over the VM's spec over
// the cluster policy p (nil: none) over the defaults: the downtime limit
// is the request's, else the VM's, else the cluster's, else
// DefaultDowntimeLimitMs; the multifd channels the VM's, else the
// cluster's (which a migration allowed post-copy leaves to the host:
// post-copy needs one stream), else the source host's choice.
func (p *Policy) MigrationOptions(spec *VMSpec, downtimeMs *int, postCopy *bool) (MigrationOptions, error) {
	o := MigrationOptions{DowntimeLimitMs: DefaultDowntimeLimitMs}
	if p != nil && p.MigrationDowntimeLimitMs > 0 {
		o.DowntimeLimitMs = p.MigrationDowntimeLimitMs
	}
	if p != nil {
		o.MultifdChannels = p.MigrationMultifdChannels
	}
	vmChannels := false
	if m := spec.Migration; m != nil {
		if m.DowntimeLimitMs > 0 {
			o.DowntimeLimitMs = m.DowntimeLimitMs
		}
		o.AllowPostCopy = m.AllowPostCopy
		if m.MultifdChannels > 0 {
			o.MultifdChannels, vmChannels = m.MultifdChannels, true
		}
	}
	if downtimeMs != nil {
		if *downtimeMs <= 0 || *downtimeMs > MaxDowntimeLimitMs {
			return o, fieldErr("downtimeLimitMs", "must be 1 to %d ms (got %d)", MaxDowntimeLimitMs, *downtimeMs)
		}
		o.DowntimeLimitMs = *downtimeMs
	}
	if postCopy != nil {
		o.AllowPostCopy = *postCopy
	}
	if o.AllowPostCopy && o.MultifdChannels > 1 {
		if vmChannels {
			return o, fieldErr("allowPostCopy", "post-copy needs one stream and the VM sets spec.migration.multifdChannels %d: migrate without allowPostCopy, or set the VM's multifdChannels to 0 or 1",
				o.MultifdChannels)
		}
		o.MultifdChannels = 0
	}
	return o, nil
}

// String is a one-line summary.
func (m *Migration) String() string {
	return fmt.Sprintf("migration %s of %s/%s %s → %s (%s, %s)", m.Name, m.Project, m.VM, m.Source, m.Target, m.Mode, m.Phase)
}
