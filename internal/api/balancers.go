package api

import "github.com/vpool/vpool/internal/model"

// LBCreateRequest is the body of POST /api/v1/lbs.
type LBCreateRequest struct {
	Name string       `json:"name"`
	Spec model.LBSpec `json:"spec"`
}

// LBList is the body of GET /api/v1/lbs.
type LBList struct {
	LoadBalancers []model.LoadBalancer `json:"loadBalancers"`
}

// LBPatchRequest is the body of PATCH /api/v1/lbs/{name}: an absent
// field keeps its value. Members removed here drain before they leave.
type LBPatchRequest struct {
	Members      *model.LBMembers     `json:"members,omitempty"`
	Algorithm    *string              `json:"algorithm,omitempty"`
	HealthCheck  *model.LBHealthCheck `json:"healthCheck,omitempty"`
	DrainTimeout *int                 `json:"drainTimeoutSeconds,omitempty"`
}

// GroupCreateRequest is the body of POST /api/v1/groups.
type GroupCreateRequest struct {
	Name string          `json:"name"`
	Spec model.GroupSpec `json:"spec"`
}

// GroupList is the body of GET /api/v1/groups.
type GroupList struct {
	Groups []model.ScalingGroup `json:"groups"`
}

// GroupPatchRequest is the body of PATCH /api/v1/groups/{name}: an
// absent field keeps its value.
type GroupPatchRequest struct {
	Min       *int                   `json:"min,omitempty"`
	Max       *int                   `json:"max,omitempty"`
	TargetCPU *float64               `json:"targetCpuPercent,omitempty"`
	Schedules *[]model.GroupSchedule `json:"schedules,omitempty"`
}

// HostBalancers is the body of GET /agent/v1/balancers?etag=E&wait=30s:
// the balancers the calling host serves. The call blocks until the
// answer differs from etag E or wait passes.
type HostBalancers struct {
	ETag      string         `json:"etag"`
	Balancers []BalancerView `json:"balancers"`
}

// BalancerView is one balancer as its host renders it.
type BalancerView struct {
	Project string `json:"project"`
	Name    string `json:"name"`
	// The network the virtual IP is on.
	Network string `json:"network"`
	VNI     int    `json:"vni"`
	Subnet  string `json:"subnet"`
	MTU     int    `json:"mtu"`
	VIP     string `json:"vip"`
	MAC     string `json:"mac"`

	Listen      int                 `json:"listen"`
	MemberPort  int                 `json:"memberPort"`
	Algorithm   string              `json:"algorithm"`
	HealthCheck model.LBHealthCheck `json:"healthCheck"`
	// DrainTimeout (seconds) bounds how long HAProxy's older processes
	// keep draining connections after a reload.
	DrainTimeout int              `json:"drainTimeoutSeconds"`
	Members      []model.LBMember `json:"members"`
}

// BalancerReport is the body of PUT /agent/v1/balancers/{project}/{name}/status:
// the host's view of one balancer it serves.
type BalancerReport struct {
	Running bool                            `json:"running"`
	Error   string                          `json:"error,omitempty"`
	Members map[string]model.LBMemberHealth `json:"members,omitempty"`
}
