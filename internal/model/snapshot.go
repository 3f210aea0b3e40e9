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
//
// User data often holds secrets (passwords, tokens, keys), so it is
// write-only (docs/security.md VP-23): a client sends UserData; the
// server seals it (UserDataSealed) before anything is stored, and
// answers show only its size and keyed digest. Only the host that runs
// the VM (or receives it in a migration) gets UserData back in clear.
type CloudInit struct {
	Hostname string   `json:"hostname,omitempty"`
	SSHKeys  []string `json:"sshKeys,omitempty"`
	// UserData is the user-data document as is (#cloud-config, a script):
	// in a request, and in what the VM's host receives; never stored,
	// never in an API answer.
	UserData string `json:"userData,omitempty"`
	// UserDataDigest names the user data without revealing it
	// ("hmac-sha256:" + hex, keyed with the cluster's seal key: equal
	// documents have equal digests, and nobody can test a guess against
	// it). Set by the server.
	UserDataDigest string `json:"userDataDigest,omitempty"`
	// UserDataSize is the user data's length in bytes. Set by the server.
	UserDataSize int `json:"userDataSize,omitempty"`
	// UserDataSealed is the user data as the store keeps it. Set by the
	// server; never in an answer.
	UserDataSealed *SealedValue `json:"userDataSealed,omitempty"`
}

// SealedValue is a secret as the store keeps it: AES-256-GCM under the
// servers' seal key (ca-seal.key, which never enters the store), bound to
// its purpose and project; Data is the nonce followed by the ciphertext.
// KeyID names the key that sealed it (pki.SealKeyID), so that a server
// with another key file says so.
type SealedValue struct {
	KeyID string `json:"keyId"`
	Data  []byte `json:"data"`
}

// MaxUserData bounds CloudInit.UserData (cloud-init's own limit is larger;
// a seed is kept in every record and request).
const MaxUserData = 64 * 1024

// SealOverhead is what sealing adds to a value: the nonce and the tag.
const SealOverhead = 12 + 16

// HasUserData says whether c carries user data, in clear or sealed.
func (c *CloudInit) HasUserData() bool {
	return c != nil && (c.UserData != "" || c.UserDataSealed != nil)
}

// StoredBytes is about what c takes in a stored record's JSON (sealed
// data is base64: a third more than its bytes).
func (c *CloudInit) StoredBytes() int {
	if c == nil {
		return 0
	}
	n := len(c.Hostname) + len(c.UserData) + len(c.UserDataDigest)
	for _, k := range c.SSHKeys {
		n += len(k)
	}
	if s := c.UserDataSealed; s != nil {
		n += len(s.KeyID) + (len(s.Data)+2)/3*4
	}
	return n
}

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
	if c.UserDataSize < 0 || c.UserDataSize > MaxUserData {
		return fieldErr("spec.cloudInit.userDataSize", "is %d, not between 0 and %d", c.UserDataSize, MaxUserData)
	}
	if len(c.UserDataDigest) > 128 {
		return fieldErr("spec.cloudInit.userDataDigest", "is %d characters, more than a digest's", len(c.UserDataDigest))
	}
	if s := c.UserDataSealed; s != nil {
		switch {
		case c.UserData != "":
			return fieldErr("spec.cloudInit.userData", "is given beside its sealed copy: give one of them")
		case len(s.Data) < SealOverhead || len(s.Data) > MaxUserData+SealOverhead:
			return fieldErr("spec.cloudInit.userDataSealed", "holds %d bytes: not user data sealed by a server", len(s.Data))
		case len(s.KeyID) > 64:
			return fieldErr("spec.cloudInit.userDataSealed.keyId", "is %d characters, more than a key id's", len(s.KeyID))
		}
	}
	return nil
}
