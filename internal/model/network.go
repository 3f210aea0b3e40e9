package model

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Network modes: how a network's bridges on different hosts are joined.
const (
	NetModeVXLAN = "vxlan" // a VXLAN overlay with unicast forwarding entries (the default)
	NetModeVLAN  = "vlan"  // an 802.1Q VLAN on each host's uplink (kernels with 802.1Q)
)

// Network limits and defaults. VXLANOverhead is what VXLAN over IPv4 adds
// to every frame (outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8).
const (
	VXLANOverhead   = 50
	DefaultMTU      = 1500
	MinMTU          = 576
	MaxMTU          = 9000
	MaxVLAN         = 4094
	MaxVNI          = 65535 // networks per cluster; also the conntrack zone
	MinPrefixLen    = 8     // a /8 at most
	MaxPrefixLen    = 29    // a /29 at least: network, gateway, 5 hosts, broadcast
	MaxSecGroups    = 8     // security groups per NIC
	MaxRules        = 1000  // rules per security group
	MaxPortNumber   = 65535
	MaxRateKbps     = 100_000_000 // 100 Gbit/s
	MinRateKbps     = 8           // 1 kB/s: below that tc rounds to nothing
	MaxNetworkDescr = MaxDescription
)

// Network is a virtual layer-2 network of a project with IPv4 address
// management: a Linux bridge on every host that has a VM on it.
type Network struct {
	Meta
	Spec   NetworkSpec   `json:"spec"`
	Status NetworkStatus `json:"status"`
}

// NetworkSpec is what the user asked for.
type NetworkSpec struct {
	// Subnet is an IPv4 prefix in canonical form, e.g. 10.1.0.0/24.
	Subnet string `json:"subnet"`
	// Gateway is the address DHCP announces as the router and where the
	// network's DHCP server answers on every host; default: the first
	// host address of the subnet.
	Gateway string `json:"gateway,omitempty"`
	// Mode is vxlan (default) or vlan.
	Mode string `json:"mode,omitempty"`
	// VLAN is the 802.1Q id of a vlan network.
	VLAN int `json:"vlan,omitempty"`
	// MTU is the guests' MTU (default 1450 over VXLAN, 1500 on a VLAN);
	// a VXLAN network needs an underlay MTU of MTU+50 on its hosts.
	MTU int `json:"mtu,omitempty"`
	// DHCP serves addresses to guests (default on).
	DHCP        *bool  `json:"dhcp,omitempty"`
	Description string `json:"description,omitempty"`
}

// NetworkStatus is what the system assigned.
type NetworkStatus struct {
	// VNI is the network's number: its VXLAN id, its conntrack zone and
	// the suffix of its device names on every host.
	VNI int `json:"vni"`
}

// DHCPOn reports whether the network serves DHCP.
func (s *NetworkSpec) DHCPOn() bool { return s.DHCP == nil || *s.DHCP }

// Prefix returns the parsed subnet (the zero prefix when invalid).
func (s *NetworkSpec) Prefix() netip.Prefix {
	p, _ := netip.ParsePrefix(s.Subnet)
	return p
}

