package netvirt

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
)

// Marks that the bridge table hands to the inet table. Stateful filtering
// needs conntrack, which this kernel has in the inet family only (not in
// bridge-family rules); bridged IPv4 reaches the inet hooks through
// br_netfilter, but there both interfaces read as the bridge. So the
// bridge table, which still sees the ports, writes them into the packet
// mark: bit 31 says "bridged on a vpool bridge", bits 16-30 the input
// port's index, bits 0-15 the output port's (0xffff: the gateway).
const (
	markBridged = 0x80000000
	markInMask  = 0x7fff0000
	markOutMask = 0x0000ffff
	gwIndex     = 0x7fff
)

// portIndex numbers the plan's ports 1..n by tap name (the plan is
// normalized, so indexes are stable within one ruleset).
func portIndex(p *HostPlan) map[string]int {
	idx := make(map[string]int, len(p.Ports))
	for i, pt := range p.Ports {
		idx[pt.Tap] = i + 1
	}
	return idx
}

// groupSets names the nft set of each peer group.
func groupSets(p *HostPlan) map[string]string {
	names := make([]string, 0, len(p.Groups))
	for g := range p.Groups {
		names = append(names, g)
	}
	sort.Strings(names)
	out := make(map[string]string, len(names))
	for i, g := range names {
		out[g] = fmt.Sprintf("grp%d", i)
	}
	return out
}

// RenderRuleset renders the whole of vpool's nftables state for a host:
// `nft -f` applies it in one transaction (the old tables go in the same
// transaction), so a change is atomic.
func RenderRuleset(p HostPlan) string {
	p.normalize()
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	// Create-then-delete makes the delete valid whether or not the table
	// existed; nft runs the file as one transaction.
	w("table bridge vpool {}")
	w("delete table bridge vpool")
	w("table inet vpool {}")
	w("delete table inet vpool")
	renderBridge(w, &p)
	renderInet(w, &p)
	return b.String()
}

