package netvirt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
)

// DHCPServer runs one DHCP server per network on this host (Dnsmasq is
// the real one).
type DHCPServer interface {
	// Ensure starts the server of cfg's network, or reloads it when its
	// reservations changed.
	Ensure(ctx context.Context, cfg DHCPConfig) error
	// Stop ends the server of a network; Running lists the running ones.
	Stop(vni int)
	Running() []int
}

// Manager applies HostPlans to one host. Apply is idempotent and may be
// called as often as the plan changes; it converges from whatever is
// there (after an agent restart it adopts the devices and replaces the
// ruleset).
type Manager struct {
	sys  System
	dhcp DHCPServer
	log  *slog.Logger

	mu        sync.Mutex
	lastRules string
	qos       map[string]qosState
	sysctlSet bool
}

// NewManager returns a Manager over sys; dhcp may be nil (no DHCP).
func NewManager(sys System, dhcp DHCPServer, log *slog.Logger) *Manager {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Manager{sys: sys, dhcp: dhcp, log: log.With("component", "netvirt"), qos: map[string]qosState{}}
}

// ErrPlan says a plan is inconsistent (a port on a network it lacks).
var ErrPlan = errors.New("netvirt: bad plan")

func (p *HostPlan) check() error {
	for _, n := range p.Networks {
		if n.Mode != "vlan" && !p.Underlay.IsValid() && len(p.Networks) > 0 {
			return fmt.Errorf("%w: network %d is VXLAN but the host has no underlay address", ErrPlan, n.VNI)
		}
		if n.Mode == "vlan" && p.Uplink == "" {
			return fmt.Errorf("%w: network %d is a VLAN but the host has no uplink", ErrPlan, n.VNI)
		}
	}
	for _, pt := range p.Ports {
		if p.network(pt.VNI) == nil {
			return fmt.Errorf("%w: port %s is on network %d, which the plan lacks", ErrPlan, pt.Tap, pt.VNI)
		}
	}
	return nil
}

// Apply makes the host match plan. The ruleset goes first, so that no
// port is ever on a bridge without its rules (and ports vpool does not
// know pass nothing); then devices, forwarding entries, rate limits,
// removal of what is gone, and the DHCP servers. Errors of one step do
// not stop the others; they are joined.
func (m *Manager) Apply(ctx context.Context, plan HostPlan) error {
	plan.normalize()
	if err := plan.check(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	if !m.sysctlSet {
		// Bridged IPv4 must pass the inet hooks (conntrack, the rules).
		if _, err := m.sys.Run(ctx, Cmd{Path: "sysctl", Args: []string{"-qw", "net.bridge.bridge-nf-call-iptables=1"}}); err != nil {
			return fmt.Errorf("netvirt: bridged traffic cannot be filtered: %w", err)
		}
		m.sysctlSet = true
	}
	if err := m.applyRules(ctx, &plan); err != nil {
		// Without the rules nothing else is safe to change.
		return err
	}
	o, err := observe(ctx, m.sys)
	if err != nil {
		return err
	}
	create, gc := linkCmds(&plan, o)
	errs = append(errs, m.run(ctx, create))
	for _, n := range plan.Networks {
		if n.Mode == "vlan" {
			continue
		}
		cmds, err := fdbCmds(ctx, m.sys, n)
		errs = append(errs, err, m.run(ctx, cmds))
	}
	errs = append(errs, m.applyQoS(ctx, &plan, o))
	errs = append(errs, m.run(ctx, gc))
	errs = append(errs, m.applyDHCP(ctx, &plan))
	return errors.Join(errs...)
}

// Rules returns the ruleset last applied.
func (m *Manager) Rules() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lastRules
}

func (m *Manager) applyRules(ctx context.Context, plan *HostPlan) error {
	rules := RenderRuleset(*plan)
	if rules == m.lastRules {
		return nil
	}
	if _, err := m.sys.Run(ctx, Cmd{Path: "nft", Args: []string{"-f", "-"}, Stdin: rules}); err != nil {
		return fmt.Errorf("netvirt: apply ruleset: %w", err)
	}
	m.lastRules = rules
	return nil
}

func (m *Manager) run(ctx context.Context, cmds []Cmd) error {
	var errs []error
	for _, c := range cmds {
		if _, err := m.sys.Run(ctx, c); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (m *Manager) applyQoS(ctx context.Context, plan *HostPlan, o observed) error {
	var errs []error
	seen := map[string]bool{}
	for _, pt := range plan.Ports {
		l, ok := o.links[pt.Tap]
		if !ok {
			continue
		}
		seen[pt.Tap] = true
		old, known := m.qos[pt.Tap]
		_, ifb := o.links[IFBName(pt.Tap)]
		if err := m.run(ctx, qosCmds(pt, l.Index, old, known, ifb)); err != nil {
			errs = append(errs, err)
			delete(m.qos, pt.Tap) // redo it all next time
			continue
		}
		m.qos[pt.Tap] = qosState{index: l.Index, in: pt.IngressKbps, out: pt.EgressKbps}
	}
	for tap := range m.qos {
		if !seen[tap] {
			delete(m.qos, tap)
		}
	}
	return errors.Join(errs...)
}

func (m *Manager) applyDHCP(ctx context.Context, plan *HostPlan) error {
	if m.dhcp == nil {
		return nil
	}
	var errs []error
	want := map[int]bool{}
	for _, n := range plan.Networks {
		if !n.DHCP {
			continue
		}
		want[n.VNI] = true
		if err := m.dhcp.Ensure(ctx, dhcpConfig(n, plan.netns(n.VNI))); err != nil {
			errs = append(errs, err)
		}
	}
	for _, vni := range m.dhcp.Running() {
		if !want[vni] {
			m.dhcp.Stop(vni)
		}
	}
	return errors.Join(errs...)
}