// Validate checks a network spec and fills its defaults (mode, gateway,
// MTU, DHCP). It returns a *FieldError naming the first bad field.
func (s *NetworkSpec) Validate() error {
	p, err := netip.ParsePrefix(s.Subnet)
	if err != nil || !p.Addr().Is4() {
		return fieldErr("spec.subnet", "%s is not an IPv4 prefix: write ADDRESS/BITS, e.g. 10.1.0.0/24", quoteShort(s.Subnet))
	}
	if p.Bits() < MinPrefixLen || p.Bits() > MaxPrefixLen {
		return fieldErr("spec.subnet", "%s: use a prefix from /%d to /%d", s.Subnet, MinPrefixLen, MaxPrefixLen)
	}
	if p.Masked() != p {
		return fieldErr("spec.subnet", "%s has host bits set: write %s", s.Subnet, p.Masked())
	}
	if s.Gateway == "" {
		s.Gateway = p.Addr().Next().String()
	}
	if err := ValidHostAddress("spec.gateway", p, s.Gateway); err != nil {
		return err
	}
	switch s.Mode {
	case "":
		s.Mode = NetModeVXLAN
	case NetModeVXLAN, NetModeVLAN:
	default:
		return fieldErr("spec.mode", "%s is not a network mode: use vxlan or vlan", quoteShort(s.Mode))
	}
	if s.Mode == NetModeVLAN && (s.VLAN < 1 || s.VLAN > MaxVLAN) {
		return fieldErr("spec.vlan", "a vlan network needs a VLAN id from 1 to %d (got %d)", MaxVLAN, s.VLAN)
	}
	if s.Mode == NetModeVXLAN && s.VLAN != 0 {
		return fieldErr("spec.vlan", "is only for vlan networks: leave it out or set mode vlan")
	}
	if s.MTU == 0 {
		s.MTU = DefaultMTU
		if s.Mode == NetModeVXLAN {
			s.MTU -= VXLANOverhead
		}
	}
	if s.MTU < MinMTU || s.MTU > MaxMTU {
		return fieldErr("spec.mtu", "%d is out of range: use %d to %d (jumbo frames up to %d need an underlay MTU of %d over VXLAN)",
			s.MTU, MinMTU, MaxMTU, MaxMTU, MaxMTU+VXLANOverhead)
	}
	if s.DHCP == nil {
		on := true
		s.DHCP = &on
	}
	if len(s.Description) > MaxNetworkDescr {
		return fieldErr("spec.description", "is %d bytes, more than %d", len(s.Description), MaxNetworkDescr)
	}
	return nil
}

// ValidHostAddress checks that s is an IPv4 address inside p that is
// neither p's network nor its broadcast address.
func ValidHostAddress(field string, p netip.Prefix, s string) error {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return fieldErr(field, "%s is not an IPv4 address", quoteShort(s))
	}
	if !p.Contains(a) {
		return fieldErr(field, "%s is outside the subnet %s", s, p)
	}
	if a == p.Addr() || a == LastAddr(p) {
		return fieldErr(field, "%s is the network or broadcast address of %s: pick a host address", s, p)
	}
	return nil
}

