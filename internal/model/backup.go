package model

import (
	"path/filepath"
	"time"
)

// BackupRepo is a registered backup repository (docs/backup.md): a
// directory reachable by the servers and the hosts, or a bucket of an
// S3-compatible object store. Stored at /vpool/backup/repos/<name>;
// cluster-wide (Meta.Project empty).
type BackupRepo struct {
	Meta
	// Path is the repository's directory (absolute); empty for an object
	// store.
	Path string `json:"path"`
	// URL locates an object-store repository:
	// s3://BUCKET[/PREFIX]?endpoint=HOST:PORT[&insecure=1][&region=R].
	URL string `json:"url,omitempty"`
	// SealedCredentials are the object store's access and secret keys,
	// sealed like SealedKey; never shown by the API.
	SealedCredentials []byte `json:"sealedCredentials,omitempty"`
	// ReadOnly: the repository belongs to another cluster (or was
	// registered so); it serves restores, verification and failover only.
	ReadOnly bool `json:"readOnly,omitempty"`
	// RepoID, Owner (the owning cluster), KeyID and ChunkSize are read
	// from the repository when it is registered.
	RepoID    string `json:"repoId"`
	Owner     string `json:"owner"`
	KeyID     string `json:"keyId"`
	ChunkSize int    `json:"chunkSize"`
	// SealedKey is the repository key sealed with the servers' seal key
	// (AES-256-GCM, bound to the name); never shown by the API.
	SealedKey []byte `json:"sealedKey,omitempty"`
}

// BackupPhase is where a backup is in its life.
type BackupPhase string

// Backup phases.
const (
	BackupPending   BackupPhase = "pending"
	BackupRunning   BackupPhase = "running"
	BackupCompleted BackupPhase = "completed"
	BackupFailed    BackupPhase = "failed"
)

// Final reports whether the phase is an end.
func (p BackupPhase) Final() bool { return p == BackupCompleted || p == BackupFailed }

// Backup is one backup of a VM. Stored at /vpool/backups/<project>/<name>;
// Meta.Name is its id (also the index name in the repository and the
// driver's checkpoint).
type Backup struct {
	Meta
	VM   string `json:"vm"`
	Repo string `json:"repo"`
	Host string `json:"host,omitempty"`
	// Parent is the backup read against (incremental); the agent falls
	// back to full, with Reason, when it cannot.
	Parent string      `json:"parent,omitempty"`
	Kind   string      `json:"kind,omitempty"` // full | incremental (once known)
	Reason string      `json:"reason,omitempty"`
	Phase  BackupPhase `json:"phase"`
	// Scheduled: made by a schedule (not by a user).
	Scheduled  bool        `json:"scheduled,omitempty"`
	Progress   Progress    `json:"progress"`
	Stats      BackupStats `json:"stats"`
	Error      string      `json:"error,omitempty"`
	StartedAt  *time.Time  `json:"startedAt,omitempty"`
	FinishedAt *time.Time  `json:"finishedAt,omitempty"`
	// Spec is the VM's spec when the backup was asked for (restores).
	Spec VMSpec `json:"spec"`
	// Limits bound the backup's reads and CPU (from the request or the
	// policy).
	Limits BackupLimits `json:"limits,omitzero"`
	// Consistency of the point, once known: ConsistencyApplication (the
	// guest agent froze the file systems) or ConsistencyCrash (as a
	// power cut would leave the disks; ConsistencyNote says why).
	Consistency     string `json:"consistency,omitempty"`
	ConsistencyNote string `json:"consistencyNote,omitempty"`
}

// Backup consistencies.
const (
	ConsistencyApplication = "application"
	ConsistencyCrash       = "crash"
)

// BackupLimits bound what one backup takes from its host and guest
// (docs/backup.md). Zero values: no limit, the default workers.
type BackupLimits struct {
	// RateMiBps caps the disk reads (MiB/s); 0: unlimited.
	RateMiBps int `json:"rateMiBps,omitempty"`
	// Workers is how many chunks are compressed, sealed and stored at
	// once (1..MaxBackupWorkers); 0: the default (2).
	Workers int `json:"workers,omitempty"`
}

