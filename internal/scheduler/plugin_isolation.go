package scheduler

import "fmt"

// Isolation keeps security domains apart. A VM with IsolationDomain X
// shares a host only with VMs of domain X. The rule is symmetric: a VM
// without a domain never lands on a host that holds domain VMs, because
// that would make those VMs share their host with an outsider.
type Isolation struct{}

var _ Filter = (*Isolation)(nil)

const (
	reasonHoldsDomains uint8 = iota // VM without a domain, host has domain VMs
	reasonOtherTenants              // VM in domain X, host has VMs outside X
)

// Name implements Plugin.
func (Isolation) Name() string { return "isolation" }

// Filter implements Filter.
func (Isolation) Filter(c *Cycle, h int) Status {
	r := &c.snap.hosts[h]
	if c.d.dom == noDomain {
		if r.domVMs > 0 {
			return reject(reasonHoldsDomains, 0)
		}
		return ok
	}
	if r.vms > 0 && (r.dom != c.d.dom || r.domVMs != r.vms) {
		return reject(reasonOtherTenants, 0)
	}
	return ok
}

// Explain implements Filter.
func (Isolation) Explain(c *Cycle, reason uint8, _ int64) string {
	if reason == reasonHoldsDomains {
		return "runs VMs of an isolation domain (this VM has none)"
	}
	return fmt.Sprintf("runs VMs outside isolation domain %q", c.d.domain)
}