// LastAddr is the broadcast address of an IPv4 prefix.
func LastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := (uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// Overlaps reports whether two prefixes share an address.
func Overlaps(a, b netip.Prefix) bool { return a.Overlaps(b) }

// NICQoS limits a NIC's rates in kbit/s; 0 is unlimited. Ingress is what
// the guest receives, egress what it sends.
type NICQoS struct {
	IngressKbps int64 `json:"ingressKbps,omitempty"`
	EgressKbps  int64 `json:"egressKbps,omitempty"`
}

// validateNIC checks the network fields of one NIC (name, address,
// groups, rates); the MAC and network name are checked by validateNICs.
func (n *NIC) validateNIC(f string, i int) error {
	if n.Name == "" {
		n.Name = fmt.Sprintf("nic%d", i)
	}
	if err := ValidName(f+".name", n.Name); err != nil {
		return err
	}
	if n.IP != "" {
		a, err := netip.ParseAddr(n.IP)
		if err != nil || !a.Is4() {
			return fieldErr(f+".ip", "%s is not an IPv4 address", quoteShort(n.IP))
		}
		if n.Network == "" {
			return fieldErr(f+".ip", "a fixed address needs a network: set %s.network", f)
		}
	}
	if (n.IP != "" || len(n.SecurityGroups) > 0) && n.Network == "" {
		return fieldErr(f+".network", "security groups and addresses need a network: set it")
	}
	if len(n.SecurityGroups) > MaxSecGroups {
		return fieldErr(f+".securityGroups", "has %d groups, more than %d", len(n.SecurityGroups), MaxSecGroups)
	}
	seen := map[string]bool{}
	for j, g := range n.SecurityGroups {
		if err := ValidName(fmt.Sprintf("%s.securityGroups[%d]", f, j), g); err != nil {
			return err
		}
		if seen[g] {
			return fieldErr(fmt.Sprintf("%s.securityGroups[%d]", f, j), "%s is listed twice", g)
		}
		seen[g] = true
	}
	if n.QoS != nil {
		for _, r := range []struct {
			name string
			v    int64
		}{{"ingressKbps", n.QoS.IngressKbps}, {"egressKbps", n.QoS.EgressKbps}} {
			if r.v != 0 && (r.v < MinRateKbps || r.v > MaxRateKbps) {
				return fieldErr(f+".qos."+r.name, "%d is out of range: use 0 (unlimited) or %d to %d kbit/s", r.v, MinRateKbps, MaxRateKbps)
			}
		}
	}
	return nil
}

// validateNICNames checks that NIC names are unique within a VM.
func validateNICNames(nics []NIC) error {
	seen := map[string]int{}
	for i, n := range nics {
		if j, dup := seen[n.Name]; dup {
			return fieldErr(fmt.Sprintf("spec.nics[%d].name", i), "%s is also the name of spec.nics[%d]", n.Name, j)
		}
		seen[n.Name] = i
	}
	return nil
}

// Security group rule directions and protocols.
const (
	DirIngress = "ingress"
	DirEgress  = "egress"
	ProtoAny   = "any"
	ProtoTCP   = "tcp"
	ProtoUDP   = "udp"
	ProtoICMP  = "icmp"
)

// SecurityGroup is a named set of stateful allow rules of a project. A
// NIC in no group accepts no new inbound connection and may send
// anything; a NIC in groups accepts and sends what their rules allow
// (replies of allowed connections always pass).
type SecurityGroup struct {
	Meta
	Spec SecurityGroupSpec `json:"spec"`
}

// SecurityGroupSpec holds a group's rules.
type SecurityGroupSpec struct {
	Description string `json:"description,omitempty"`
	Rules       []Rule `json:"rules,omitempty"`
}

// Rule allows one kind of traffic. The peer is a CIDR or another group
// of the same project (its members' addresses), or anything when both
// are empty.
type Rule struct {
	ID        string `json:"id,omitempty"`
	Direction string `json:"direction"`
	Protocol  string `json:"protocol,omitempty"`
	// PortMin..PortMax is the destination port range (tcp, udp); 0 0 is
	// every port. PortMax 0 with PortMin set means one port.
	PortMin int    `json:"portMin,omitempty"`
	PortMax int    `json:"portMax,omitempty"`
	CIDR    string `json:"cidr,omitempty"`
	Group   string `json:"group,omitempty"`
}

// Validate checks a rule (field prefix f) and fills its defaults.
func (r *Rule) Validate(f string) error {
	switch r.Direction {
	case DirIngress, DirEgress:
	default:
		return fieldErr(f+".direction", "%s is not a direction: use ingress or egress", quoteShort(r.Direction))
	}
	switch r.Protocol {
	case "":
		r.Protocol = ProtoAny
	case ProtoAny, ProtoTCP, ProtoUDP, ProtoICMP:
	default:
		return fieldErr(f+".protocol", "%s is not a protocol: use tcp, udp, icmp or any", quoteShort(r.Protocol))
	}
	if r.PortMin < 0 || r.PortMin > MaxPortNumber {
		return fieldErr(f+".portMin", "%d is not a port: use 1 to %d", r.PortMin, MaxPortNumber)
	}
	if r.PortMax < 0 || r.PortMax > MaxPortNumber {
		return fieldErr(f+".portMax", "%d is not a port: use 1 to %d", r.PortMax, MaxPortNumber)
	}
	if r.PortMin != 0 && r.PortMax == 0 {
		r.PortMax = r.PortMin
	}
	if r.PortMax != 0 && r.PortMin == 0 {
		return fieldErr(f+".portMin", "a range needs its first port")
	}
	if r.PortMin > r.PortMax {
		return fieldErr(f+".portMax", "%d is below portMin %d", r.PortMax, r.PortMin)
	}
	if r.PortMin != 0 && r.Protocol != ProtoTCP && r.Protocol != ProtoUDP {
		return fieldErr(f+".portMin", "ports need protocol tcp or udp (got %s)", r.Protocol)
	}
	if r.CIDR != "" && r.Group != "" {
		return fieldErr(f+".group", "a rule has one peer: a cidr or a group, not both")
	}
	if r.CIDR != "" {
		p, err := netip.ParsePrefix(r.CIDR)
		if err != nil || !p.Addr().Is4() {
			return fieldErr(f+".cidr", "%s is not an IPv4 prefix, e.g. 10.0.0.0/8", quoteShort(r.CIDR))
		}
		r.CIDR = p.Masked().String()
	}
	if r.Group != "" {
		if err := ValidName(f+".group", r.Group); err != nil {
			return err
		}
	}
	return nil
}

// Same reports whether two rules allow the same traffic (IDs aside).
func (r Rule) Same(o Rule) bool {
	r.ID, o.ID = "", ""
	return r == o
}

// Validate checks a group's spec.
func (s *SecurityGroupSpec) Validate() error {
	if len(s.Description) > MaxDescription {
		return fieldErr("spec.description", "is %d bytes, more than %d", len(s.Description), MaxDescription)
	}
	if len(s.Rules) > MaxRules {
		return fieldErr("spec.rules", "has %d rules, more than %d", len(s.Rules), MaxRules)
	}
	for i := range s.Rules {
		if err := s.Rules[i].Validate(fmt.Sprintf("spec.rules[%d]", i)); err != nil {
			return err
		}
	}
	return nil
}

// String renders a rule as the CLI shows it.
func (r Rule) String() string {
	var b strings.Builder
	b.WriteString(r.Direction + " " + r.Protocol)
	if r.PortMin != 0 {
		if r.PortMin == r.PortMax {
			fmt.Fprintf(&b, " port %d", r.PortMin)
		} else {
			fmt.Fprintf(&b, " ports %d-%d", r.PortMin, r.PortMax)
		}
	}
	switch {
	case r.CIDR != "":
		b.WriteString(" " + map[bool]string{true: "from", false: "to"}[r.Direction == DirIngress] + " " + r.CIDR)
	case r.Group != "":
		b.WriteString(" " + map[bool]string{true: "from", false: "to"}[r.Direction == DirIngress] + " group " + r.Group)
	}
	return b.String()
}

// HostNet is what a host offers virtual networks: its VXLAN underlay
// address and MTU, and the uplink of VLAN networks where its kernel has
// 802.1Q. A network of mode vxlan needs Overlay, one of mode vlan needs
// VLANUplink; migrations refuse a target that lacks them.
type HostNet struct {
	Overlay     string `json:"overlay,omitempty"`
	UnderlayMTU int    `json:"underlayMtu,omitempty"`
	VLANUplink  string `json:"vlanUplink,omitempty"`
	// Balancers says the host can serve load balancers (HAProxy is there).
	Balancers bool `json:"balancers,omitempty"`
}

// Serves reports whether a host with this capability can attach a
// network of spec s, and if not, why.
func (h *HostNet) Serves(s *NetworkSpec) (bool, string) {
	if h == nil {
		return false, "reports no virtual networking"
	}
	switch s.Mode {
	case NetModeVLAN:
		if h.VLANUplink == "" {
			return false, "has no VLAN uplink"
		}
	default:
		if h.Overlay == "" {
			return false, "has no VXLAN overlay address"
		}
		if h.UnderlayMTU > 0 && h.UnderlayMTU < s.MTU+VXLANOverhead {
			return false, fmt.Sprintf("has an underlay MTU of %d, below the %d that MTU %d over VXLAN needs", h.UnderlayMTU, s.MTU+VXLANOverhead, s.MTU)
		}
	}
	return true, ""
}

// NetIndex lists a project's networks and subnets: network creates
// compare-and-swap on it, so two overlapping subnets cannot both pass.
type NetIndex struct {
	Subnets map[string]string `json:"subnets"` // network name → subnet
}

// AddressAlloc is one address of a network's pool in use: by a VM's NIC
// (owner "vm/<vm>/<nic>") or by anything else that asked the address API
// (owner "<kind>/<name>", e.g. "lb/web" for a balancer's virtual IP).
type AddressAlloc struct {
	Network   string    `json:"network"`
	IP        string    `json:"ip"`
	Owner     string    `json:"owner"`
	MAC       string    `json:"mac,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
}

// NICOwner is the address owner of a VM's NIC.
func NICOwner(vm, nic string) string { return "vm/" + vm + "/" + nic }