func renderBridge(w func(string, ...any), p *HostPlan) {
	idx := portIndex(p)
	w("table bridge vpool {")
	// prerouting: before the bridge learns a source; anti-spoofing per
	// tap and the overlay guards.
	w("\tchain c_pre {")
	w("\t\ttype filter hook prerouting priority -300; policy accept;")
	var ports, guards []string
	for _, pt := range p.Ports {
		ports = append(ports, fmt.Sprintf("%q : jump c_spoof%d", pt.Tap, idx[pt.Tap]))
	}
	for _, n := range p.Networks {
		if n.Mode == "vxlan" || n.Mode == "" {
			guards = append(guards, fmt.Sprintf("%q : jump c_overlay%d", VXLANName(n.VNI), n.VNI))
		} else {
			guards = append(guards, fmt.Sprintf("%q : jump c_overlay%d", VLANName(n.VNI), n.VNI))
		}
	}
	if len(ports) > 0 {
		w("\t\tiifname vmap { %s }", strings.Join(ports, ", "))
	}
	if len(guards) > 0 {
		w("\t\tiifname vmap { %s }", strings.Join(guards, ", "))
	}
	var gws []string
	for _, n := range p.Networks {
		if n.DHCP {
			gws = append(gws, fmt.Sprintf("%q", GatewayName(n.VNI)))
		}
	}
	if len(gws) > 0 {
		w("\t\tiifname { %s } accept", strings.Join(gws, ", "))
	}
	w("\t}")
	for _, pt := range p.Ports {
		w("\tchain c_spoof%d {", idx[pt.Tap])
		w("\t\tether saddr != %s drop", pt.MAC)
		w("\t\tether type arp arp saddr ether != %s drop", pt.MAC)
		w("\t\tether type arp arp saddr ip != { 0.0.0.0, %s } drop", pt.IP)
		w("\t\tether type arp accept")
		w("\t\tether type ip ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 accept")
		w("\t\tether type ip ip saddr != %s drop", pt.IP)
		w("\t\tether type ip accept")
		w("\t\tdrop") // IPv6, VLAN tags and every other ethertype
		w("\t}")
	}
	for _, n := range p.Networks {
		// What comes from the overlay never claims the gateway, which
		// every host answers for itself.
		w("\tchain c_overlay%d {", n.VNI)
		w("\t\tether saddr %s drop", GatewayMAC(n.VNI))
		w("\t\tether type arp arp saddr ip %s drop", n.Gateway)
		w("\t\tether type ip udp dport { 67, 68 } drop")
		w("\t\taccept")
		w("\t}")
	}
	// input: nothing on a vpool bridge reaches the host itself.
	w("\tchain c_in {")
	w("\t\ttype filter hook input priority -200; policy accept;")
	if all := portList(p); all != "" {
		w("\t\tiifname { %s } drop", all)
	}
	w("\t}")
	// forward: the gateway stays host-local, and the ports go into the
	// mark for the inet table.
	w("\tchain c_fwd {")
	w("\t\ttype filter hook forward priority -200; policy accept;")
	for _, n := range p.Networks {
		if !n.DHCP {
			continue
		}
		up := VXLANName(n.VNI)
		if n.Mode == "vlan" {
			up = VLANName(n.VNI)
		}
		w("\t\tiifname %q oifname %q drop", GatewayName(n.VNI), up)
		w("\t\tiifname %q oifname %q drop", up, GatewayName(n.VNI))
	}
	// Only frames from the ports vpool knows get the bridged bit; the
	// inet table drops IPv4 on a vpool bridge without it, so a port that
	// appears before its rules passes nothing (fail closed).
	if all := portList(p); all != "" {
		w("\t\tiifname { %s } meta mark set 0x%08x", all, markBridged)
	}
	var in, out []string
	for _, pt := range p.Ports {
		in = append(in, fmt.Sprintf("%q : jump c_inport%d", pt.Tap, idx[pt.Tap]))
		out = append(out, fmt.Sprintf("%q : jump c_outport%d", pt.Tap, idx[pt.Tap]))
	}
	if len(gws) > 0 {
		w("\t\tiifname { %s } meta mark set meta mark | 0x%08x", strings.Join(gws, ", "), gwIndex<<16)
		w("\t\toifname { %s } meta mark set meta mark | 0x%08x", strings.Join(gws, ", "), 0xffff)
	}
	if len(in) > 0 {
		w("\t\tiifname vmap { %s }", strings.Join(in, ", "))
		w("\t\toifname vmap { %s }", strings.Join(out, ", "))
	}
	w("\t}")
	for _, pt := range p.Ports {
		i := idx[pt.Tap]
		w("\tchain c_inport%d {", i)
		w("\t\tmeta mark set meta mark | 0x%08x", i<<16)
		w("\t}")
		w("\tchain c_outport%d {", i)
		w("\t\tmeta mark set meta mark | 0x%08x", i)
		w("\t}")
	}
	w("}")
}

// portList lists every port of every vpool bridge on the host: taps,
// overlay or VLAN devices, gateways.
func portList(p *HostPlan) string {
	var s []string
	for _, n := range p.Networks {
		if n.Mode == "vlan" {
			s = append(s, fmt.Sprintf("%q", VLANName(n.VNI)))
		} else {
			s = append(s, fmt.Sprintf("%q", VXLANName(n.VNI)))
		}
		if n.DHCP {
			s = append(s, fmt.Sprintf("%q", GatewayName(n.VNI)))
		}
	}
	for _, pt := range p.Ports {
		s = append(s, fmt.Sprintf("%q", pt.Tap))
	}
	return strings.Join(s, ", ")
}

func bridgeList(p *HostPlan) string {
	var s []string
	for _, n := range p.Networks {
		s = append(s, fmt.Sprintf("%q", BridgeName(n.VNI)))
	}
	return strings.Join(s, ", ")
}

