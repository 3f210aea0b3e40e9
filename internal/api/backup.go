package api

import "github.com/vpool/vpool/internal/model"

// BackupRoutes are the backup endpoints of the user API (docs/backup.md).
var BackupRoutes = []Route{
	{"GET", "/api/v1/backup/repos", "list backup repositories"},
	{"POST", "/api/v1/backup/repos", "register a backup repository: create one in an empty directory, or open an existing one"},
	{"GET", "/api/v1/backup/repos/{name}", "show a backup repository"},
	{"DELETE", "/api/v1/backup/repos/{name}", "forget a backup repository (its data stays)"},
	{"GET", "/api/v1/backup/repos/{name}/catalog", "the backups a repository holds, read from its indexes (another cluster's too)"},
	{"GET", "/api/v1/backup/policy", "the backup schedule and retention of a project (?cluster=true: the cluster's)"},
	{"PUT", "/api/v1/backup/policy", "set the backup schedule and retention of a project (?cluster=true: the cluster's)"},
	{"GET", "/api/v1/backups", "list backups (?project=, ?vm=)"},
	{"POST", "/api/v1/backups", "back up a VM now"},
	{"GET", "/api/v1/backups/{id}", "show a backup with its progress"},
	{"DELETE", "/api/v1/backups/{id}", "delete a finished backup (its index; GC frees its chunks)"},
	{"POST", "/api/v1/backups/{id}/restore", "restore a backup as a new VM (as) or over a stopped one (force)"},
	{"GET", "/api/v1/restores", "list restores"},
	{"GET", "/api/v1/restores/{id}", "show a restore with its progress"},
	{"GET", "/api/v1/backup/tasks", "list repository tasks (verify, gc, sync)"},
	{"POST", "/api/v1/backup/tasks", "verify a repository, collect its garbage or sync it to another"},
	{"GET", "/api/v1/backup/tasks/{id}", "show a repository task with its progress and result"},
	{"POST", "/api/v1/dr/failover", "restore a project's latest backups from a repository as VMs of this cluster"},
}

// BackupAgentRoutes are the agent's side of backups and restores.
var BackupAgentRoutes = []Route{
	{"GET", "/agent/v1/backups", "backups and restores the calling host runs (long poll)"},
	{"PUT", "/agent/v1/backups/{project}/{name}", "report a backup's progress or outcome"},
	{"PUT", "/agent/v1/restores/{project}/{name}", "report a restore's progress or outcome"},
}

// BackupRepoCreateRequest registers a repository. Key is the text of the
// repository's key file (vpool backup repo create reads it from a file
// or VPOOL_BACKUP_KEY, never from the command line).
type BackupRepoCreateRequest struct {
	Name string `json:"name"`
	// Path (a directory) or URL (an S3-compatible object store,
	// s3://BUCKET[/PREFIX]?endpoint=HOST:PORT[&insecure=1][&region=R]).
	Path string `json:"path,omitempty"`
	URL  string `json:"url,omitempty"`
	Key  string `json:"key"`
	// S3AccessKey and S3SecretKey sign requests to an object store
	// (sealed in the store like the key; never shown).
	S3AccessKey string `json:"s3AccessKey,omitempty"`
	S3SecretKey string `json:"s3SecretKey,omitempty"`
	// ReadOnly registers it for restores only (another cluster's
	// repository is registered read-only whatever this says).
	ReadOnly bool `json:"readOnly,omitempty"`
}

// BackupRepoInfo is a repository as the API shows it (never its key).
type BackupRepoInfo struct {
	Name      string `json:"name"`
	Path      string `json:"path,omitempty"` // admins only
	URL       string `json:"url,omitempty"`  // admins only
	ReadOnly  bool   `json:"readOnly,omitempty"`
	RepoID    string `json:"repoId"`
	Owner     string `json:"owner"`
	KeyID     string `json:"keyId"`
	ChunkSize int    `json:"chunkSize"`
	// Created says whether registering created the repository.
	Created bool `json:"created,omitempty"`
}

// BackupRepoList is the answer of GET /backup/repos.
type BackupRepoList struct {
	Items []BackupRepoInfo `json:"items"`
}

// CatalogEntry is one backup read from a repository's index.
type CatalogEntry struct {
	ID        string `json:"id"`
	Cluster   string `json:"cluster"`
	Project   string `json:"project"`
	VM        string `json:"vm"`
	Kind      string `json:"kind"`
	Parent    string `json:"parent,omitempty"`
	CreatedAt string `json:"createdAt"`
	DiskBytes int64  `json:"diskBytes"`
	NewBytes  int64  `json:"newBytes"`
}

// Catalog is the answer of GET /backup/repos/{name}/catalog.
type Catalog struct {
	Items []CatalogEntry `json:"items"`
	// Unreadable lists indexes that could not be opened, by id.
	Unreadable []string `json:"unreadable,omitempty"`
}

// BackupPolicyRequest sets (or with Clear, removes) a policy.
type BackupPolicyRequest struct {
	model.BackupPolicy
	Clear bool `json:"clear,omitempty"`
}

