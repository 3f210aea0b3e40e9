package hypervisor

import "context"

// Backupper is an optional capability: point-in-time reads of a VM's
// disks with change tracking (for backups), and writes into a stopped
// VM's disks (for restores). The repository side lives elsewhere
// (internal/backup); a driver only exposes disks.
//
// Change tracking works by checkpoints. OpenBackup with Checkpoint C
// starts tracking the changes after this point under C; with Since P (a
// checkpoint of an earlier backup that was kept) each disk reports the
// changes since P (Incremental), or reports why it cannot (Reason) and
// is read whole. Close(keep=true) makes C the new base and drops P;
// Close(keep=false) — and an OpenBackup after a session that never closed
// (the agent died) — folds C back into P, so P still covers every change
// since its own backup. Checkpoints survive VM restarts.
type Backupper interface {
	// OpenBackup opens a consistent point of every disk of a running or
	// stopped VM. The guest keeps running and its writes after the
	// point do not show in the session.
	OpenBackup(ctx context.Context, id string, req BackupRequest) (BackupSession, error)
	// OpenRestore opens the disks of a stopped VM for writing; change
	// tracking of the VM is dropped (its next backup is full).
	// ErrBadState when the VM runs.
	OpenRestore(ctx context.Context, id string) (RestoreSession, error)
}

// BackupRequest names the checkpoints of one backup session.
type BackupRequest struct {
	// Checkpoint is the new checkpoint's name (letters, digits, '-').
	Checkpoint string
	// Since is the checkpoint of the backup to read changes against;
	// empty for a full backup.
	Since string
	// Freeze asks for an application-consistent point: when the guest
	// has an agent, its file systems are flushed and frozen around the
	// point and thawed right after (always, also on errors). Without an
	// agent the point is crash-consistent; the session says which
	// (BackupConsistencyReporter).
	Freeze bool
}

// BackupConsistency says what a session's point in time holds.
type BackupConsistency struct {
	// Application: the guest agent froze the guest's file systems at
	// the point (their data was flushed); otherwise the disks are as a
	// power cut would leave them (crash-consistent).
	Application bool
	// FrozenFilesystems is how many file systems the agent froze.
	FrozenFilesystems int
	// Reason says why the point is crash-consistent (empty when it is
	// application-consistent or no freeze was asked).
	Reason string
}

// BackupConsistencyReporter is implemented by sessions that can freeze
// the guest; a session without it is crash-consistent.
type BackupConsistencyReporter interface {
	Consistency() BackupConsistency
}

// BackupDisk describes one disk of a session.
type BackupDisk struct {
	Name string
	Size int64
	// Incremental: Extents lists the changes since BackupRequest.Since.
	// Otherwise Extents lists what is allocated, and Reason says why the
	// disk is read whole (empty when no Since was asked).
	Incremental bool
	Reason      string
}

// Extent is a range of a disk. Zero: it reads as zeroes (no need to read).
type Extent struct {
	Offset int64
	Length int64
	Zero   bool
}

// BackupSession is one consistent point of a VM's disks.
type BackupSession interface {
	Disks() []BackupDisk
	// Extents lists, in order and without overlap, the ranges of disk to
	// back up (see BackupDisk.Incremental); ranges not listed are
	// unchanged (incremental) or zero (full).
	Extents(ctx context.Context, disk string) ([]Extent, error)
	// ReadAt reads len(p) bytes of disk at off, as of the point in time.
	ReadAt(ctx context.Context, disk string, p []byte, off int64) error
	// Close ends the session; keep says whether the backup was stored
	// (the new checkpoint becomes the base) or not (see Backupper).
	Close(ctx context.Context, keep bool) error
}

// RestoreSession writes the disks of a stopped VM.
type RestoreSession interface {
	Disks() []BackupDisk
	WriteAt(ctx context.Context, disk string, p []byte, off int64) error
	// WriteZeroes makes a range read as zeroes.
	WriteZeroes(ctx context.Context, disk string, off, length int64) error
	// Close flushes and releases the disks.
	Close(ctx context.Context) error
}
