package model

import (
	"fmt"
	"net/netip"
	"time"
)

// Load balancer algorithms (HAProxy's balance keywords).
const (
	LBRoundRobin = "roundrobin"
	LBLeastConn  = "leastconn"
	LBSource     = "source"
)

// Load balancer phases.
const (
	LBPending  = "pending"  // no host chosen yet (none can serve its network)
	LBActive   = "active"   // placed: its host's agent serves it
	LBDeleting = "deleting" // deletion asked; its host stops it, then the record goes
)

// Load balancer member states (the controller's).
const (
	MemberActive   = "active"   // gets new connections when healthy
	MemberDraining = "draining" // no new connections; removed once idle or at the drain timeout
)

// Load balancer limits and defaults. The health-check defaults take a
// dead member out within Interval × Fall + Timeout = 1.5 s.
const (
	MaxLBMembers         = 256
	DefaultCheckInterval = 500 // ms
	DefaultCheckTimeout  = 500 // ms
	DefaultCheckRise     = 2
	DefaultCheckFall     = 2
	MinCheckInterval     = 100
	MaxCheckInterval     = 60_000
	MaxCheckCount        = 10
	DefaultDrainTimeout  = 30 // s
	MaxDrainTimeout      = 3600
)

// What one balancer takes on the host that serves it, counted in
// placement (Host.Balancers). HAProxy 2.6's master holds ~12 MiB and
// each worker ~7 MiB resident when idle (measured), old workers live on
// while they drain after a reload, and each connection takes two 16 KiB
// buffers (1,000 connections ≈ 32 MiB); its CPU work is per connection.
// The reserve is a budget for that, so VMs placed next to a balancer
// leave it room.
const (
	LBReserveCPUMilli = 250
	LBReserveMemory   = 64 * MiB
)

// LoadBalancer is an L4 (TCP) load balancer of a project: a virtual IP
// on one of its networks, served by HAProxy on one host, spreading the
// connections to one port over members (VMs of the project) that pass a
// TCP health check.
type LoadBalancer struct {
	Meta
	Spec   LBSpec   `json:"spec"`
	Status LBStatus `json:"status"`
}

// Key returns "project/name".
func (b *LoadBalancer) Key() string { return b.Project + "/" + b.Name }

// LBOwner is the address owner of a balancer's virtual IP.
func LBOwner(name string) string { return "lb/" + name }

// LBSpec is what the user asked for.
type LBSpec struct {
	// Network is the project's network the virtual IP is on; members are
	// reached at their NIC's address on it.
	Network string `json:"network"`
	// Listen is the TCP port of the virtual IP; MemberPort the members'
	// port (default Listen).
	Listen     int `json:"listen"`
	MemberPort int `json:"memberPort,omitempty"`
	// Algorithm is roundrobin (default), leastconn or source.
	Algorithm string    `json:"algorithm,omitempty"`
	Members   LBMembers `json:"members,omitempty"`
	// IP asks for a fixed virtual IP (default: a free one of the network).
	IP          string        `json:"ip,omitempty"`
	HealthCheck LBHealthCheck `json:"healthCheck,omitempty"`
	// DrainTimeout (seconds) bounds how long a removed member keeps its
	// established connections before it is dropped (default 30).
	DrainTimeout int    `json:"drainTimeoutSeconds,omitempty"`
	Description  string `json:"description,omitempty"`
}

// LBMembers names the balancer's members: VMs of the project, and the
// members of a scaling group (plus those of every group whose spec.lb
// names this balancer).
type LBMembers struct {
	Group string   `json:"group,omitempty"`
	VMs   []string `json:"vms,omitempty"`
}

// LBHealthCheck is a TCP connect check of each member.
type LBHealthCheck struct {
	IntervalMs int `json:"intervalMs,omitempty"`
	TimeoutMs  int `json:"timeoutMs,omitempty"`
	Rise       int `json:"rise,omitempty"`
	Fall       int `json:"fall,omitempty"`
}

// LBStatus is what the system decided (Host, VIP, Members: the leader's
// controller) and observed (Observed: the host's agent).
type LBStatus struct {
	Phase string `json:"phase"`
	Host  string `json:"host,omitempty"`
	VIP   string `json:"vip,omitempty"`
	MAC   string `json:"mac,omitempty"`
	// Placement says why the host was chosen (or why none could be).
	Placement string      `json:"placement,omitempty"`
	Members   []LBMember  `json:"members,omitempty"`
	Observed  *LBObserved `json:"observed,omitempty"`
}

// LBMember is one backend as the controller wants it served.
type LBMember struct {
	VM    string `json:"vm"`
	IP    string `json:"ip"`
	State string `json:"state"`
	// DrainSince is when the member began to drain.
	DrainSince *time.Time `json:"drainSince,omitempty"`
}

