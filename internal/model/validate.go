package model

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// FieldError is a validation failure that names the field at fault and
// says how to fix it.
type FieldError struct {
	Field   string
	Message string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Message }

func fieldErr(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Message: fmt.Sprintf(format, args...)}
}

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// ValidName checks that s is a DNS label (RFC 1123): lowercase letters,
// digits and '-', 1–63 characters, starting and ending alphanumeric.
func ValidName(field, s string) error {
	if s == "" {
		return fieldErr(field, "is required")
	}
	if !dnsLabel.MatchString(s) {
		return fieldErr(field, "%q is not a DNS label: use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit", s)
	}
	return nil
}

var labelKey = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._/-]{0,62}[A-Za-z0-9])?$`)
var labelVal = regexp.MustCompile(`^[A-Za-z0-9._-]{0,63}$`)

func validLabels(field string, m map[string]string) error {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !labelKey.MatchString(k) {
			return fieldErr(field, "label key %q is invalid: use letters, digits, '.', '_', '/', '-' (1-64 chars)", k)
		}
		if !labelVal.MatchString(m[k]) {
			return fieldErr(field, "label %q has invalid value %q: use letters, digits, '.', '_', '-' (up to 63 chars)", k, m[k])
		}
	}
	return nil
}

// Validate checks a VM spec and fills defaults (power on, one root disk
// name). It returns a *FieldError naming the first bad field.
func (s *VMSpec) Validate() error {
	if s.VCPUs <= 0 {
		return fieldErr("spec.vcpus", "must be at least 1 (got %d)", s.VCPUs)
	}
	if s.VCPUs > MaxVCPUs {
		return fieldErr("spec.vcpus", "%d is more than the maximum of %d", s.VCPUs, MaxVCPUs)
	}
	if s.Memory < 16*MiB {
		return fieldErr("spec.memory", "must be at least 16MiB (got %s); give a size with a unit, e.g. 512MiB or 2GiB", s.Memory)
	}
	if s.Memory > MaxMemory {
		return fieldErr("spec.memory", "%s is more than the maximum of %s", s.Memory, MaxMemory)
	}
	if s.Memory%MiB != 0 {
		return fieldErr("spec.memory", "%d bytes is not a whole number of MiB", int64(s.Memory))
	}
	seen := map[string]bool{}
	for i := range s.Disks {
		d := &s.Disks[i]
		f := fmt.Sprintf("spec.disks[%d]", i)
		if d.Name == "" {
			d.Name = fmt.Sprintf("disk%d", i)
		}
		if err := ValidName(f+".name", d.Name); err != nil {
			return err
		}
		if seen[d.Name] {
			return fieldErr(f+".name", "disk name %q is used twice", d.Name)
		}
		seen[d.Name] = true
		if d.Size < MiB {
			return fieldErr(f+".size", "must be at least 1MiB (got %s)", d.Size)
		}
		if d.Size > MaxDisk {
			return fieldErr(f+".size", "%s is more than the maximum of %s", d.Size, MaxDisk)
		}
	}
	if s.Power == "" {
		s.Power = PowerRunning
	}
	if s.Power != PowerRunning && s.Power != PowerStopped {
		return fieldErr("spec.power", "must be %q or %q (got %q)", PowerRunning, PowerStopped, s.Power)
	}
	if err := validLabels("spec.labels", s.Labels); err != nil {
		return err
	}
	if err := s.Placement.validate(); err != nil {
		return err
	}
	if err := s.Migration.validate(); err != nil {
		return err
	}
	if err := s.CloudInit.Validate(); err != nil {
		return err
	}
	if err := s.Controls.validate(s); err != nil {
		return err
	}
	if s.HAPriority < 0 || s.HAPriority > 1000 {
		return fieldErr("spec.haPriority", "must be between 0 and 1000 (got %d)", s.HAPriority)
	}
	return nil
}

func (p *Placement) validate() error {
	if err := validLabels("spec.placement.requiredLabels", p.RequiredLabels); err != nil {
		return err
	}
	if err := validLabels("spec.placement.preferredLabels", p.PreferredLabels); err != nil {
		return err
	}
	if p.IsolationDomain != "" {
		if err := ValidName("spec.placement.isolationDomain", p.IsolationDomain); err != nil {
			return err
		}
	}
	switch p.Affinity {
	case "", AffinityHard, AntiAffinityHard, AffinitySoft, AntiAffinitySoft:
	default:
		return fieldErr("spec.placement.affinity", "must be one of affinity, anti-affinity, soft-affinity, soft-anti-affinity (got %q)", p.Affinity)
	}
	if p.Affinity != "" && p.AffinityGroup == "" {
		return fieldErr("spec.placement.affinityGroup", "is required when affinity is set")
	}
	if p.AffinityGroup != "" {
		if err := ValidName("spec.placement.affinityGroup", p.AffinityGroup); err != nil {
			return err
		}
	}
	if p.MaxPerHost < 0 {
		return fieldErr("spec.placement.maxPerHost", "must not be negative (got %d)", p.MaxPerHost)
	}
	if p.MaxPerHost > 0 && p.AffinityGroup == "" {
		return fieldErr("spec.placement.affinityGroup", "is required when maxPerHost is set")
	}
	if p.Host != "" {
		if err := ValidName("spec.placement.host", p.Host); err != nil {
			return err
		}
	}
	return nil
}

func (c *Controls) validate(s *VMSpec) error {
	if c.CPUShares < 0 || c.CPUShares > 262144 {
		return fieldErr("spec.controls.cpuShares", "must be between 2 and 262144 (got %d)", c.CPUShares)
	}
	if c.CPUShares > 0 && c.CPUShares < 2 {
		return fieldErr("spec.controls.cpuShares", "must be between 2 and 262144 (got %d)", c.CPUShares)
	}
	maxMilli := s.VCPUs * 1000
	if c.CPUReservation < 0 || c.CPUReservation > maxMilli {
		return fieldErr("spec.controls.cpuReservationMilli", "must be between 0 and %d (vcpus × 1000), got %d", maxMilli, c.CPUReservation)
	}
	if c.CPULimit < 0 || c.CPULimit > maxMilli {
		return fieldErr("spec.controls.cpuLimitMilli", "must be between 0 and %d (vcpus × 1000), got %d", maxMilli, c.CPULimit)
	}
	if c.CPULimit > 0 && c.CPULimit < 10 {
		return fieldErr("spec.controls.cpuLimitMilli", "must be at least 10 (0.01 CPU) when set, got %d", c.CPULimit)
	}
	if c.CPULimit > 0 && c.CPUReservation > c.CPULimit {
		return fieldErr("spec.controls.cpuReservationMilli", "reservation %d is above the limit %d", c.CPUReservation, c.CPULimit)
	}
	if c.MemoryReservation < 0 || c.MemoryReservation > s.Memory {
		return fieldErr("spec.controls.memoryReservation", "must be between 0 and the VM's memory %s (got %s)", s.Memory, c.MemoryReservation)
	}
	if c.MemoryLimit < 0 || (c.MemoryLimit > 0 && c.MemoryLimit < s.Memory) {
		return fieldErr("spec.controls.memoryLimit", "must be 0 (none) or at least the VM's memory %s (got %s)", s.Memory, c.MemoryLimit)
	}
	if c.DiskIOPS < 0 {
		return fieldErr("spec.controls.diskIops", "must not be negative (got %d)", c.DiskIOPS)
	}
	if c.DiskBps < 0 {
		return fieldErr("spec.controls.diskBps", "must not be negative (got %d)", c.DiskBps)
	}
	return nil
}

// Validate checks a project.
func (p *Project) Validate() error {
	if err := ValidName("name", p.Name); err != nil {
		return err
	}
	return p.Quota.Validate()
}

// Validate checks a quota.
func (q *Quota) Validate() error {
	switch {
	case q.VCPUs < 0:
		return fieldErr("quota.vcpus", "must not be negative (0 means unlimited)")
	case q.Memory < 0:
		return fieldErr("quota.memory", "must not be negative (0 means unlimited)")
	case q.Disk < 0:
		return fieldErr("quota.disk", "must not be negative (0 means unlimited)")
	case q.VMs < 0:
		return fieldErr("quota.vms", "must not be negative (0 means unlimited)")
	}
	return nil
}

// Admit checks whether adding d to u stays within q. It returns a
// *FieldError naming the exhausted quota, or nil.
func (q Quota) Admit(u Usage, vcpus int, mem, disk Bytes, vms int) error {
	if q.VMs > 0 && u.VMs+vms > q.VMs {
		return fieldErr("quota.vms", "project quota exceeded: %d of %d VMs in use", u.VMs, q.VMs)
	}
	if q.VCPUs > 0 && u.VCPUs+vcpus > q.VCPUs {
		return fieldErr("quota.vcpus", "project quota exceeded: %d of %d vCPUs in use, %d more asked", u.VCPUs, q.VCPUs, vcpus)
	}
	if q.Memory > 0 && u.Memory+mem > q.Memory {
		return fieldErr("quota.memory", "project quota exceeded: %s of %s memory in use, %s more asked", u.Memory, q.Memory, mem)
	}
	if q.Disk > 0 && u.Disk+disk > q.Disk {
		return fieldErr("quota.disk", "project quota exceeded: %s of %s disk in use, %s more asked", u.Disk, q.Disk, disk)
	}
	return nil
}

// Validate checks a cluster policy.
func (p *Policy) Validate() error {
	if p.Ratios.CPU < 0 || p.Ratios.CPU > 64 {
		return fieldErr("ratios.cpu", "must be between 0 and 64 (got %g)", p.Ratios.CPU)
	}
	if p.Ratios.Memory < 0 || p.Ratios.Memory > 3 {
		return fieldErr("ratios.memory", "must be between 0 and 3.0 (got %g)", p.Ratios.Memory)
	}
	if p.Ratios.Disk < 0 || p.Ratios.Disk > 20 {
		return fieldErr("ratios.disk", "must be between 0 and 20 (got %g)", p.Ratios.Disk)
	}
	switch strings.ToLower(p.Strategy) {
	case "", "binpack", "spread":
	default:
		return fieldErr("strategy", "must be binpack or spread (got %q)", p.Strategy)
	}
	for k, w := range p.Weights {
		if w < 0 || w > 100 {
			return fieldErr("weights."+k, "must be between 0 and 100 (got %g)", w)
		}
	}
	return nil
}
