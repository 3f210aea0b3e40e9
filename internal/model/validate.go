package model

import (
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"
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

// Validate checks a VM spec and fills defaults (power on, one root disk
// name). It returns a *FieldError naming the first bad field. Every field
// that a host renders (names, MAC addresses, pools, networks, the image)
// is checked against a closed alphabet here, and every count and size is
// bounded (limits.go).
func (s *VMSpec) Validate() error {
	if s.VCPUs <= 0 {
		return fieldErr("spec.vcpus", "must be at least 1 (got %d)", s.VCPUs)
	}
	if s.VCPUs > MaxVCPUs {
		return fieldErr("spec.vcpus", "%d is more than the maximum of %d", s.VCPUs, MaxVCPUs)
	}
	if s.Memory < 0 {
		return fieldErr("spec.memory", "must not be negative (got %d); give a size with a unit, e.g. 512MiB or 2GiB", int64(s.Memory))
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
	if err := s.validateDisks(); err != nil {
		return err
	}
	if err := s.validateNICs(); err != nil {
		return err
	}
	if err := validOptionalName("spec.image", s.Image); err != nil {
		return err
	}
	if s.Power == "" {
		s.Power = PowerRunning
	}
	if s.Power != PowerRunning && s.Power != PowerStopped {
		return fieldErr("spec.power", "must be %q or %q (got %s)", PowerRunning, PowerStopped, quoteShort(string(s.Power)))
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
	if !ValidHALevel(s.HA) {
		return fieldErr("spec.ha", "must be high, medium, low or off (got %s)", quoteShort(s.HA))
	}
	if err := s.Watchdog.validate(); err != nil {
		return err
	}
	if s.RestartNonce < 0 {
		return fieldErr("spec.restartNonce", "must not be negative (got %d)", s.RestartNonce)
	}
	return nil
}

func (s *VMSpec) validateDisks() error {
	if len(s.Disks) > MaxDisks {
		return fieldErr("spec.disks", "has %d disks, more than the maximum of %d", len(s.Disks), MaxDisks)
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
		if d.Size < 0 {
			return fieldErr(f+".size", "must not be negative (got %d)", int64(d.Size))
		}
		if d.Size < MiB {
			return fieldErr(f+".size", "must be at least 1MiB (got %s)", d.Size)
		}
		if d.Size > MaxDisk {
			return fieldErr(f+".size", "%s is more than the maximum of %s", d.Size, MaxDisk)
		}
		if err := validOptionalName(f+".pool", d.Pool); err != nil {
			return err
		}
		if err := validOptionalName(f+".tier", d.Tier); err != nil {
			return err
		}
	}
	return nil
}

func (s *VMSpec) validateNICs() error {
	if len(s.NICs) > MaxNICs {
		return fieldErr("spec.nics", "has %d NICs, more than the maximum of %d", len(s.NICs), MaxNICs)
	}
	macs := map[string]int{}
	for i, n := range s.NICs {
		f := fmt.Sprintf("spec.nics[%d]", i)
		if err := validOptionalName(f+".network", n.Network); err != nil {
			return err
		}
		if err := s.NICs[i].validateNIC(f, i); err != nil {
			return err
		}
		if n.MAC == "" {
			continue
		}
		if err := ValidMAC(f+".mac", n.MAC); err != nil {
			return err
		}
		key := strings.ToLower(n.MAC)
		if j, dup := macs[key]; dup {
			return fieldErr(f+".mac", "%s is also the MAC of spec.nics[%d]", n.MAC, j)
		}
		macs[key] = i
	}
	return validateNICNames(s.NICs)
}

func (p *Placement) validate() error {
	if err := validLabels("spec.placement.requiredLabels", p.RequiredLabels); err != nil {
		return err
	}
	if err := validLabels("spec.placement.preferredLabels", p.PreferredLabels); err != nil {
		return err
	}
	if err := validOptionalName("spec.placement.isolationDomain", p.IsolationDomain); err != nil {
		return err
	}
	switch p.Affinity {
	case "", AffinityHard, AntiAffinityHard, AffinitySoft, AntiAffinitySoft:
	default:
		return fieldErr("spec.placement.affinity", "must be one of affinity, anti-affinity, soft-affinity, soft-anti-affinity (got %s)", quoteShort(p.Affinity))
	}
	if p.Affinity != "" && p.AffinityGroup == "" {
		return fieldErr("spec.placement.affinityGroup", "is required when affinity is set")
	}
	if err := validOptionalName("spec.placement.affinityGroup", p.AffinityGroup); err != nil {
		return err
	}
	if p.MaxPerHost < 0 || p.MaxPerHost > MaxMaxPerHost {
		return fieldErr("spec.placement.maxPerHost", "must be between 0 (no limit) and %d (got %d)", MaxMaxPerHost, p.MaxPerHost)
	}
	if p.MaxPerHost > 0 && p.AffinityGroup == "" {
		return fieldErr("spec.placement.affinityGroup", "is required when maxPerHost is set")
	}
	return validOptionalName("spec.placement.host", p.Host)
}

func (c *Controls) validate(s *VMSpec) error {
	if c.CPUShares < 0 || c.CPUShares > MaxCPUShares || c.CPUShares == 1 {
		return fieldErr("spec.controls.cpuShares", "must be 0 (the default %d) or between 2 and %d (got %d)", DefaultCPUShares, MaxCPUShares, c.CPUShares)
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
		return fieldErr("spec.controls.memoryReservation", "must be between 0 and the VM's memory %s (got %d bytes)", s.Memory, int64(c.MemoryReservation))
	}
	if c.MemoryLimit < 0 || (c.MemoryLimit > 0 && c.MemoryLimit < s.Memory) || c.MemoryLimit > MaxMemory {
		return fieldErr("spec.controls.memoryLimit", "must be 0 (none) or between the VM's memory %s and %s (got %d bytes)", s.Memory, MaxMemory, int64(c.MemoryLimit))
	}
	if c.DiskIOPS < 0 || c.DiskIOPS > MaxDiskIOPS {
		return fieldErr("spec.controls.diskIops", "must be between 0 (no limit) and %d (got %d)", MaxDiskIOPS, c.DiskIOPS)
	}
	if c.DiskBps < 0 || c.DiskBps > MaxDiskBps {
		return fieldErr("spec.controls.diskBps", "must be between 0 (no limit) and %d bytes/s (got %d)", MaxDiskBps, c.DiskBps)
	}
	return nil
}

// Validate checks a project.
func (p *Project) Validate() error {
	if err := ValidName("name", p.Name); err != nil {
		return err
	}
	if err := ValidDescription("description", p.Description); err != nil {
		return err
	}
	return p.Quota.Validate()
}

// ValidDescription checks free text: at most MaxDescription bytes of
// UTF-8 without control characters other than newline and tab.
func ValidDescription(field, s string) error {
	if len(s) > MaxDescription {
		return fieldErr(field, "is %d bytes, more than the maximum of %d", len(s), MaxDescription)
	}
	if !utf8.ValidString(s) {
		return fieldErr(field, "is not valid UTF-8")
	}
	for _, r := range s {
		if (r < 0x20 && r != '\n' && r != '\t') || r == 0x7f {
			return fieldErr(field, "holds the control character %U", r)
		}
	}
	return nil
}

// Validate checks a quota: each figure is 0 (unlimited) or positive and
// at most MaxQuotaCount (counts) or MaxQuotaSize (sizes).
func (q *Quota) Validate() error {
	for _, c := range []struct {
		field string
		n     int64
		max   int64
	}{
		{"quota.vcpus", int64(q.VCPUs), MaxQuotaCount}, {"quota.memory", int64(q.Memory), int64(MaxQuotaSize)},
		{"quota.disk", int64(q.Disk), int64(MaxQuotaSize)}, {"quota.vms", int64(q.VMs), MaxQuotaCount},
	} {
		if c.n < 0 || c.n > c.max {
			return fieldErr(c.field, "must be between 0 (unlimited) and %d (got %d)", c.max, c.n)
		}
	}
	return nil
}

// Admit checks whether adding d to u stays within q. It returns a
// *FieldError naming the exhausted quota, or nil. It compares what is
// asked with what is left, so no sum can overflow.
func (q Quota) Admit(u Usage, vcpus int, mem, disk Bytes, vms int) error {
	if q.VMs > 0 && vms > q.VMs-u.VMs {
		return fieldErr("quota.vms", "project quota exceeded: %d of %d VMs in use", u.VMs, q.VMs)
	}
	if q.VCPUs > 0 && vcpus > q.VCPUs-u.VCPUs {
		return fieldErr("quota.vcpus", "project quota exceeded: %d of %d vCPUs in use, %d more asked", u.VCPUs, q.VCPUs, vcpus)
	}
	if q.Memory > 0 && mem > q.Memory-u.Memory {
		return fieldErr("quota.memory", "project quota exceeded: %s of %s memory in use, %s more asked", u.Memory, q.Memory, mem)
	}
	if q.Disk > 0 && disk > q.Disk-u.Disk {
		return fieldErr("quota.disk", "project quota exceeded: %s of %s disk in use, %s more asked", u.Disk, q.Disk, disk)
	}
	return nil
}

// Validate checks a cluster policy: ratios in range, a known strategy,
// at most MaxWeights weights named like plugins, each in [0, 100].
func (p *Policy) Validate() error {
	for _, r := range []struct {
		field string
		v     float64
		max   float64
	}{{"ratios.cpu", p.Ratios.CPU, 64}, {"ratios.memory", p.Ratios.Memory, 3}, {"ratios.disk", p.Ratios.Disk, 20}} {
		if !finite(r.v) || r.v < 0 || r.v > r.max {
			return fieldErr(r.field, "must be between 0 (the default) and %g (got %g)", r.max, r.v)
		}
	}
	if p.MigrationDowntimeLimitMs < 0 || p.MigrationDowntimeLimitMs > MaxDowntimeLimitMs {
		return fieldErr("migrationDowntimeLimitMs", "must be 0 (the default %d) to %d ms (got %d)",
			DefaultDowntimeLimitMs, MaxDowntimeLimitMs, p.MigrationDowntimeLimitMs)
	}
	if p.MigrationMultifdChannels < 0 || p.MigrationMultifdChannels > MaxMultifdChannels {
		return fieldErr("migrationMultifdChannels", "must be 0 (the source host chooses), 1 (one stream) or up to %d channels (got %d)",
			MaxMultifdChannels, p.MigrationMultifdChannels)
	}
	switch strings.ToLower(p.Strategy) {
	case "", "binpack", "spread":
	default:
		return fieldErr("strategy", "must be binpack or spread (got %s)", quoteShort(p.Strategy))
	}
	if len(p.Weights) > MaxWeights {
		return fieldErr("weights", "has %d entries, more than the maximum of %d", len(p.Weights), MaxWeights)
	}
	keys := make([]string, 0, len(p.Weights))
	for k := range p.Weights {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !dnsLabel.MatchString(k) {
			return fieldErr("weights", "%s is not a plugin name (binpack, spread, balance, energy, labels, affinity, scarcity, ...)", quoteShort(k))
		}
		if w := p.Weights[k]; !finite(w) || w < 0 || w > MaxWeight {
			return fieldErr("weights."+k, "must be between 0 and %d (got %g)", MaxWeight, w)
		}
	}
	if p.HA != nil {
		return p.HA.Validate()
	}
	return nil
}