// Bounds of BackupLimits.
const (
	MaxBackupRateMiBps = 100000
	MaxBackupWorkers   = 16
)

// Progress is done of total bytes.
type Progress struct {
	Done  int64 `json:"done"`
	Total int64 `json:"total"`
}

// BackupStats are a finished backup's figures.
type BackupStats struct {
	DiskBytes   int64 `json:"diskBytes"`
	ReadBytes   int64 `json:"readBytes"`
	ParentBytes int64 `json:"parentBytes,omitempty"`
	NewBytes    int64 `json:"newBytes"`
	Chunks      int   `json:"chunks"`
	NewChunks   int   `json:"newChunks"`
	DurationMs  int64 `json:"durationMs"`
}

// BackupPolicy is a schedule with retention. The cluster's applies to
// every project without its own. Stored at /vpool/backup/policies/<project>
// ("_cluster" for the cluster's).
type BackupPolicy struct {
	Repo string `json:"repo"`
	// Every is the schedule's interval ("6h", "30m"); empty or "0"
	// disables the schedule (retention still applies to what exists).
	Every string `json:"every,omitempty"`
	// SyncTo names a repository (same key) that every completed backup is
	// copied to (a sync task after each): the second site's copy.
	SyncTo string `json:"syncTo,omitempty"`
	Retention
	// Limits apply to every backup the schedule makes.
	Limits BackupLimits `json:"limits,omitzero"`
}

// Retention says which completed backups of a VM to keep; the others
// are pruned. All zero keeps everything.
type Retention struct {
	KeepLast    int `json:"keepLast,omitempty"`
	KeepDaily   int `json:"keepDaily,omitempty"`
	KeepWeekly  int `json:"keepWeekly,omitempty"`
	KeepMonthly int `json:"keepMonthly,omitempty"`
}

// Limits of backup objects.
const (
	MinBackupEvery = time.Minute
	MaxKeep        = 1000
)

// Interval is Every parsed (0 when empty).
func (p *BackupPolicy) Interval() (time.Duration, error) {
	if p.Every == "" {
		return 0, nil
	}
	return time.ParseDuration(p.Every)
}

// Validate checks a policy's fields (the repository's existence is the
// server's to check).
func (p *BackupPolicy) Validate() error {
	if err := ValidName("repo", p.Repo); err != nil {
		return err
	}
	if p.SyncTo != "" {
		if err := ValidName("syncTo", p.SyncTo); err != nil {
			return err
		}
		if p.SyncTo == p.Repo {
			return fieldErr("syncTo", "must be another repository than repo")
		}
	}
	d, err := p.Interval()
	if err != nil || d != 0 && (d < MinBackupEvery || d > 366*24*time.Hour) {
		return fieldErr("every", "must be a duration like 6h, 0 (no schedule), or between %s and 366 days", MinBackupEvery)
	}
	for f, n := range map[string]int{"keepLast": p.KeepLast, "keepDaily": p.KeepDaily, "keepWeekly": p.KeepWeekly, "keepMonthly": p.KeepMonthly} {
		if n < 0 || n > MaxKeep {
			return fieldErr(f, "must be between 0 and %d", MaxKeep)
		}
	}
	return p.Limits.Validate("limits.")
}

// Validate checks the limits; prefix names the fields' place (e.g.
// "limits.").
func (l BackupLimits) Validate(prefix string) error {
	if l.RateMiBps < 0 || l.RateMiBps > MaxBackupRateMiBps {
		return fieldErr(prefix+"rateMiBps", "must be between 0 (no limit) and %d MiB/s", MaxBackupRateMiBps)
	}
	if l.Workers < 0 || l.Workers > MaxBackupWorkers {
		return fieldErr(prefix+"workers", "must be between 0 (the default, 2) and %d", MaxBackupWorkers)
	}
	return nil
}

