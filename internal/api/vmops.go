package api

import "github.com/vpool/vpool/internal/model"

// SnapshotCreateRequest asks for a snapshot of a VM
// (POST /vms/{name}/snapshots). With Memory the running state is kept too
// (the VM must be running), and a revert resumes the guest where it was.
type SnapshotCreateRequest struct {
	Name   string `json:"name"`
	Memory bool   `json:"memory,omitempty"`
}

// SnapshotList is the body of GET /vms/{name}/snapshots.
type SnapshotList struct {
	Items []model.Snapshot `json:"items"`
}

// DiskAddRequest hot-plugs a new empty disk (POST /vms/{name}/disks); on a
// stopped VM the disk is there at the next start. Name defaults to
// "disk<N>".
type DiskAddRequest struct {
	Name      string      `json:"name,omitempty"`
	Size      model.Bytes `json:"size"`
	Pool      string      `json:"pool,omitempty"`
	Tier      string      `json:"tier,omitempty"`
	Encrypted bool        `json:"encrypted,omitempty"`
}

// ConsoleLog is the body of GET /vms/{name}/console/log: the tail of the
// VM's serial console output of its current (or last) boot.
type ConsoleLog struct {
	Log       string `json:"log"`
	Truncated bool   `json:"truncated,omitempty"`
}

// --- agent protocol ---

// SnapshotReport is an agent's answer to a snapshot request
// (PUT /agent/v1/snapshots/{project}/{vm}/{name}).
type SnapshotReport struct {
	Phase model.SnapshotPhase `json:"phase"`
	Error string              `json:"error,omitempty"`
	// RevertNonce is the revert request acted on (with Phase ready).
	RevertNonce int64 `json:"revertNonce,omitempty"`
	// Gone says the snapshot was deleted on the host.
	Gone bool `json:"gone,omitempty"`
}

// ResizeResult answers a VM's pending model.ResizeOp in a VMReport.
type ResizeResult struct {
	ID      int64  `json:"id"`
	Refused bool   `json:"refused,omitempty"`
	Message string `json:"message,omitempty"`
}

// ConsoleRequest asks an agent to connect a VM's serial console to the
// server: the agent dials GET /agent/v1/consoles/{id} (a websocket) and
// relays the console (Kind "attach") or sends the log tail and closes
// (Kind "log").
type ConsoleRequest struct {
	ID      string `json:"id"`
	Project string `json:"project"`
	Name    string `json:"name"`
	Kind    string `json:"kind"` // attach | log
	// Tail bounds the log bytes sent for Kind "log".
	Tail int `json:"tail,omitempty"`
}

// ConsoleRequests is the body of GET /agent/v1/consoles (long poll).
type ConsoleRequests struct {
	Items []ConsoleRequest `json:"items"`
}

// Console kinds.
const (
	ConsoleAttach  = "attach"
	ConsoleLogKind = "log"
)

// VMStopRequest says how POST /vms/{name}/stop ends the guest (the body is
// optional): Force pulls the plug at once; TimeoutSeconds bounds how long
// the guest gets to power off before it is (0: the host's default, 30s).
// A forced stop also ends a graceful one in progress.
type VMStopRequest struct {
	Force          bool `json:"force,omitempty"`
	TimeoutSeconds int  `json:"timeoutSeconds,omitempty"`
}

// DiskResizeRequest grows a disk (PATCH /vms/{name}/disks/{disk}): live
// when the VM runs. Shrinking is refused.
type DiskResizeRequest struct {
	Size model.Bytes `json:"size"`
}
