// Package api holds the REST wire types shared by the server and the Go
// client: request and response bodies, the error body, the route table and
// the agent protocol. It imports only the standard library and
// internal/model.
package api

import (
	"time"

	"github.com/vpool/vpool/internal/model"
)

// Prefix is the root of the user API.
const Prefix = "/api/v1"

// AgentPrefix is the root of the agent protocol, served only over mutual
// TLS on the agent listener.
const AgentPrefix = "/agent/v1"

// AgentLongPolls are the long polls (GET AgentPrefix/<name>?wait=...) an
// agent without virtual networks holds open at all times; fleet hosts
// hold the same, so that a simulated host costs the server what an agent
// does (internal/agent and internal/fleet each test against this list).
var AgentLongPolls = []string{"assignments", "backups", "consoles", "migrations"}

// DefaultProject is the project used when a request names none.
const DefaultProject = "default"

// Error is the body of every non-2xx response.
type Error struct {
	// Code is a stable machine-readable code: bad_request, invalid_field,
	// unauthorized, forbidden, not_found, conflict, quota_exceeded,
	// unavailable, internal.
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

func (e *Error) Error() string {
	if e.Field != "" {
		return e.Field + ": " + e.Message
	}
	return e.Message
}

// Error codes.
const (
	CodeBadRequest    = "bad_request"
	CodeInvalidField  = "invalid_field"
	CodeUnauthorized  = "unauthorized"
	CodeForbidden     = "forbidden"
	CodeNotFound      = "not_found"
	CodeConflict      = "conflict"
	CodeQuotaExceeded = "quota_exceeded"
	CodeUnavailable   = "unavailable"
	CodeRateLimited   = "rate_limited"
	CodeInternal      = "internal"
)

// VMCreateRequest creates one VM (POST /vms?project=P). With DryRun the
// server answers where the VM would be placed and changes nothing.
type VMCreateRequest struct {
	Name   string       `json:"name"`
	Spec   model.VMSpec `json:"spec"`
	DryRun bool         `json:"dryRun,omitempty"`
}

// VMBatchRequest creates Count VMs named Prefix-1..Prefix-N, or the listed
// VMs, all or nothing at admission (POST /vms:batch?project=P).
type VMBatchRequest struct {
	VMs    []VMCreateRequest `json:"vms,omitempty"`
	Prefix string            `json:"prefix,omitempty"`
	Count  int               `json:"count,omitempty"`
	Spec   *model.VMSpec     `json:"spec,omitempty"`
	DryRun bool              `json:"dryRun,omitempty"`
}

// VMBatchResponse lists the VMs a batch created.
type VMBatchResponse struct {
	VMs []model.VM `json:"vms"`
}

// DryRunResponse answers a dry-run create.
type DryRunResponse struct {
	Host        string             `json:"host,omitempty"`
	Fits        bool               `json:"fits"`
	Explanation *model.Explanation `json:"explanation,omitempty"`
}

// VMPatchRequest changes a VM's spec (PATCH /vms/{name}). Only the fields
// present change.
type VMPatchRequest struct {
	VCPUs    *int              `json:"vcpus,omitempty"`
	Memory   *model.Bytes      `json:"memory,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
	Controls *model.Controls   `json:"controls,omitempty"`
	Restart  bool              `json:"restart,omitempty"`
}

// VMList is the body of GET /vms. With ?limit=N it is one page: Continue
// (empty on the last page) asks for the next with ?continue=TOKEN.
type VMList struct {
	Items    []model.VM `json:"items"`
	Revision int64      `json:"revision"`
	Continue string     `json:"continue,omitempty"`
}

// HostList is the body of GET /hosts; paged like VMList.
type HostList struct {
	Items    []model.Host `json:"items"`
	Revision int64        `json:"revision,omitempty"`
	Continue string       `json:"continue,omitempty"`
}

// MaxPageLimit bounds ?limit= of a paged list; DefaultPageLimit is what
// the client asks for when following pages.
const (
	MaxPageLimit     = 5000
	DefaultPageLimit = 500
)

// HostPatchRequest changes operator settings of a host.
type HostPatchRequest struct {
	Labels   map[string]string `json:"labels,omitempty"`
	Cordoned *bool             `json:"cordoned,omitempty"`
	Ratios   *model.Ratios     `json:"ratios,omitempty"`
	State    *model.HostState  `json:"state,omitempty"` // ready | maintenance
}

// ProjectCreateRequest creates a project.
type ProjectCreateRequest struct {
	Name        string      `json:"name"`
	Description string      `json:"description,omitempty"`
	Quota       model.Quota `json:"quota,omitempty"`
}

// ProjectPatchRequest changes a project.
type ProjectPatchRequest struct {
	Description *string      `json:"description,omitempty"`
	Quota       *model.Quota `json:"quota,omitempty"`
}

// ProjectView is a project with its usage.
type ProjectView struct {
	model.Project
	Usage model.Usage `json:"usage"`
}

// ProjectList is the body of GET /projects.
type ProjectList struct {
	Items []ProjectView `json:"items"`
}

// TokenCreateRequest creates a bearer token.
type TokenCreateRequest struct {
	Project string     `json:"project,omitempty"`
	Role    model.Role `json:"role,omitempty"` // default member
	TTL     string     `json:"ttl,omitempty"`  // e.g. 24h; empty = no expiry
	// Scopes narrow the role: read, vms:read, vms:power, vms:write,
	// group:NAME (docs/audit.md).
	Scopes []string `json:"scopes,omitempty"`
}

// TokenCreateResponse carries the secret, shown only once.
type TokenCreateResponse struct {
	Token  model.Token `json:"token"`
	Secret string      `json:"secret"`
}

// TokenList is the body of GET /tokens.
type TokenList struct {
	Items []model.Token `json:"items"`
}

// JoinTokenRequest asks for a host join token.
type JoinTokenRequest struct {
	TTL string `json:"ttl,omitempty"` // default 1h, at most 168h
	// Uses is how many hosts the token may join (default 1, at most
	// MaxJoinTokenUses). Each join consumes one use.
	Uses int `json:"uses,omitempty"`
}

// MaxJoinTokenUses bounds JoinTokenRequest.Uses.
const MaxJoinTokenUses = 1000

// HostRekeyRequest asks for a re-key token of one host
// (POST /hosts/{name}/rekey).
type HostRekeyRequest struct {
	TTL string `json:"ttl,omitempty"` // default 1h, at most 168h
}

// JoinTokenResponse carries a join token: "vpool1.<ca-sha256-hex>.<secret>".
// The agent checks the server's CA against the hash before sending anything.
type JoinTokenResponse struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expiresAt"`
	AgentAddr string    `json:"agentAddr"`
	// Uses is how many hosts it may join.
	Uses int `json:"uses"`
	// Host is set on a re-key token: it joins that host name only.
	Host string `json:"host,omitempty"`
}

// EventList is the body of GET /events (without follow). With
// ?follow=true the server streams one JSON event per line
// (application/x-ndjson) until the client goes away.
type EventList struct {
	Items []model.Event `json:"items"`
}

// ClusterInfo is the body of GET /cluster.
type ClusterInfo struct {
	Version  string `json:"version"`
	Leader   string `json:"leader,omitempty"`
	Server   string `json:"server"`
	Store    string `json:"store"` // embedded | external
	CAHash   string `json:"caHash"`
	Hosts    int    `json:"hosts"`
	VMs      int    `json:"vms"`
	Projects int    `json:"projects"`
}

// --- agent protocol (mutual TLS on the agent listener) ---

// JoinRequest is sent by an agent to POST /agent/v1/join, with the join
// token as bearer. The server signs the CSR with the cluster CA.
type JoinRequest struct {
	Host   string `json:"host"`
	CSRPEM string `json:"csr"`
}

// JoinResponse returns the agent's client certificate.
type JoinResponse struct {
	CertPEM string `json:"cert"`
	CAPEM   string `json:"ca"`
}

// MigrationCertRequest is sent by a joined agent to POST
// /agent/v1/migration-cert: a CSR for its migration-only key.
type MigrationCertRequest struct {
	CSRPEM string `json:"csr"`
}

// MigrationCertResponse is the calling host's migration certificate (the
// migration role: peers verify it as the host's, the servers refuse it
// as an identity) and the cluster CA.
type MigrationCertResponse struct {
	CertPEM  string    `json:"cert"`
	CAPEM    string    `json:"ca"`
	NotAfter time.Time `json:"notAfter"`
}

// VMReport is an agent's report of one VM.
type VMReport struct {
	Project             string        `json:"project"`
	Name                string        `json:"name"`
	UID                 string        `json:"uid,omitempty"`
	Phase               model.Phase   `json:"phase"`
	Error               string        `json:"error,omitempty"`
	Message             string        `json:"message,omitempty"`
	Usage               model.VMUsage `json:"usage"`
	AppliedRestartNonce int64         `json:"appliedRestartNonce,omitempty"`
	// Gone says the VM no longer exists on the host (deletion finished).
	Gone bool `json:"gone,omitempty"`
	// Resize answers the VM's pending resize (model.VMStatus.Resize).
	Resize *ResizeResult `json:"resize,omitempty"`
	// Disks are the VM's disks as the host has them (nil: not reported).
	Disks []model.DiskStatus `json:"disks,omitempty"`
	// Watchdog is the last firing of the VM's guest watchdog on the host
	// (nil: none since the VM's QEMU started).
	Watchdog *model.WatchdogFiring `json:"watchdog,omitempty"`
}

// Heartbeat is sent by an agent every few seconds
// (PUT /agent/v1/heartbeat). It renews the host's lease and carries
// inventory and per-VM usage.
type Heartbeat struct {
	Host     string                 `json:"host"`
	Labels   map[string]string      `json:"labels,omitempty"`
	Capacity model.Resources        `json:"capacity"`
	Driver   string                 `json:"driver"`
	Accel    string                 `json:"accel,omitempty"`
	Pools    []model.StoragePoolRef `json:"pools,omitempty"`
	Address  string                 `json:"address,omitempty"`
	Version  string                 `json:"version,omitempty"`
	Usage    model.HostUsage        `json:"usage"`
	VMs      []VMReport             `json:"vms,omitempty"`
	// CPUModel, HypervisorVersion, MachineType and Networks describe what
	// the host can run (migration pre-checks compare them between hosts).
	CPUModel          string   `json:"cpuModel,omitempty"`
	HypervisorVersion string   `json:"hypervisorVersion,omitempty"`
	MachineType       string   `json:"machineType,omitempty"`
	Networks          []string `json:"networks,omitempty"`
	// Net is the host's virtual-network capability (overlay address,
	// underlay MTU, VLAN uplink); nil: the host serves no vpool network.
	Net *model.HostNet `json:"net,omitempty"`
}

// HeartbeatResponse tells the agent how often to beat.
type HeartbeatResponse struct {
	IntervalSeconds int `json:"intervalSeconds"`
	LeaseTTLSeconds int `json:"leaseTTLSeconds"`
	// IntervalMillis is the heartbeat interval of the cluster's HA policy
	// (agents that know it prefer it to IntervalSeconds).
	IntervalMillis int `json:"intervalMillis,omitempty"`
	// FenceMillis is the fence timeout: an agent that has not renewed its
	// liveness for that long kills every VM it runs (docs/ha.md).
	FenceMillis int `json:"fenceMillis,omitempty"`
	// Power is the host's desired power state when it is not simply
	// "on": "standby" asks an agent that can sleep to do so.
	Power string `json:"power,omitempty"`
	// Accepts lists the heartbeat bodies this server takes besides JSON
	// (HeartbeatCompactType); an agent may send the next beat in one.
	Accepts []string `json:"accepts,omitempty"`
}

// Assignments is the body of GET /agent/v1/assignments?after=REV&wait=30s:
// every VM assigned to the calling host. The call blocks until something
// changed after REV or wait elapsed. With delta=true as well, the answer
// may be a delta (Delta): only the VMs of the host changed after REV,
// and in Removed those that left it since; and the poll is not woken by
// a change that is only a status report of the host itself (the agent
// holds the stored VM from the report's answer).
type Assignments struct {
	Revision int64      `json:"revision"`
	VMs      []model.VM `json:"vms"`
	// Delta says VMs holds only the VMs changed after the poll's
	// revision; false: VMs is every VM of the host (a first poll, a poll
	// without delta=true, or a revision the server cannot answer a
	// delta from: the agent replaces what it holds).
	Delta bool `json:"delta,omitempty"`
	// Removed names ("project/name") the VMs that left the host after
	// the poll's revision (deleted, or moved away); deltas only.
	Removed []string `json:"removed,omitempty"`
	// Snapshots are the snapshot records of those VMs that ask the agent
	// for work (pending, reverting, deleting) or are ready: all of the
	// host's, in a delta too.
	Snapshots []model.Snapshot `json:"snapshots,omitempty"`
}

// HAStatus is the body of GET /api/v1/ha (vpool ha status): host HA at a
// glance.
type HAStatus struct {
	// Policy is the HA policy in force, defaults filled in.
	Policy model.HAPolicy `json:"policy"`
	// Hosts counts hosts by state.
	Hosts map[string]int `json:"hosts"`
	// Protected counts VMs by resolved HA level (high, medium, low);
	// Unprotected lists those that cannot restart elsewhere, and why.
	Protected   map[string]int  `json:"protected"`
	Unprotected []model.HAStuck `json:"unprotected,omitempty"`
	// Reserve answers "tolerate N host failures" on the current load.
	Reserve HAReserve `json:"reserve"`
	// Failovers are the last host failovers, newest first.
	Failovers []model.HAFailover `json:"failovers,omitempty"`
}

// HAReserve is the failover reserve check (internal/ha.CheckReserve).
type HAReserve struct {
	Tolerates int             `json:"tolerates"`
	OK        bool            `json:"ok"`
	Need      model.Resources `json:"need"`
	Spare     model.Resources `json:"spare"`
	Worst     []string        `json:"worst,omitempty"`
}
