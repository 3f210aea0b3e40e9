package netvirt

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Cmd is one command as data: the program, its arguments and its input.
type Cmd struct {
	Path  string
	Args  []string
	Stdin string
}

func (c Cmd) String() string {
	s := c.Path + " " + strings.Join(c.Args, " ")
	if c.Stdin != "" {
		s += " <<" + strconv.Itoa(len(c.Stdin)) + " bytes"
	}
	return s
}

func ip(args ...string) Cmd     { return Cmd{Path: "ip", Args: args} }
func bridge(args ...string) Cmd { return Cmd{Path: "bridge", Args: args} }
func tc(args ...string) Cmd     { return Cmd{Path: "tc", Args: args} }

// System runs commands against a host's kernel. Exec is the real one,
// Fake the in-memory one for unit tests.
type System interface {
	Run(ctx context.Context, c Cmd) ([]byte, error)
}

// link is what netvirt reads of one network device.
type link struct {
	Index  int      `json:"ifindex"`
	Name   string   `json:"ifname"`
	MTU    int      `json:"mtu"`
	Master string   `json:"master"`
	Flags  []string `json:"flags"`
	Info   struct {
		Kind string `json:"info_kind"`
		Data struct {
			ID    int    `json:"id"`
			Local string `json:"local"`
		} `json:"info_data"`
	} `json:"linkinfo"`
}

func (l link) up() bool { return slices.Contains(l.Flags, "UP") }

// observed is the part of the kernel's state netvirt manages.
type observed struct {
	links map[string]link
	netns map[string]bool
}

func observe(ctx context.Context, sys System) (observed, error) {
	o := observed{links: map[string]link{}, netns: map[string]bool{}}
	out, err := sys.Run(ctx, ip("-j", "-d", "link", "show"))
	if err != nil {
		return o, err
	}
	var links []link
	if err := json.Unmarshal(out, &links); err != nil {
		return o, fmt.Errorf("netvirt: parse ip link: %w", err)
	}
	for _, l := range links {
		o.links[l.Name] = l
	}
	out, err = sys.Run(ctx, ip("-j", "netns", "list"))
	if err != nil {
		return o, err
	}
	var ns []struct {
		Name string `json:"name"`
	}
	if len(strings.TrimSpace(string(out))) > 0 {
		if err := json.Unmarshal(out, &ns); err != nil {
			return o, fmt.Errorf("netvirt: parse ip netns: %w", err)
		}
	}
	for _, n := range ns {
		o.netns[n.Name] = true
	}
	return o, nil
}