// ValidRepoPath checks a repository directory: absolute, clean, no NUL.
func ValidRepoPath(p string) error {
	switch {
	case p == "":
		return fieldErr("path", "is required")
	case len(p) > 1024:
		return fieldErr("path", "is longer than 1024 bytes")
	case !filepath.IsAbs(p) || filepath.Clean(p) != p:
		return fieldErr("path", "%s must be an absolute, clean path", quoteShort(p))
	}
	for _, c := range p {
		if c == 0 || c == '\n' {
			return fieldErr("path", "holds a NUL or a line break")
		}
	}
	return nil
}

// RestorePhase is where a restore is in its life.
type RestorePhase string

// Restore phases.
const (
	RestorePending   RestorePhase = "pending"   // the target VM is being created/placed
	RestoreRunning   RestorePhase = "restoring" // the host writes the disks
	RestoreBooting   RestorePhase = "booting"   // started, waiting for its ready marker
	RestoreCompleted RestorePhase = "completed"
	RestoreFailed    RestorePhase = "failed"
)

// Final reports whether the phase is an end.
func (p RestorePhase) Final() bool { return p == RestoreCompleted || p == RestoreFailed }

// Restore writes a backup into a VM: a new one (restore --as) or a
// stopped one (--force). Stored at /vpool/restores/<project>/<name>.
type Restore struct {
	Meta
	Backup string `json:"backup"`
	Repo   string `json:"repo"`
	// VM is the target; Host is where it sits once placed.
	VM   string `json:"vm"`
	Host string `json:"host,omitempty"`
	// BootCheck: start the VM afterwards and wait for ReadyMarker on its
	// console (the test guest's marker; a cloud-init phone-home line for
	// real images). Start without BootCheck starts it without waiting.
	BootCheck   bool   `json:"bootCheck,omitempty"`
	Start       bool   `json:"start,omitempty"`
	ReadyMarker string `json:"readyMarker,omitempty"`
	// BootCheckBy is how the boot check proves the guest up:
	// BootCheckAuto (default), BootCheckAgent or BootCheckMarker.
	BootCheckBy string `json:"bootCheckBy,omitempty"`
	// BootCheckedBy is what proved it: BootCheckAgent (the QEMU guest
	// agent answered a ping) or BootCheckMarker (the ready marker on the
	// console).
	BootCheckedBy string       `json:"bootCheckedBy,omitempty"`
	Phase         RestorePhase `json:"phase"`
	Progress      Progress     `json:"progress"`
	Error         string       `json:"error,omitempty"`
	// BytesRestored, RestoreMs and BootMs are the figures of a finished
	// restore (disk write time; start to ready marker).
	BytesRestored int64      `json:"bytesRestored,omitempty"`
	RestoreMs     int64      `json:"restoreMs,omitempty"`
	BootMs        int64      `json:"bootMs,omitempty"`
	FinishedAt    *time.Time `json:"finishedAt,omitempty"`
	// Failover names the failover this restore belongs to.
	Failover string `json:"failover,omitempty"`
}

// Boot-check modes: auto takes whichever comes first, the guest agent's
// answer (real images with qemu-ga) or the ready marker (the test
// guest, a cloud-init phone-home line).
const (
	BootCheckAuto   = "auto"
	BootCheckAgent  = "agent"
	BootCheckMarker = "marker"
)

// DefaultReadyMarker is what a boot check waits for by default.
const DefaultReadyMarker = "VPOOL-GUEST-READY"

// BackupTask is a repository job run by the leader: verify, gc or sync.
// Stored at /vpool/backup/tasks/<name>.
type BackupTask struct {
	Meta
	Kind     string      `json:"kind"` // verify | gc | sync
	Repo     string      `json:"repo"`
	Target   string      `json:"target,omitempty"` // sync: the repository copied to
	Backups  []string    `json:"backups,omitempty"`
	Phase    BackupPhase `json:"phase"`
	Progress Progress    `json:"progress"` // chunks
	// Result is the operation's report (JSON); Problems lists what verify
	// found (a chunk or index, and the backups that use it).
	Result     map[string]any `json:"result,omitempty"`
	Problems   []string       `json:"problems,omitempty"`
	Error      string         `json:"error,omitempty"`
	FinishedAt *time.Time     `json:"finishedAt,omitempty"`
}
