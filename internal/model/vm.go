package model

import "time"

// Phase is where a VM is in its life.
type Phase string

// VM phases.
const (
	PhasePending    Phase = "pending"
	PhaseScheduling Phase = "scheduling"
	PhaseCreating   Phase = "creating"
	PhaseRunning    Phase = "running"
	PhaseStopping   Phase = "stopping"
	PhaseStopped    Phase = "stopped"
	PhaseFailed     Phase = "failed"
	PhaseDeleting   Phase = "deleting"
	PhasePaused     Phase = "paused"
	// PhaseUnknown: the host runs the VM but cannot reach it (its QEMU
	// monitor does not answer); LastError says why. Nothing acts on the
	// VM until the host reaches it again or an operator decides.
	PhaseUnknown Phase = "unknown"
)

// PowerState is what the user wants a VM to be.
type PowerState string

// Desired power states.
const (
	PowerRunning PowerState = "running"
	PowerStopped PowerState = "stopped"
)

// VM is a virtual machine: the user's desired Spec and the observed Status.
type VM struct {
	Meta
	Spec   VMSpec   `json:"spec"`
	Status VMStatus `json:"status"`
}

// Key returns "project/name", unique across the cluster.
func (v *VM) Key() string { return v.Project + "/" + v.Name }

// VMSpec is what the user asked for.
type VMSpec struct {
	VCPUs      int               `json:"vcpus"`
	Memory     Bytes             `json:"memory"`
	Disks      []Disk            `json:"disks,omitempty"`
	NICs       []NIC             `json:"nics,omitempty"`
	Image      string            `json:"image,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
	Placement  Placement         `json:"placement,omitempty"`
	Controls   Controls          `json:"controls,omitempty"`
	HAPriority int               `json:"haPriority,omitempty"`
	// HA is the restart level after a host failure: high, medium, low or
	// off; "" is medium when every disk is on shared storage, else off
	// (local disks cannot restart elsewhere). HAPriority orders VMs of
	// one level (higher first).
	HA    string     `json:"ha,omitempty"`
	Power PowerState `json:"power"`
	// RestartNonce changes when the user asks for a restart; the agent
	// restarts the VM when it sees a new value.
	RestartNonce int64 `json:"restartNonce,omitempty"`
	// Migration overrides the cluster's live-migration defaults for this VM.
	Migration *MigrationSpec `json:"migration,omitempty"`
	// CloudInit is the NoCloud seed for user images (hostname, SSH keys,
	// user-data); nil gives no seed.
	CloudInit *CloudInit `json:"cloudInit,omitempty"`
	// StopForce pulls the plug at the next stop instead of asking the
	// guest to power off; StopTimeout (seconds, 0: the host's default)
	// bounds how long a graceful stop waits before it does. Set by a stop
	// request, cleared by a start.
	StopForce   bool `json:"stopForce,omitempty"`
	StopTimeout int  `json:"stopTimeoutSeconds,omitempty"`
	// Watchdog adds a guest watchdog device (nil: none). It is part of
	// the VM's hardware: set at create, kept by migrations and restarts.
	Watchdog *Watchdog `json:"watchdog,omitempty"`
}

// DiskSize is the sum of the VM's disk sizes.
func (s *VMSpec) DiskSize() Bytes {
	var t Bytes
	for _, d := range s.Disks {
		t += d.Size
	}
	return t
}

// Demand is what the VM asks of a host.
func (s *VMSpec) Demand() Resources {
	return Resources{CPUs: s.VCPUs, Memory: s.Memory, Disk: s.DiskSize()}
}

// Disk is one virtual disk.
type Disk struct {
	Name      string `json:"name"`
	Size      Bytes  `json:"size"`
	Pool      string `json:"pool,omitempty"`
	Tier      string `json:"tier,omitempty"`
	Encrypted bool   `json:"encrypted,omitempty"`
}

// NIC is one virtual network interface.
type NIC struct {
	// Name identifies the NIC within its VM (default nic<index>); nic
	// remove names it.
	Name    string `json:"name,omitempty"`
	Network string `json:"network,omitempty"`
	MAC     string `json:"mac,omitempty"`
	// IP is the NIC's IPv4 address on its network: a fixed address when
	// the user gives one, else the one the server allocated.
	IP string `json:"ip,omitempty"`
	// SecurityGroups name groups of the VM's project (network.go).
	SecurityGroups []string `json:"securityGroups,omitempty"`
	QoS            *NICQoS  `json:"qos,omitempty"`
}

// DiskStatus is one disk as its host has it.
type DiskStatus struct {
	Name string `json:"name"`
	Size Bytes  `json:"size"`
}

// MaxStopTimeout bounds VMSpec.StopTimeout (seconds).
const MaxStopTimeout = 3600

// Placement holds the constraints the scheduler honours.
type Placement struct {
	RequiredLabels  map[string]string `json:"requiredLabels,omitempty"`
	PreferredLabels map[string]string `json:"preferredLabels,omitempty"`
	IsolationDomain string            `json:"isolationDomain,omitempty"`
	// AffinityGroup names a group; Affinity says how its members relate.
	AffinityGroup string `json:"affinityGroup,omitempty"`
	// Affinity is one of "", affinity, anti-affinity, soft-affinity,
	// soft-anti-affinity.
	Affinity   string `json:"affinity,omitempty"`
	MaxPerHost int    `json:"maxPerHost,omitempty"`
	Host       string `json:"host,omitempty"` // pin to a host
}

// Affinity kinds.
const (
	AffinityHard           = "affinity"
	AntiAffinityHard       = "anti-affinity"
	AffinitySoft           = "soft-affinity"
	AntiAffinitySoft       = "soft-anti-affinity"
	DefaultCPUShares       = 1024
	MaxVCPUs               = 512
	MaxMemory        Bytes = 16 * TiB
	MaxDisk          Bytes = 1 * PiB
)

// Controls are resource controls: shares, reservations, limits.
type Controls struct {
	CPUShares         int   `json:"cpuShares,omitempty"`           // relative weight, default 1024
	CPUReservation    int   `json:"cpuReservationMilli,omitempty"` // milli-CPUs guaranteed
	CPULimit          int   `json:"cpuLimitMilli,omitempty"`       // milli-CPUs cap
	MemoryReservation Bytes `json:"memoryReservation,omitempty"`
	MemoryLimit       Bytes `json:"memoryLimit,omitempty"`
	DiskIOPS          int64 `json:"diskIops,omitempty"`
	DiskBps           int64 `json:"diskBps,omitempty"`
}

// VMStatus is what the system observed.
type VMStatus struct {
	Phase     Phase  `json:"phase"`
	Host      string `json:"host,omitempty"`
	LastError string `json:"lastError,omitempty"`
	Message   string `json:"message,omitempty"`
	// Explanation is why the scheduler could not place the VM (pending,
	// no host: it stays here, small, and is the VM's state: the backlog
	// count, the power controller and `vm create --wait` read it). A
	// placement's explanation is stored apart (StoredExplanation at
	// store.ExplanationKey) and filled in only by GET vm; records stored
	// before that carried it here and still read the same.
	Explanation *Explanation `json:"explanation,omitempty"`
	Usage       VMUsage      `json:"usage,omitempty"`
	Addresses   []string     `json:"addresses,omitempty"`
	StartedAt   *time.Time   `json:"startedAt,omitempty"`
	// AppliedRestartNonce is the last RestartNonce the agent acted on.
	AppliedRestartNonce int64     `json:"appliedRestartNonce,omitempty"`
	ObservedAt          time.Time `json:"observedAt,omitempty"`
	// Migration is the id of the migration moving this VM, while one is
	// under way: agents leave such a VM alone (no create, start or stop)
	// until the migration ends.
	Migration string `json:"migration,omitempty"`
	// Resize is the last resize of the assigned VM and its outcome.
	Resize *ResizeOp `json:"resize,omitempty"`
	// Disks are the disks as the host has them (their sizes grow after
	// a resize is applied); nil until the host reports them.
	Disks []DiskStatus `json:"disks,omitempty"`
	// Owner is the owner record of the VM's disks (host + epoch), set
	// when HA restarts the VM elsewhere; nil means epoch 0, owned by Host.
	Owner *DiskOwner `json:"owner,omitempty"`
	// HAReason says why HA cannot restart the VM elsewhere (local disks,
	// off, no host fits); empty when it can or was never asked to.
	HAReason string `json:"haReason,omitempty"`
	// Watchdog is the last firing of the guest watchdog (spec.watchdog)
	// its host reported; nil when it never fired.
	Watchdog *WatchdogFiring `json:"watchdog,omitempty"`
}

// VMUsage is measured use of a VM, reported by its host's agent.
type VMUsage struct {
	CPUPercent float64 `json:"cpuPercent"` // of one vCPU × vcpus, 0..100*vcpus
	CPUTimeNs  int64   `json:"cpuTimeNs"`
	Memory     Bytes   `json:"memory"`
	DiskRead   int64   `json:"diskReadBytes"`
	DiskWrite  int64   `json:"diskWriteBytes"`
	NetRx      int64   `json:"netRxBytes"`
	NetTx      int64   `json:"netTxBytes"`
}

// Explanation records why the scheduler chose (or could not choose) a host.
type Explanation struct {
	Time       time.Time   `json:"time"`
	Hosts      int         `json:"hosts"`
	Filters    []FilterOut `json:"filters,omitempty"`
	Candidates []Candidate `json:"candidates,omitempty"`
	Chosen     string      `json:"chosen,omitempty"`
	Summary    string      `json:"summary"`
}

// StoredExplanation is a placement's explanation as stored apart from
// its VM's record, written in the placement's own transaction. UID is
// the VM's: a VM created later under the same name never shows it.
type StoredExplanation struct {
	UID         string       `json:"uid"`
	Explanation *Explanation `json:"explanation"`
}

// FilterOut says how many hosts one filter rejected and why.
type FilterOut struct {
	Filter   string `json:"filter"`
	Rejected int    `json:"rejected"`
	Reason   string `json:"reason"`
}

// Candidate is one of the top-scored hosts with its score parts.
type Candidate struct {
	Host  string             `json:"host"`
	Score float64            `json:"score"`
	Parts map[string]float64 `json:"parts,omitempty"`
}

// Event is one transition worth telling someone about.
type Event struct {
	ID      int64     `json:"id"` // store revision at which it was written
	Time    time.Time `json:"time"`
	Kind    string    `json:"kind"`   // vm.created, vm.phase, host.down, ...
	Object  string    `json:"object"` // vm/project/name, host/name
	Project string    `json:"project,omitempty"`
	Message string    `json:"message"`
	From    string    `json:"from,omitempty"`
	To      string    `json:"to,omitempty"`
}

// Role is what a token may do.
type Role string

// Roles.
const (
	RoleAdmin  Role = "admin"  // everything
	RoleMember Role = "member" // read and write within one project
	RoleViewer Role = "viewer" // read within one project
	RoleAgent  Role = "agent"  // a host agent
	// RoleMetrics reads /metrics and nothing else (a Prometheus scraper's
	// token; cluster-wide, bound to no project).
	RoleMetrics Role = "metrics"
)

// Token is a bearer credential. Only the SHA-256 of the secret is stored.
type Token struct {
	ID        string    `json:"id"`
	Hash      string    `json:"hash,omitempty"`
	Project   string    `json:"project,omitempty"`
	Role      Role      `json:"role"`
	CreatedAt time.Time `json:"createdAt"`
	ExpiresAt time.Time `json:"expiresAt,omitempty"`
	Purpose   string    `json:"purpose,omitempty"` // "join" for host join tokens
	// Uses is how many more hosts a join token may join (each join
	// consumes one; the token is deleted at 0).
	Uses int `json:"uses,omitempty"`
	// Host binds a join token to one host name: a re-key token (vpool
	// host rekey), the only way to join a name already joined.
	Host string `json:"host,omitempty"`
	// Scopes narrow what the role allows (scope.go); none: the role's all.
	Scopes []string `json:"scopes,omitempty"`
}

// Policy is the cluster-wide placement policy, stored as data.
type Policy struct {
	Ratios   Ratios             `json:"ratios"`
	Strategy string             `json:"strategy"` // binpack | spread
	Weights  map[string]float64 `json:"weights,omitempty"`
	// MigrationDowntimeLimitMs caps the pause at a live migration's
	// switch-over for VMs that set none (spec.migration.downtimeLimitMs)
	// when the request gives none; 0: DefaultDowntimeLimitMs.
	MigrationDowntimeLimitMs int `json:"migrationDowntimeLimitMs,omitempty"`
	// MigrationMultifdChannels is the memory stream's channels of a live
	// migration for VMs that set none (spec.migration.multifdChannels)
	// and do not allow post-copy; 0: the source host chooses.
	MigrationMultifdChannels int `json:"migrationMultifdChannels,omitempty"`
	// HA holds host failure detection, fencing and the failover reserve
	// (nil: DefaultHAPolicy).
	HA *HAPolicy `json:"ha,omitempty"`
}

// HAPolicy returns the policy's HA settings with defaults filled in.
func (p *Policy) HAPolicy() HAPolicy {
	if p == nil || p.HA == nil {
		return DefaultHAPolicy()
	}
	return p.HA.WithDefaults()
}

// DefaultPolicy is the policy of a new cluster.
func DefaultPolicy() Policy {
	return Policy{Ratios: Ratios{CPU: 4, Memory: 1, Disk: 1}, Strategy: "binpack"}
}
