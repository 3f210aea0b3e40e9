package netvirt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// ErrFake is what Fake answers to a command it does not model or that
// the kernel would refuse (a device that exists, one that does not).
var ErrFake = errors.New("netvirt: fake kernel refused")

// Fake is an in-memory System: it models the devices, namespaces,
// forwarding entries, ruleset and qdiscs that netvirt manages and keeps
// every command it ran. Unit tests of netvirt and of its callers (the
// agent) use it where no root or kernel is at hand.
type Fake struct {
	mu     sync.Mutex
	next   int
	links  map[string]*link
	netns  map[string]bool
	fdb    map[string][]fdbEntry
	qdisc  map[string][]string // dev → "root htb 1:1 rate ..." lines
	Rules  string              // the last ruleset given to nft -f
	Log    []Cmd
	FailOn func(Cmd) error // injects failures
}

// NewFake returns an empty fake kernel.
func NewFake() *Fake {
	return &Fake{next: 10, links: map[string]*link{}, netns: map[string]bool{}, fdb: map[string][]fdbEntry{}, qdisc: map[string][]string{}}
}

// AddTap adds a device as a hypervisor would (a tap, not on a bridge).
func (f *Fake) AddTap(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addLink(name, "tun", 1500)
}

// Link describes one device: kind, master, MTU, up ("" when absent).
func (f *Fake) Link(name string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	l := f.links[name]
	if l == nil {
		return ""
	}
	return fmt.Sprintf("%s master=%s mtu=%d up=%v", l.Info.Kind, l.Master, l.MTU, l.up())
}

// Links lists the devices' names.
func (f *Fake) Links() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return sortedKeys(f.links)
}

// FDB lists a device's forwarding entries as "mac dst".
func (f *Fake) FDB(dev string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, e := range f.fdb[dev] {
		out = append(out, e.MAC+" "+e.Dst)
	}
	sort.Strings(out)
	return out
}

// Qdisc lists a device's shaping lines.
func (f *Fake) Qdisc(dev string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.qdisc[dev]...)
}

// Netns lists the namespaces.
func (f *Fake) Netns() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return sortedKeys(f.netns)
}

func (f *Fake) addLink(name, kind string, mtu int) *link {
	f.next++
	l := &link{Index: f.next, Name: name, MTU: mtu}
	l.Info.Kind = kind
	f.links[name] = l
	return l
}

// Run implements System.
func (f *Fake) Run(_ context.Context, c Cmd) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Log = append(f.Log, c)
	if f.FailOn != nil {
		if err := f.FailOn(c); err != nil {
			return nil, err
		}
	}
	a := c.Args
	refuse := func(why string) ([]byte, error) { return nil, fmt.Errorf("%w: %s: %s", ErrFake, c, why) }
	switch {
	case c.Path == "sysctl":
		return nil, nil
	case c.Path == "nft" && slices.Equal(a, []string{"-f", "-"}):
		f.Rules = c.Stdin
		return nil, nil
	case c.Path == "ip" && slices.Equal(a, []string{"-j", "-d", "link", "show"}):
		var ls []link
		for _, n := range sortedKeys(f.links) {
			ls = append(ls, *f.links[n])
		}
		return json.Marshal(ls)
	case c.Path == "ip" && slices.Equal(a, []string{"-j", "netns", "list"}):
		var ns []map[string]string
		for _, n := range sortedKeys(f.netns) {
			ns = append(ns, map[string]string{"name": n})
		}
		if len(ns) == 0 {
			return nil, nil
		}
		return json.Marshal(ns)
	case c.Path == "ip" && len(a) >= 3 && a[0] == "netns":
		switch a[1] {
		case "add":
			if f.netns[a[2]] {
				return refuse("exists")
			}
			f.netns[a[2]] = true
		case "del":
			if !f.netns[a[2]] {
				return refuse("no such namespace")
			}
			delete(f.netns, a[2])
			vni := a[2][strings.LastIndexByte(a[2], '-')+1:]
			if l := f.links["vpg-"+vni]; l != nil && l.Info.Kind == "veth" {
				delete(f.links, "vpg-"+vni)
			}
		}
		return nil, nil
	case c.Path == "ip" && len(a) > 0 && a[0] == "-n":
		if !f.netns[a[1]] {
			return refuse("no such namespace")
		}
		return nil, nil
	case c.Path == "ip" && len(a) >= 3 && a[0] == "link":
		return f.ipLink(a, refuse)
	case c.Path == "bridge" && len(a) >= 4 && a[0] == "-j" && a[1] == "fdb":
		if f.links[a[4]] == nil {
			return refuse("no such device")
		}
		return json.Marshal(f.fdb[a[4]])
	case c.Path == "bridge" && len(a) >= 6 && a[0] == "fdb":
		return f.bridgeFDB(a, refuse)
	case c.Path == "tc":
		return f.tc(a, refuse)
	}
	return refuse("not modelled")
}

