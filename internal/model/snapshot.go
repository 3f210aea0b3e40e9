package model

import (
	"fmt"
	"strings"
	"time"
)

// SnapshotPhase is where a snapshot is in its life. A snapshot request is
// stored pending; the VM's agent takes it and reports ready or failed.
// Revert and delete are asked for by moving a ready snapshot to reverting
// or deleting; the agent answers ready (revert done or failed, with Error)
// or removes it.
type SnapshotPhase string

// Snapshot phases.
const (
	SnapshotPending   SnapshotPhase = "pending"
	SnapshotReady     SnapshotPhase = "ready"
	SnapshotFailed    SnapshotPhase = "failed"
	SnapshotReverting SnapshotPhase = "reverting"
	SnapshotDeleting  SnapshotPhase = "deleting"
)

// Snapshot is a point-in-time copy of a VM's disks (and, with Memory, its
// running state), kept on the VM's host. Stored at
// /vpool/snapshots/<project>/<vm>/<name>; Meta.Name is the snapshot's name.
type Snapshot struct {
	Meta
	VM     string        `json:"vm"`
	Host   string        `json:"host,omitempty"`
	Memory bool          `json:"memory,omitempty"`
	Phase  SnapshotPhase `json:"phase"`
	// Error says why the last operation (create, revert, delete) failed.
	Error string `json:"error,omitempty"`
	// RevertNonce counts revert requests; the agent reverts when it sees
	// a value it has not acted on.
	RevertNonce int64      `json:"revertNonce,omitempty"`
	ReadyAt     *time.Time `json:"readyAt,omitempty"`
	RevertedAt  *time.Time `json:"revertedAt,omitempty"`
}

// ResizePhase is the state of a live resize request.
type ResizePhase string

// Resize phases.
const (
	ResizePending ResizePhase = "pending"
	ResizeDone    ResizePhase = "done"
	ResizeRefused ResizePhase = "refused"
)

// ResizeOp is a resize of an assigned VM, kept in its status until its
// agent answers. A change the hypervisor can only make with a restart is
// refused (the spec goes back to From) unless Restart was asked for.
type ResizeOp struct {
	ID         int64       `json:"id"`
	FromVCPUs  int         `json:"fromVcpus"`
	FromMemory Bytes       `json:"fromMemory"`
	VCPUs      int         `json:"vcpus"`
	Memory     Bytes       `json:"memory"`
	Restart    bool        `json:"restart,omitempty"`
	Phase      ResizePhase `json:"phase"`
	Message    string      `json:"message,omitempty"`
}

// CloudInit is the NoCloud seed a hypervisor hands to a user image
// (cloud-init reads it from a CD-ROM labelled "cidata").
type CloudInit struct {
	Hostname string   `json:"hostname,omitempty"`
	SSHKeys  []string `json:"sshKeys,omitempty"`
	// UserData is the user-data document as is (#cloud-config, a script).
	UserData string `json:"userData,omitempty"`
}

// MaxUserData bounds CloudInit.UserData (cloud-init's own limit is larger;
// a seed is kept in every record and request).
const MaxUserData = 64 * 1024

// Validate checks the seed's fields: a host name of dot-separated DNS
// labels (at most MaxHostnameLen), at most MaxSSHKeys well-formed public
// keys (CheckSSHPublicKey) and at most MaxUserData of user data.
func (c *CloudInit) Validate() error {
	if c == nil {
		return nil
	}
	if c.Hostname != "" {
		if len(c.Hostname) > MaxHostnameLen {
			return fieldErr("spec.cloudInit.hostname", "is %d characters, more than the maximum of %d", len(c.Hostname), MaxHostnameLen)
		}
		for _, l := range strings.Split(c.Hostname, ".") {
			if !dnsLabel.MatchString(l) {
				return fieldErr("spec.cloudInit.hostname", "%s is not a host name: dot-separated DNS labels", quoteShort(c.Hostname))
			}
		}
	}
	if len(c.SSHKeys) > MaxSSHKeys {
		return fieldErr("spec.cloudInit.sshKeys", "has %d keys, more than the maximum of %d", len(c.SSHKeys), MaxSSHKeys)
	}
	for i, k := range c.SSHKeys {
		if err := CheckSSHPublicKey(strings.TrimSpace(k)); err != nil {
			return fieldErr(fmt.Sprintf("spec.cloudInit.sshKeys[%d]", i), "%v", err)
		}
	}
	if len(c.UserData) > MaxUserData {
		return fieldErr("spec.cloudInit.userData", "is %d bytes, more than the maximum of %d", len(c.UserData), MaxUserData)
	}
	return nil
}
