// Package haproxy is the data path of vpool's load balancers: HAProxy
// (Debian's haproxy package), one instance per balancer in a network
// namespace of its own whose veth is a port of the balancer's network
// bridge, holding the virtual IP. It renders HAProxy's configuration
// (golden-tested), runs HAProxy in master-worker mode, reloads it
// without dropping connections (the master CLI's reload: the new worker
// takes the listening sockets over from the old one, which finishes its
// connections; server states are carried across reloads through
// server-state-file) and reads members' health and connections from
// every worker through the master CLI.
//
// It imports the standard library, internal/model and internal/netvirt
// (for the System that runs ip commands); no store, server or agent.
package haproxy

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/vpool/vpool/internal/model"
)

// Spec is one balancer as a host serves it.
type Spec struct {
	// ID names the balancer on the host ("project/name").
	ID string
	// Where the virtual IP lives: the network's bridge (VNI), its
	// subnet and MTU, the veth on the bridge (Port) and its MAC.
	VNI    int
	Subnet netip.Prefix
	MTU    int
	Port   string
	MAC    string
	VIP    netip.Addr

	Listen     int
	MemberPort int
	Algorithm  string
	Check      model.LBHealthCheck
	// Drain bounds how long an old worker keeps its connections after a
	// reload (hard-stop-after).
	Drain   time.Duration
	Members []Member
}

// Member is one backend.
type Member struct {
	Name     string
	IP       netip.Addr
	Draining bool
}

// RenderConfig renders HAProxy's configuration for one balancer; dir is
// its runtime directory (stats socket, server-state file).
func RenderConfig(s Spec, dir string) string {
	ms := append([]Member(nil), s.Members...)
	sort.Slice(ms, func(i, j int) bool { return ms[i].Name < ms[j].Name })
	c := s.Check
	drain := max(s.Drain, time.Second)
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	w("# vpool load balancer %s: rendered by the agent, do not edit", s.ID)
	w("global")
	w("\tmaster-worker")
	w("\tstats socket %s/stats.sock mode 600 level admin expose-fd listeners", dir)
	w("\tserver-state-file %s/server-state", dir)
	w("\thard-stop-after %dms", drain.Milliseconds())
	w("\tmaxconn 8000")
	w("\tnbthread 1")
	w("defaults")
	w("\tmode tcp")
	w("\tload-server-state-from-file global")
	w("\ttimeout connect %dms", max(1000, c.TimeoutMs))
	w("\ttimeout client 1h")
	w("\ttimeout server 1h")
	w("\ttimeout check %dms", c.TimeoutMs)
	w("\tretries 2")
	w("\toption redispatch")
	w("frontend vip")
	w("\tbind %s:%d", s.VIP, s.Listen)
	w("\tdefault_backend members")
	w("backend members")
	w("\tbalance %s", s.Algorithm)
	if s.Algorithm == model.LBSource {
		w("\thash-type consistent")
	}
	w("\tdefault-server check inter %dms fastinter %dms downinter %dms rise %d fall %d", c.IntervalMs, c.IntervalMs, c.IntervalMs, c.Rise, c.Fall)
	for _, m := range ms {
		line := fmt.Sprintf("\tserver %s %s:%d", m.Name, m.IP, s.MemberPort)
		if m.Draining {
			line += " weight 0"
		}
		w("%s", line)
	}
	return b.String()
}