// BackupCreateRequest backs up a VM now.
type BackupCreateRequest struct {
	VM string `json:"vm"`
	// Repo defaults to the project's (or the cluster's) policy repository.
	Repo string `json:"repo,omitempty"`
	// Limits default to the policy's.
	Limits *model.BackupLimits `json:"limits,omitempty"`
}

// BackupList is the answer of GET /backups.
type BackupList struct {
	Items []model.Backup `json:"items"`
}

// RestoreRequest restores a backup: into a new VM named As, or over the
// stopped VM the backup was taken of (Force). BootCheck starts the VM
// and waits for ReadyMarker on its console; Start starts it without
// waiting.
type RestoreRequest struct {
	As          string `json:"as,omitempty"`
	Force       bool   `json:"force,omitempty"`
	BootCheck   bool   `json:"bootCheck,omitempty"`
	Start       bool   `json:"start,omitempty"`
	ReadyMarker string `json:"readyMarker,omitempty"`
	// BootCheckBy: auto (default), agent or marker (model.BootCheck*).
	BootCheckBy string `json:"bootCheckBy,omitempty"`
	// Repo restores from a repository's catalog entry instead of this
	// cluster's backup record (a synced or another cluster's repository).
	Repo string `json:"repo,omitempty"`
}

// RestoreList is the answer of GET /restores.
type RestoreList struct {
	Items []model.Restore `json:"items"`
}

// BackupTaskRequest starts a repository task.
type BackupTaskRequest struct {
	Kind    string   `json:"kind"` // verify | gc | sync
	Repo    string   `json:"repo"`
	Target  string   `json:"target,omitempty"`
	Backups []string `json:"backups,omitempty"`
}

// BackupTaskList is the answer of GET /backup/tasks.
type BackupTaskList struct {
	Items []model.BackupTask `json:"items"`
}

// FailoverRequest restores the latest backup of every VM of Project in
// Repo (a repository registered here, usually another cluster's) as VMs
// of this cluster; the project is created when missing.
type FailoverRequest struct {
	Project   string `json:"project"`
	Repo      string `json:"repo"`
	BootCheck bool   `json:"bootCheck,omitempty"`
	// ReadyMarker of the boot check (default the test guest's).
	ReadyMarker string `json:"readyMarker,omitempty"`
	// BootCheckBy: auto (default), agent or marker (model.BootCheck*).
	BootCheckBy string `json:"bootCheckBy,omitempty"`
}

// FailoverResponse names the failover and its restores.
type FailoverResponse struct {
	ID       string          `json:"id"`
	Restores []model.Restore `json:"restores"`
	// Skipped names VMs not restored, with why.
	Skipped map[string]string `json:"skipped,omitempty"`
}

// RepoAccess is what a host needs to open a repository: sent only to
// the host that runs the job, over the agent's mutual-TLS channel.
type RepoAccess struct {
	Name string `json:"name"`
	Path string `json:"path,omitempty"`
	// URL and the S3 keys locate an object-store repository.
	URL         string `json:"url,omitempty"`
	S3AccessKey string `json:"s3AccessKey,omitempty"`
	S3SecretKey string `json:"s3SecretKey,omitempty"`
	// Key is the repository key as a key file holds it.
	Key      string `json:"key"`
	Cluster  string `json:"cluster"`
	ReadOnly bool   `json:"readOnly,omitempty"`
}

// AgentBackupJob is a backup the calling host runs.
type AgentBackupJob struct {
	Backup model.Backup `json:"backup"`
	Repo   RepoAccess   `json:"repo"`
}

// AgentRestoreJob is a restore the calling host runs.
type AgentRestoreJob struct {
	Restore model.Restore `json:"restore"`
	Repo    RepoAccess    `json:"repo"`
}

// AgentBackups is the answer of GET /agent/v1/backups.
type AgentBackups struct {
	Revision int64             `json:"revision"`
	Backups  []AgentBackupJob  `json:"backups"`
	Restores []AgentRestoreJob `json:"restores"`
}

// BackupReport is an agent's word on a backup: progress while running,
// then the outcome.
type BackupReport struct {
	Phase    model.BackupPhase `json:"phase"`
	Progress model.Progress    `json:"progress"`
	Kind     string            `json:"kind,omitempty"`
	Parent   string            `json:"parent,omitempty"`
	Reason   string            `json:"reason,omitempty"`
	Stats    model.BackupStats `json:"stats"`
	Error    string            `json:"error,omitempty"`
	// Consistency and ConsistencyNote: see model.Backup.
	Consistency     string `json:"consistency,omitempty"`
	ConsistencyNote string `json:"consistencyNote,omitempty"`
}

// RestoreReport is an agent's word on a restore.
type RestoreReport struct {
	Phase         model.RestorePhase `json:"phase"`
	Progress      model.Progress     `json:"progress"`
	Error         string             `json:"error,omitempty"`
	BytesRestored int64              `json:"bytesRestored,omitempty"`
	RestoreMs     int64              `json:"restoreMs,omitempty"`
	BootMs        int64              `json:"bootMs,omitempty"`
	BootCheckedBy string             `json:"bootCheckedBy,omitempty"`
}

// BackupKeyPrefix starts the one line of a repository key file:
// BackupKeyPrefix + base64(32 random bytes). The repository package
// reads the same format (a server test checks that they agree).
const BackupKeyPrefix = "vpool-backup-key-v1:"
