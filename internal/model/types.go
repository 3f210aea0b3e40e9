package model

import "time"

// Meta is carried by every stored object. Revision is the store's
// modification revision of the object's key; writers compare-and-swap on it.
type Meta struct {
	Name      string    `json:"name"`
	Project   string    `json:"project,omitempty"`
	UID       string    `json:"uid,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
	Revision  int64     `json:"revision,omitempty"`
	// DeletedAt is set when deletion was asked for; controllers finish it.
	DeletedAt *time.Time `json:"deletedAt,omitempty"`
}

// Resources is an amount of compute: vCPUs (or physical CPUs for a host),
// memory and disk.
type Resources struct {
	CPUs   int   `json:"cpus"`
	Memory Bytes `json:"memory"`
	Disk   Bytes `json:"disk"`
}

// Add returns r + o.
func (r Resources) Add(o Resources) Resources {
	return Resources{CPUs: r.CPUs + o.CPUs, Memory: r.Memory + o.Memory, Disk: r.Disk + o.Disk}
}

// Sub returns r - o.
func (r Resources) Sub(o Resources) Resources {
	return Resources{CPUs: r.CPUs - o.CPUs, Memory: r.Memory - o.Memory, Disk: r.Disk - o.Disk}
}

// Project is a tenant: it owns VMs and is bounded by a quota.
type Project struct {
	Meta
	Description string `json:"description,omitempty"`
	Quota       Quota  `json:"quota"`
}

// Quota bounds what a project may hold. Zero means unlimited.
type Quota struct {
	VCPUs  int   `json:"vcpus,omitempty"`
	Memory Bytes `json:"memory,omitempty"`
	Disk   Bytes `json:"disk,omitempty"`
	VMs    int   `json:"vms,omitempty"`
}

// Usage is what a project currently holds against its quota. It is
// updated in the same store transaction as the VM records it counts.
type Usage struct {
	VCPUs  int   `json:"vcpus"`
	Memory Bytes `json:"memory"`
	Disk   Bytes `json:"disk"`
	VMs    int   `json:"vms"`
}

// HostState is a host's administrative and liveness state.
type HostState string

// Host states.
const (
	HostReady       HostState = "ready"
	HostMaintenance HostState = "maintenance"
	HostStandby     HostState = "standby"
	HostDown        HostState = "down"
	HostFenced      HostState = "fenced"
)

// Ratios are allocation (overcommit) ratios: capacity × ratio may be
// allocated. A zero field means "use the cluster default".
type Ratios struct {
	CPU    float64 `json:"cpu,omitempty"`
	Memory float64 `json:"memory,omitempty"`
	Disk   float64 `json:"disk,omitempty"`
}

// Host is one server of the pool, as its agent reported it and the
// operator configured it.
type Host struct {
	Meta
	Labels     map[string]string `json:"labels,omitempty"`
	Capacity   Resources         `json:"capacity"`
	Ratios     Ratios            `json:"ratios,omitempty"`
	State      HostState         `json:"state"`
	Cordoned   bool              `json:"cordoned,omitempty"`
	Driver     string            `json:"driver"`
	Accel      string            `json:"accel,omitempty"` // kvm, tcg, sim
	Pools      []StoragePoolRef  `json:"pools,omitempty"`
	Address    string            `json:"address,omitempty"`
	AgentVer   string            `json:"agentVersion,omitempty"`
	LastSeen   time.Time         `json:"lastSeen"`
	VMs        int               `json:"vms"`
	Allocated  Resources         `json:"allocated"`
	Usage      HostUsage         `json:"usage"`
	Generation int64             `json:"generation,omitempty"`
	// CPUModel, HypervisorVersion, MachineType and Networks come from the
	// agent's inventory (empty when not reported); migration pre-checks
	// use them.
	CPUModel          string   `json:"cpuModel,omitempty"`
	HypervisorVersion string   `json:"hypervisorVersion,omitempty"`
	MachineType       string   `json:"machineType,omitempty"`
	Networks          []string `json:"networks,omitempty"`
	// Net is the host's virtual-network capability (nil: none reported):
	// the networks of vpool (model.Network) need it.
	Net *HostNet `json:"net,omitempty"`
	// Drain is set while an operator drains the host (vpool host drain).
	Drain *HostDrain `json:"drain,omitempty"`
	// Power is what the power controller wants of the host (nil: on).
	Power *HostPower `json:"power,omitempty"`
	// Balancers counts the load balancers placed on the host (the
	// balancer controller keeps it); each takes LBReserveCPUMilli and
	// LBReserveMemory out of what placement may allocate there.
	Balancers int `json:"balancers,omitempty"`
}

// StoragePoolRef names a storage pool present on a host and its tier.
type StoragePoolRef struct {
	Name string `json:"name"`
	Tier string `json:"tier,omitempty"`
	Free Bytes  `json:"free,omitempty"`
	// Shared says every host that reports the pool sees the same files
	// (NFS and the like): a VM whose disks are all on shared pools can
	// restart on another host after a host failure.
	Shared bool `json:"shared,omitempty"`
}

// HostUsage is measured load on a host.
type HostUsage struct {
	CPUPercent float64 `json:"cpuPercent"`
	MemoryUsed Bytes   `json:"memoryUsed"`
	DiskUsed   Bytes   `json:"diskUsed"`
}

// Allocation is the sum of what VMs placed on a host reserve. It is a
// separate key so that placements compare-and-swap on it.
type Allocation struct {
	Host      string          `json:"host"`
	Used      Resources       `json:"used"`
	Reserved  Resources       `json:"reserved"` // reservations, covered 1:1 by capacity
	VMs       map[string]bool `json:"vms"`      // project/name keys
	Domains   map[string]int  `json:"domains,omitempty"`
	Groups    map[string]int  `json:"groups,omitempty"`
	Revision  int64           `json:"-"`
	UpdatedAt time.Time       `json:"updatedAt"`

	// ReservedCPUMilli is the exact sum of CPU reservations in milli-CPUs
	// (Reserved.CPUs holds the same, rounded up to whole CPUs).
	ReservedCPUMilli int `json:"reservedCpuMilli,omitempty"`
}
