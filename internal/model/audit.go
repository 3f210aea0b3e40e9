package model

import "time"

// The audit trail (docs/audit.md): every API call that changes
// something and every decision the control plane takes on its own is an
// AuditRecord. Records form a hash chain — each holds the SHA-256 of the
// stored bytes of the one before — and a record of kind
// AuditKindCheckpoint every so many records or minutes carries an ed25519
// signature over the chain so far. internal/audit links and verifies;
// internal/auditlog appends to the store and exports to files.

// Audit record kinds.
const (
	// AuditKindAPI: a call of the user API that changes something (or
	// tried to), or opened a VM's console.
	AuditKindAPI = "api"
	// AuditKindDecision: a decision of the control plane (placement,
	// move, power, drain, HA restart).
	AuditKindDecision = "decision"
	// AuditKindCheckpoint: a signature over the chain up to the record
	// before it.
	AuditKindCheckpoint = "checkpoint"
	// AuditKindGap: records were pruned from the store before they were
	// exported (the exporter fell behind the store's hard bound).
	AuditKindGap = "gap"
)

// Decision actions (AuditRecord.Action of AuditKindDecision records).
const (
	AuditPlace       = "placement"    // a VM placed on Host
	AuditMoveStart   = "move.start"   // a migration to Host started (balancer, drain, user)
	AuditMoved       = "move.done"    // a VM moved From → Host
	AuditMoveEnd     = "move.end"     // a migration ended without moving the VM
	AuditHostStandby = "host.standby" // the power controller put a host to standby
	AuditHostWake    = "host.wake"    // the power controller woke a host
	AuditHostDrain   = "host.drain"   // a drain finished or is blocked
	AuditHARestart   = "ha.restart"   // a VM restarted on Host after its host failed
	AuditHostFenced  = "host.fenced"  // a failed host fenced
	// A scaling group's decision is "group." + its kind (scale-out,
	// scale-in, bounds, replace, repair); a load balancer's host choice
	// is AuditLBPlaced, AuditLBMoved or AuditLBUnplaced.
	AuditGroupPrefix = "group."
	AuditLBPlaced    = "lb.placed"
	AuditLBMoved     = "lb.moved"
	AuditLBUnplaced  = "lb.unplaced"
)

// AuditRecord is one entry of the audit trail. Its stored bytes are what
// the chain hashes: a record is never rewritten.
type AuditRecord struct {
	Seq  int64     `json:"seq"`
	Prev string    `json:"prev"` // hex SHA-256 of the stored bytes of record Seq-1
	Time time.Time `json:"time"`
	Kind string    `json:"kind"`
	// Server is the server that wrote the record.
	Server string `json:"server,omitempty"`
	// Actor is who called the API (api records).
	Actor *AuditActor `json:"actor,omitempty"`
	// Action is the route ("POST /api/v1/vms") or the decision (Audit*).
	Action  string `json:"action,omitempty"`
	Project string `json:"project,omitempty"`
	// Object is what was acted on: vm/<project>/<name>, host/<name>,
	// token/<id>, project/<name> ...
	Object string `json:"object,omitempty"`
	// Outcome is "ok", "refused" or "failed"; Status the HTTP status of
	// an api record; Code the api.Error code of a refusal.
	Outcome string `json:"outcome,omitempty"`
	Status  int    `json:"status,omitempty"`
	Code    string `json:"code,omitempty"`
	// Reason says why a decision was taken (or the field an API refusal
	// named). Never a secret: records are written from metadata only.
	Reason string `json:"reason,omitempty"`
	// Host is where a decision put the VM (placement, move target,
	// restart); From is where it came from.
	Host string `json:"host,omitempty"`
	From string `json:"from,omitempty"`
	// Constraint is the VM's locality constraint (the labels a host must
	// have) and HostLabels the chosen host's values of those labels at
	// the time of the decision: the compliance report reads both.
	Constraint map[string]string `json:"constraint,omitempty"`
	HostLabels map[string]string `json:"hostLabels,omitempty"`
	// Checkpoint is set on AuditKindCheckpoint records.
	Checkpoint *AuditSignature `json:"checkpoint,omitempty"`
	// Gap is set on AuditKindGap records: the range of records that were
	// pruned unexported.
	Gap *AuditGap `json:"gap,omitempty"`
}

// AuditActor is the caller of an API request: never its secret.
type AuditActor struct {
	TokenID string `json:"tokenId,omitempty"`
	Role    Role   `json:"role,omitempty"`
	// Project is the project the token is bound to ("" cluster-wide).
	Project string `json:"project,omitempty"`
	// Scopes are the token's scopes, when narrower than its role.
	Scopes []string `json:"scopes,omitempty"`
	// Source is the client's address (host:port as the server saw it).
	Source string `json:"source,omitempty"`
}

// AuditSignature is an ed25519 signature over the chain up to record Seq,
// whose hash is Hash (internal/audit.SignedMessage says what is signed).
type AuditSignature struct {
	Seq   int64     `json:"seq"`
	Hash  string    `json:"hash"`
	Time  time.Time `json:"time"`
	KeyID string    `json:"keyId"`
	Sig   string    `json:"sig"` // base64
}

// AuditGap names records lost before they were exported.
type AuditGap struct {
	From int64 `json:"from"`
	To   int64 `json:"to"`
}

// AuditHead is the stored head of the chain: the last record's sequence
// number and hash, signed at every append and re-signed every
// RefreshSeconds while nothing is appended, so that a head rolled back to
// an older one (and the records after it removed) shows by its age.
type AuditHead struct {
	AuditSignature
	// RefreshSeconds is how often the head is re-signed when idle.
	RefreshSeconds int `json:"refreshSeconds"`
	// Checkpoint and CheckpointAt are the last checkpoint record and its
	// time: appenders add one every so many records or minutes.
	Checkpoint   int64     `json:"checkpoint,omitempty"`
	CheckpointAt time.Time `json:"checkpointAt,omitempty"`
}

// AuditKey is the servers' audit signing key as stored: the public key
// in clear, the private key sealed with the CA seal key.
type AuditKey struct {
	KeyID     string    `json:"keyId"`
	PublicKey string    `json:"publicKey"`        // base64 ed25519 public key
	Sealed    string    `json:"sealed,omitempty"` // base64
	CreatedAt time.Time `json:"createdAt"`
}

// ComplianceVM is one VM in the data-locality compliance report: its
// constraint, the hosts it ran on (from the audit trail's decisions) and
// any breach of the constraint.
type ComplianceVM struct {
	Project    string            `json:"project"`
	VM         string            `json:"vm"`
	Constraint map[string]string `json:"constraint,omitempty"`
	// Host is where the VM is now ("" placed nowhere, or deleted).
	Host    string     `json:"host,omitempty"`
	Deleted bool       `json:"deleted,omitempty"`
	Stays   []HostStay `json:"stays"`
	Breach  bool       `json:"breach"`
	Reasons []string   `json:"reasons,omitempty"`
}

// HostStay is a span of time a VM spent on one host. Until is zero while
// it is there; Recorded says the stay's start is in the audit trail (a
// stay from before the trail's window is known from the VM's record).
type HostStay struct {
	Host       string            `json:"host"`
	Since      time.Time         `json:"since,omitempty"`
	Until      time.Time         `json:"until,omitempty"`
	HostLabels map[string]string `json:"hostLabels,omitempty"`
	Recorded   bool              `json:"recorded"`
	OK         bool              `json:"ok"`
}
