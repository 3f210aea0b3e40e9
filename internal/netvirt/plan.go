// Package netvirt renders and applies a host's virtual networking: one
// Linux bridge per network, joined across hosts by VXLAN (unicast
// forwarding entries, no multicast) or an 802.1Q VLAN, a namespace per
// network holding its gateway address and DHCP server (dnsmasq), the
// security groups of every NIC as one nftables ruleset (stateful,
// default deny ingress, anti-spoofing) and per-NIC rate limits with tc
// (htb on the tap, htb on an ifb for what the guest sends).
//
// Everything is rendered as data first (HostPlan → commands, ruleset
// text, dnsmasq configuration), golden-tested, then applied through the
// small System interface: Exec runs the commands, Fake models the kernel
// objects in memory for unit tests. It imports only the standard library
// and internal/model; it knows no store, server, agent or hypervisor.
package netvirt

import (
	"crypto/sha256"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
)

// HostPlan is the desired virtual networking of one host.
type HostPlan struct {
	// Underlay is this host's VXLAN source address (VXLAN networks).
	Underlay netip.Addr
	// Uplink carries VLAN networks (e.g. eth1).
	Uplink string
	// NetnsPrefix names the gateway namespaces (default "vpn-"):
	// namespace names are global, so several "hosts" on one machine
	// (tests) need their own.
	NetnsPrefix string
	Networks    []NetPlan
	Ports       []Port
	// Groups are the address sets of security groups named as peers by
	// some port's rules, by Port.Ingress/Egress Rule.Group.
	Groups map[string][]netip.Addr
}

// NetPlan is one network as a host renders it.
type NetPlan struct {
	VNI     int
	Mode    string // model.NetModeVXLAN or NetModeVLAN
	VLAN    int
	MTU     int
	Subnet  netip.Prefix
	Gateway netip.Addr
	DHCP    bool
	// Remotes are the underlay addresses of the other hosts with a VM on
	// this network: broadcast and unknown unicast go to each (head-end
	// replication).
	Remotes []netip.Addr
	// FDB maps the MACs of VMs on other hosts to their host's underlay
	// address.
	FDB []FDBEntry
	// Leases are the DHCP reservations of this host's NICs.
	Leases []Lease
}

// FDBEntry is one unicast forwarding entry of a VXLAN device.
type FDBEntry struct {
	MAC string
	Dst netip.Addr
}

// Lease is a DHCP reservation.
type Lease struct {
	MAC  string
	IP   netip.Addr
	Name string
}

// Port is one VM NIC on this host: a tap on its network's bridge.
type Port struct {
	Tap string
	VNI int
	MAC string
	IP  netip.Addr
	// Ingress and Egress are the allow rules of the NIC's groups: new
	// inbound connections need an ingress rule (default deny), new
	// outbound ones an egress rule unless OpenEgress.
	Ingress []Rule
	Egress  []Rule
	// OpenEgress allows all egress (the NIC is in no security group).
	OpenEgress bool
	// IngressKbps and EgressKbps limit the rates (0: unlimited).
	IngressKbps int64
	EgressKbps  int64
}

// Rule is a security group rule resolved for rendering. Peer is a CIDR
// or, when Group is set, the address set of that group.
type Rule struct {
	Protocol string // any | tcp | udp | icmp
	PortMin  int
	PortMax  int
	CIDR     netip.Prefix // zero: any (when Group is empty)
	Group    string
}

// Device names. Linux allows 15 characters; VNIs are at most 5 digits.
func BridgeName(vni int) string  { return "vpb-" + strconv.Itoa(vni) }
func VXLANName(vni int) string   { return "vpx-" + strconv.Itoa(vni) }
func VLANName(vni int) string    { return "vpv-" + strconv.Itoa(vni) }
func GatewayName(vni int) string { return "vpg-" + strconv.Itoa(vni) }

// DefaultNetnsPrefix prefixes the namespace of a network's gateway.
const DefaultNetnsPrefix = "vpn-"

// netns is the namespace holding a network's gateway and DHCP server.
func (p *HostPlan) netns(vni int) string { return p.NetnsPrefix + strconv.Itoa(vni) }

// IFBName is the ifb device that shapes what a tap's guest sends.
func IFBName(tap string) string {
	h := sha256.Sum256([]byte(tap))
	return fmt.Sprintf("vpi-%x", h[:5])
}

// GatewayMAC is a network's gateway MAC: the same on every host, so a
// migrated guest's ARP cache stays right (the gateway is answered
// locally on every host and never crosses the overlay).
func GatewayMAC(vni int) string {
	return fmt.Sprintf("02:76:70:%02x:%02x:%02x", byte(vni>>16), byte(vni>>8), byte(vni))
}

// VXLANPort is the UDP port of the overlay (IANA's).
const VXLANPort = 4789

// normalize sorts a plan so that rendering is deterministic.
func (p *HostPlan) normalize() {
	if p.NetnsPrefix == "" {
		p.NetnsPrefix = DefaultNetnsPrefix
	}
	sort.Slice(p.Networks, func(i, j int) bool { return p.Networks[i].VNI < p.Networks[j].VNI })
	for i := range p.Networks {
		n := &p.Networks[i]
		sort.Slice(n.Remotes, func(i, j int) bool { return n.Remotes[i].Less(n.Remotes[j]) })
		sort.Slice(n.FDB, func(i, j int) bool { return n.FDB[i].MAC < n.FDB[j].MAC })
		sort.Slice(n.Leases, func(i, j int) bool { return n.Leases[i].MAC < n.Leases[j].MAC })
	}
	sort.Slice(p.Ports, func(i, j int) bool { return p.Ports[i].Tap < p.Ports[j].Tap })
	for _, a := range p.Groups {
		sort.Slice(a, func(i, j int) bool { return a[i].Less(a[j]) })
	}
}

// network returns the plan of network vni, or nil.
func (p *HostPlan) network(vni int) *NetPlan {
	for i := range p.Networks {
		if p.Networks[i].VNI == vni {
			return &p.Networks[i]
		}
	}
	return nil
}

// TapName is the tap of one NIC on one host: "vn" + 12 hex digits of a
// hash of the host, project, VM and NIC names. The agent names it (and
// writes its rules) before the hypervisor makes it; the host is in the
// hash so that the two ends of a migration between "hosts" on one
// machine never share a tap.
func TapName(host, project, vm, nic string) string {
	h := sha256.Sum256([]byte(host + "\x00" + project + "\x00" + vm + "\x00" + nic))
	return fmt.Sprintf("vn%x", h[:6])
}
