package api

import "github.com/vpool/vpool/internal/model"

// NetworkCreateRequest is the body of POST /api/v1/networks.
type NetworkCreateRequest struct {
	Name string            `json:"name"`
	Spec model.NetworkSpec `json:"spec"`
}

// NetworkList is the body of GET /api/v1/networks.
type NetworkList struct {
	Networks []model.Network `json:"networks"`
}

// AddressRequest is the body of POST /api/v1/networks/{name}/addresses:
// an address for something that is not a VM's NIC (a load balancer's
// virtual IP). Owner is "<kind>/<name>" (e.g. "lb/web"); IP is optional
// (a fixed address).
type AddressRequest struct {
	Owner string `json:"owner"`
	IP    string `json:"ip,omitempty"`
}

// AddressList is the body of GET /api/v1/networks/{name}/addresses.
type AddressList struct {
	Addresses []model.AddressAlloc `json:"addresses"`
}

// SecurityGroupCreateRequest is the body of POST /api/v1/secgroups.
// Without rules a group gets one: egress to anywhere (as in most
// clouds); send "rules": [] with noDefaultEgress to start empty.
type SecurityGroupCreateRequest struct {
	Name            string       `json:"name"`
	Description     string       `json:"description,omitempty"`
	Rules           []model.Rule `json:"rules,omitempty"`
	NoDefaultEgress bool         `json:"noDefaultEgress,omitempty"`
}

// SecurityGroupList is the body of GET /api/v1/secgroups.
type SecurityGroupList struct {
	SecurityGroups []model.SecurityGroup `json:"securityGroups"`
}

// NICPatchRequest is the body of PATCH /api/v1/vms/{name}/nics/{nic}:
// the NIC's groups and rate limits, changed live. An absent field keeps
// its value; qos {} removes the limits.
type NICPatchRequest struct {
	SecurityGroups *[]string     `json:"securityGroups,omitempty"`
	QoS            *model.NICQoS `json:"qos,omitempty"`
}

// HostNetworks is the body of GET /agent/v1/networks?etag=E&wait=30s:
// what the calling host needs to render its virtual networks. The call
// blocks until the view differs from etag E or wait passes.
type HostNetworks struct {
	ETag     string         `json:"etag"`
	Networks []NetworkView  `json:"networks"`
	NICs     []NICView      `json:"nics"`
	Groups   []GroupView    `json:"groups"`
	Hosts    []HostNetAddr  `json:"hosts,omitempty"`
	Host     *model.HostNet `json:"host,omitempty"`
}

// NetworkView is one network on a host: where its other VMs are.
type NetworkView struct {
	Project string            `json:"project"`
	Name    string            `json:"name"`
	VNI     int               `json:"vni"`
	Spec    model.NetworkSpec `json:"spec"`
	// Remotes are the overlay addresses of the other hosts with a VM on
	// the network; FDB maps those VMs' MACs to them.
	Remotes []string   `json:"remotes,omitempty"`
	FDB     []FDBEntry `json:"fdb,omitempty"`
}

// FDBEntry says which host (overlay address) has a MAC.
type FDBEntry struct {
	MAC  string `json:"mac"`
	Host string `json:"host"`
}

// NICView is one NIC of a VM on (or moving to) the calling host.
type NICView struct {
	Project string       `json:"project"`
	VM      string       `json:"vm"`
	NIC     string       `json:"nic"`
	Index   int          `json:"index"`
	Network string       `json:"network"`
	VNI     int          `json:"vni"`
	MAC     string       `json:"mac"`
	IP      string       `json:"ip"`
	Groups  []string     `json:"groups,omitempty"`
	QoS     model.NICQoS `json:"qos"`
	// Listen, on a load balancer's port (VM "lb/NAME", NIC "vip"), is
	// the TCP port on which it accepts new connections from anywhere.
	Listen int `json:"listen,omitempty"`
}

// GroupView is a security group a NIC of the host lists or a rule of
// such a group names, with its members' addresses (every NIC in it,
// on any host).
type GroupView struct {
	Project string       `json:"project"`
	Name    string       `json:"name"`
	Rules   []model.Rule `json:"rules,omitempty"`
	Members []string     `json:"members,omitempty"`
}

// HostNetAddr is a host's overlay address.
type HostNetAddr struct {
	Host    string `json:"host"`
	Overlay string `json:"overlay"`
}