func (f *Fake) ipLink(a []string, refuse func(string) ([]byte, error)) ([]byte, error) {
	switch a[1] {
	case "add":
		name, kind, mtu := a[2], "", 1500
		if a[2] == "link" { // ip link add link UPLINK name N ... type vlan
			name = a[5]
		}
		for i := 0; i+1 < len(a); i++ {
			switch a[i] {
			case "type":
				kind = a[i+1]
			case "mtu":
				mtu, _ = strconv.Atoi(a[i+1])
			}
		}
		if f.links[name] != nil {
			return refuse("exists")
		}
		l := f.addLink(name, kind, mtu)
		for i := 0; i+1 < len(a); i++ {
			switch a[i] {
			case "id":
				l.Info.Data.ID, _ = strconv.Atoi(a[i+1])
			case "local":
				l.Info.Data.Local = a[i+1]
			}
		}
		return nil, nil
	case "del":
		if f.links[a[2]] == nil {
			return refuse("no such device")
		}
		delete(f.links, a[2])
		delete(f.fdb, a[2])
		delete(f.qdisc, a[2])
		for _, l := range f.links {
			if l.Master == a[2] {
				l.Master = ""
			}
		}
		return nil, nil
	case "set":
		l := f.links[a[2]]
		if l == nil {
			return refuse("no such device")
		}
		for i := 3; i < len(a); i++ {
			switch a[i] {
			case "up":
				if !l.up() {
					l.Flags = append(l.Flags, "UP")
				}
			case "master":
				if f.links[a[i+1]] == nil {
					return refuse("no such master")
				}
				l.Master = a[i+1]
				i++
			case "mtu":
				l.MTU, _ = strconv.Atoi(a[i+1])
				i++
			}
		}
		return nil, nil
	}
	return refuse("not modelled")
}

func (f *Fake) bridgeFDB(a []string, refuse func(string) ([]byte, error)) ([]byte, error) {
	mac, dev, dst := a[2], a[4], a[6]
	if f.links[dev] == nil {
		return refuse("no such device")
	}
	es := f.fdb[dev]
	i := slices.IndexFunc(es, func(e fdbEntry) bool { return e.MAC == mac && e.Dst == dst })
	switch a[1] {
	case "append":
		if i >= 0 {
			return refuse("exists")
		}
		f.fdb[dev] = append(es, fdbEntry{MAC: mac, Dst: dst})
	case "replace":
		es = slices.DeleteFunc(es, func(e fdbEntry) bool { return e.MAC == mac })
		f.fdb[dev] = append(es, fdbEntry{MAC: mac, Dst: dst})
	case "del":
		if i < 0 {
			return refuse("no such entry")
		}
		f.fdb[dev] = slices.Delete(es, i, i+1)
	default:
		return refuse("not modelled")
	}
	return nil, nil
}

func (f *Fake) tc(a []string, refuse func(string) ([]byte, error)) ([]byte, error) {
	if len(a) < 4 || a[2] != "dev" || f.links[a[3]] == nil {
		return refuse("no such device")
	}
	dev, rest := a[3], strings.Join(a[4:], " ")
	q := f.qdisc[dev]
	kind := a[0] + " " + strings.Fields(rest)[0] // "qdisc root", "class parent", "filter parent"
	switch a[1] {
	case "replace":
		q = slices.DeleteFunc(q, func(s string) bool { return strings.HasPrefix(s, kind) })
		f.qdisc[dev] = append(q, a[0]+" "+rest)
	case "del":
		n := len(q)
		q = slices.DeleteFunc(q, func(s string) bool {
			return strings.HasPrefix(s, kind) || (rest == "root" && strings.HasPrefix(s, "class")) ||
				(rest == "ingress" && strings.HasPrefix(s, "filter"))
		})
		if len(q) == n {
			return refuse("no such qdisc")
		}
		f.qdisc[dev] = q
	default:
		return refuse("not modelled")
	}
	return nil, nil
}

var _ System = (*Fake)(nil)

// FakeDHCP is an in-memory DHCPServer.
type FakeDHCP struct {
	mu      sync.Mutex
	Configs map[int]DHCPConfig
	Starts  int
}

// Ensure implements DHCPServer.
func (d *FakeDHCP) Ensure(_ context.Context, c DHCPConfig) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.Configs == nil {
		d.Configs = map[int]DHCPConfig{}
	}
	if _, ok := d.Configs[c.VNI]; !ok {
		d.Starts++
	}
	d.Configs[c.VNI] = c
	return nil
}

// Stop implements DHCPServer.
func (d *FakeDHCP) Stop(vni int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.Configs, vni)
}

// Running implements DHCPServer.
func (d *FakeDHCP) Running() []int {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []int
	for v := range d.Configs {
		out = append(out, v)
	}
	sort.Ints(out)
	return out
}