func renderInet(w func(string, ...any), p *HostPlan) {
	idx := portIndex(p)
	sets := groupSets(p)
	w("table inet vpool {")
	for _, g := range sortedKeys(sets) {
		w("\tset %s {", sets[g])
		w("\t\ttype ipv4_addr; comment %q", "group "+g)
		if a := p.Groups[g]; len(a) > 0 {
			w("\t\telements = { %s }", joinAddrs(a))
		}
		w("\t}")
	}
	// Each network is its own conntrack zone: projects may reuse
	// subnets on one host.
	w("\tchain c_pre {")
	w("\t\ttype filter hook prerouting priority -300; policy accept;")
	if len(p.Networks) > 0 {
		var z []string
		for _, n := range p.Networks {
			z = append(z, fmt.Sprintf("%q : %d", BridgeName(n.VNI), n.VNI))
		}
		w("\t\tct zone set iifname map { %s }", strings.Join(z, ", "))
	}
	w("\t}")
	w("\tchain c_fwd {")
	w("\t\ttype filter hook forward priority 0; policy accept;")
	if len(p.Networks) > 0 {
		// Routed (not bridged) traffic into or out of a vpool bridge:
		// networks never reach each other or the host's other links.
		w("\t\tmeta mark & 0x%08x == 0 iifname { %s } drop", markBridged, bridgeList(p))
		w("\t\tmeta mark & 0x%08x == 0 oifname { %s } drop", markBridged, bridgeList(p))
	}
	w("\t\tmeta mark & 0x%08x == 0 accept", markBridged)
	w("\t\tct state established,related accept")
	w("\t\tct state invalid drop")
	w("\t\tmeta mark & 0x%08x == 0x%08x udp sport 67 udp dport 68 accept", markInMask, gwIndex<<16)
	if len(p.Ports) > 0 {
		var eg, ing []string
		for _, pt := range p.Ports {
			eg = append(eg, fmt.Sprintf("0x%08x : jump c_egress%d", idx[pt.Tap]<<16, idx[pt.Tap]))
			ing = append(ing, fmt.Sprintf("0x%08x : jump c_ingress%d", idx[pt.Tap], idx[pt.Tap]))
		}
		w("\t\tmeta mark & 0x%08x vmap { %s }", markInMask, strings.Join(eg, ", "))
		w("\t\tmeta mark & 0x%08x vmap { %s }", markOutMask, strings.Join(ing, ", "))
	}
	w("\t}")
	for _, pt := range p.Ports {
		i := idx[pt.Tap]
		w("\tchain c_egress%d {", i)
		if pt.OpenEgress {
			w("\t\treturn")
		} else {
			w("\t\tudp sport 68 udp dport 67 return")
			for _, r := range pt.Egress {
				w("\t\t%s return", matchRule(r, "daddr", sets))
			}
			w("\t\tdrop")
		}
		w("\t}")
		w("\tchain c_ingress%d {", i)
		for _, r := range pt.Ingress {
			w("\t\t%s accept", matchRule(r, "saddr", sets))
		}
		w("\t\tdrop")
		w("\t}")
	}
	w("}")
}

// matchRule renders the match of one rule; peer is saddr (ingress) or
// daddr (egress).
func matchRule(r Rule, peer string, sets map[string]string) string {
	var m []string
	switch {
	case r.Group != "":
		m = append(m, fmt.Sprintf("ip %s @%s", peer, sets[r.Group]))
	case r.CIDR.IsValid() && r.CIDR.Bits() > 0:
		m = append(m, fmt.Sprintf("ip %s %s", peer, r.CIDR))
	default:
		m = append(m, "meta nfproto ipv4")
	}
	switch r.Protocol {
	case "tcp", "udp":
		if r.PortMin == 0 {
			m = append(m, "meta l4proto "+r.Protocol)
		} else if r.PortMin == r.PortMax {
			m = append(m, fmt.Sprintf("%s dport %d", r.Protocol, r.PortMin))
		} else {
			m = append(m, fmt.Sprintf("%s dport %d-%d", r.Protocol, r.PortMin, r.PortMax))
		}
	case "icmp":
		m = append(m, "meta l4proto icmp")
	}
	return strings.Join(m, " ")
}

func joinAddrs(a []netip.Addr) string {
	s := make([]string, len(a))
	for i, x := range a {
		s[i] = x.String()
	}
	return strings.Join(s, ", ")
}

func sortedKeys[V any](m map[string]V) []string {
	k := make([]string, 0, len(m))
	for x := range m {
		k = append(k, x)
	}
	sort.Strings(k)
	return k
}