// LBObserved is what the host's agent last reported of the balancer.
type LBObserved struct {
	At      time.Time `json:"at"`
	Host    string    `json:"host"`
	Running bool      `json:"running"`
	Error   string    `json:"error,omitempty"`
	// Members maps a member's VM name to its health and connections.
	Members map[string]LBMemberHealth `json:"members,omitempty"`
}

// LBMemberHealth is one member as HAProxy sees it.
type LBMemberHealth struct {
	// Health is up, down or unknown (not checked yet).
	Health string `json:"health"`
	// Sessions counts its open connections, across HAProxy's current
	// and older (reloaded, finishing) processes.
	Sessions int `json:"sessions"`
	// Draining says the host serves it as draining (weight 0).
	Draining bool `json:"draining,omitempty"`
}

// Validate checks a balancer spec and fills its defaults. It returns a
// *FieldError naming the first bad field.
func (s *LBSpec) Validate() error {
	if err := ValidName("spec.network", s.Network); err != nil {
		return err
	}
	if s.Listen < 1 || s.Listen > MaxPortNumber {
		return fieldErr("spec.listen", "%d is not a TCP port: use 1 to %d", s.Listen, MaxPortNumber)
	}
	if s.MemberPort == 0 {
		s.MemberPort = s.Listen
	}
	if s.MemberPort < 1 || s.MemberPort > MaxPortNumber {
		return fieldErr("spec.memberPort", "%d is not a TCP port: use 1 to %d", s.MemberPort, MaxPortNumber)
	}
	switch s.Algorithm {
	case "":
		s.Algorithm = LBRoundRobin
	case LBRoundRobin, LBLeastConn, LBSource:
	default:
		return fieldErr("spec.algorithm", "%s is not an algorithm: use roundrobin, leastconn or source", quoteShort(s.Algorithm))
	}
	if err := validOptionalName("spec.members.group", s.Members.Group); err != nil {
		return err
	}
	if len(s.Members.VMs) > MaxLBMembers {
		return fieldErr("spec.members.vms", "has %d VMs, more than %d", len(s.Members.VMs), MaxLBMembers)
	}
	seen := map[string]bool{}
	for i, v := range s.Members.VMs {
		f := fmt.Sprintf("spec.members.vms[%d]", i)
		if err := ValidName(f, v); err != nil {
			return fieldErr(f, "%s is not a VM of this project: members are VM names of the balancer's project (a VM of another project cannot be a member)", quoteShort(v))
		}
		if seen[v] {
			return fieldErr(f, "%s is listed twice", v)
		}
		seen[v] = true
	}
	if s.IP != "" {
		if a, err := netip.ParseAddr(s.IP); err != nil || !a.Is4() {
			return fieldErr("spec.ip", "%s is not an IPv4 address", quoteShort(s.IP))
		}
	}
	if err := s.HealthCheck.validate(); err != nil {
		return err
	}
	if s.DrainTimeout == 0 {
		s.DrainTimeout = DefaultDrainTimeout
	}
	if s.DrainTimeout < 0 || s.DrainTimeout > MaxDrainTimeout {
		return fieldErr("spec.drainTimeoutSeconds", "%d is out of range: use 1 to %d", s.DrainTimeout, MaxDrainTimeout)
	}
	if len(s.Description) > MaxDescription {
		return fieldErr("spec.description", "is %d bytes, more than %d", len(s.Description), MaxDescription)
	}
	return nil
}

func (h *LBHealthCheck) validate() error {
	if h.IntervalMs == 0 {
		h.IntervalMs = DefaultCheckInterval
	}
	if h.IntervalMs < MinCheckInterval || h.IntervalMs > MaxCheckInterval {
		return fieldErr("spec.healthCheck.intervalMs", "%d is out of range: use %d to %d", h.IntervalMs, MinCheckInterval, MaxCheckInterval)
	}
	if h.TimeoutMs == 0 {
		h.TimeoutMs = min(DefaultCheckTimeout, h.IntervalMs)
	}
	if h.TimeoutMs < MinCheckInterval || h.TimeoutMs > h.IntervalMs {
		return fieldErr("spec.healthCheck.timeoutMs", "%d is out of range: use %d to the interval (%d)", h.TimeoutMs, MinCheckInterval, h.IntervalMs)
	}
	for _, c := range []struct {
		f string
		v *int
		d int
	}{{"rise", &h.Rise, DefaultCheckRise}, {"fall", &h.Fall, DefaultCheckFall}} {
		if *c.v == 0 {
			*c.v = c.d
		}
		if *c.v < 1 || *c.v > MaxCheckCount {
			return fieldErr("spec.healthCheck."+c.f, "%d is out of range: use 1 to %d", *c.v, MaxCheckCount)
		}
	}
	return nil
}

// FailoverBound is the longest a dead member keeps getting new
// connections under this check: Fall failed checks, the last one timing out.
func (h LBHealthCheck) FailoverBound() time.Duration {
	return time.Duration(h.IntervalMs*h.Fall+h.TimeoutMs) * time.Millisecond
}