// ours reports whether a device or namespace name is one netvirt makes.
func ours(name, nsPrefix string) bool {
	for _, p := range []string{"vpb-", "vpx-", "vpv-", "vpg-", "vpi-", nsPrefix} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// ensure returns the commands that give device name the MTU, master and
// up state wanted, given what is there.
func ensure(cur link, name string, mtu int, master string) []Cmd {
	var args []string
	if master != "" && cur.Master != master {
		args = append(args, "master", master)
	}
	if mtu > 0 && cur.MTU != mtu {
		args = append(args, "mtu", strconv.Itoa(mtu))
	}
	if !cur.up() {
		args = append(args, "up")
	}
	if len(args) == 0 {
		return nil
	}
	return []Cmd{ip(append([]string{"link", "set", name}, args...)...)}
}

// linkCmds renders what turns the observed devices into the plan's:
// bridges, VXLAN or VLAN devices, gateway namespaces, taps joined to
// their bridge (create), and the removal of what the plan no longer has
// (gc; deleting a namespace deletes its veth). A VXLAN
// device needs an MTU of its own plus 50 on the underlay; the bridge,
// taps and gateway all take the network's MTU.
func linkCmds(p *HostPlan, o observed) (create, gc []Cmd) {
	var cmds []Cmd
	want := map[string]bool{}
	for _, n := range p.Networks {
		br := BridgeName(n.VNI)
		want[br] = true
		if _, ok := o.links[br]; !ok {
			cmds = append(cmds, ip("link", "add", br, "mtu", strconv.Itoa(n.MTU), "type", "bridge"))
		}
		cmds = append(cmds, ensure(o.links[br], br, n.MTU, "")...)
		up, upCmd := VXLANName(n.VNI), ip("link", "add", VXLANName(n.VNI), "mtu", strconv.Itoa(n.MTU), "type", "vxlan",
			"id", strconv.Itoa(n.VNI), "local", p.Underlay.String(), "dstport", strconv.Itoa(VXLANPort), "nolearning")
		if n.Mode == "vlan" {
			up, upCmd = VLANName(n.VNI), ip("link", "add", "link", p.Uplink, "name", VLANName(n.VNI), "mtu", strconv.Itoa(n.MTU),
				"type", "vlan", "id", strconv.Itoa(n.VLAN))
		}
		want[up] = true
		cur, ok := o.links[up]
		if ok && n.Mode != "vlan" && (cur.Info.Data.ID != n.VNI || cur.Info.Data.Local != p.Underlay.String()) {
			cmds = append(cmds, ip("link", "del", up))
			ok, cur = false, link{}
		}
		if !ok {
			cmds = append(cmds, upCmd)
		}
		cmds = append(cmds, ensure(cur, up, n.MTU, br)...)
		if n.DHCP {
			cmds = append(cmds, gatewayCmds(n, p.netns(n.VNI), o, want)...)
		}
	}
	for _, pt := range p.Ports {
		cur, ok := o.links[pt.Tap]
		if !ok {
			continue // the VM is not running: its tap comes with it
		}
		n := p.network(pt.VNI)
		cmds = append(cmds, ensure(cur, pt.Tap, n.MTU, BridgeName(pt.VNI))...)
	}
	for _, pt := range p.Ports {
		if pt.EgressKbps > 0 {
			want[IFBName(pt.Tap)] = true
		}
	}
	var gone []string
	for name := range o.links {
		if ours(name, p.NetnsPrefix) && !want[name] {
			gone = append(gone, name)
		}
	}
	nsGone := map[string]bool{}
	for ns := range o.netns {
		if ours(ns, p.NetnsPrefix) && strings.HasPrefix(ns, p.NetnsPrefix) && !want[ns] {
			gone = append(gone, ns)
			nsGone[ns] = true
		}
	}
	sort.Strings(gone)
	for _, name := range gone {
		if nsGone[name] {
			gc = append(gc, ip("netns", "del", name))
		} else {
			gc = append(gc, ip("link", "del", name))
		}
	}
	return cmds, gc
}

// gatewayCmds makes a network's namespace and its veth: "gw" inside
// holds the gateway address and MAC (the same on every host), vpg-N is
// the bridge port.
func gatewayCmds(n NetPlan, ns string, o observed, want map[string]bool) []Cmd {
	host := GatewayName(n.VNI)
	want[ns], want[host] = true, true
	var cmds []Cmd
	cur, ok := o.links[host]
	if !o.netns[ns] {
		cmds = append(cmds, ip("netns", "add", ns))
		if ok {
			cmds = append(cmds, ip("link", "del", host))
			ok, cur = false, link{}
		}
	}
	if !ok || cur.MTU != n.MTU {
		if !ok {
			cmds = append(cmds, ip("link", "add", host, "mtu", strconv.Itoa(n.MTU), "type", "veth", "peer", "name", "gw", "netns", ns))
		}
		addr := netip.PrefixFrom(n.Gateway, n.Subnet.Bits())
		cmds = append(cmds,
			ip("-n", ns, "link", "set", "gw", "address", GatewayMAC(n.VNI), "mtu", strconv.Itoa(n.MTU), "up"),
			ip("-n", ns, "addr", "replace", addr.String(), "dev", "gw"),
			ip("-n", ns, "link", "set", "lo", "up"))
	}
	return append(cmds, ensure(cur, host, n.MTU, BridgeName(n.VNI))...)
}

// fdbEntry is one line of `bridge -j fdb show`.
type fdbEntry struct {
	MAC   string   `json:"mac"`
	Dst   string   `json:"dst"`
	Flags []string `json:"flags"`
	State string   `json:"state"`
}

const zeroMAC = "00:00:00:00:00:00"

// fdbCmds renders the changes that make a VXLAN device's forwarding
// table the plan's: the all-zero entry once per remote host (flooding),
// one entry per remote MAC.
func fdbCmds(ctx context.Context, sys System, n NetPlan) ([]Cmd, error) {
	dev := VXLANName(n.VNI)
	out, err := sys.Run(ctx, bridge("-j", "fdb", "show", "dev", dev))
	if err != nil {
		return nil, err
	}
	var cur []fdbEntry
	if len(strings.TrimSpace(string(out))) > 0 {
		if err := json.Unmarshal(out, &cur); err != nil {
			return nil, fmt.Errorf("netvirt: parse fdb of %s: %w", dev, err)
		}
	}
	type key struct{ mac, dst string }
	have := map[key]bool{}
	for _, e := range cur {
		if e.Dst != "" {
			have[key{strings.ToLower(e.MAC), e.Dst}] = true
		}
	}
	want := map[key]bool{}
	var cmds []Cmd
	for _, r := range n.Remotes {
		k := key{zeroMAC, r.String()}
		want[k] = true
		if !have[k] {
			cmds = append(cmds, bridge("fdb", "append", zeroMAC, "dev", dev, "dst", k.dst, "self", "permanent"))
		}
	}
	wantMAC := map[string]string{}
	for _, e := range n.FDB {
		k := key{strings.ToLower(e.MAC), e.Dst.String()}
		want[k] = true
		wantMAC[k.mac] = k.dst
		if !have[k] {
			cmds = append(cmds, bridge("fdb", "replace", k.mac, "dev", dev, "dst", k.dst, "self", "permanent"))
		}
	}
	var del []key
	for k := range have {
		if !want[k] && !(k.mac != zeroMAC && wantMAC[k.mac] != "") {
			del = append(del, k)
		}
	}
	sort.Slice(del, func(i, j int) bool { return del[i].mac+del[i].dst < del[j].mac+del[j].dst })
	for _, k := range del {
		cmds = append(cmds, bridge("fdb", "del", k.mac, "dev", dev, "dst", k.dst, "self"))
	}
	return cmds, nil
}
