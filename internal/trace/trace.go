package trace

import (
	"errors"
	"fmt"
)

// Sentinel errors; wrapped errors carry the file and line.
var (
	// ErrFormat reports malformed input.
	ErrFormat = errors.New("trace: malformed input")
	// ErrEmpty reports a trace without any VM or sample.
	ErrEmpty = errors.New("trace: empty trace")
	// ErrTooLarge reports input beyond the reader's limits.
	ErrTooLarge = errors.New("trace: trace too large")
)

// Limits protect readers from hostile input.
const (
	MaxSamples = 1 << 20 // per VM
	MaxVMs     = 1 << 20
	// MaxTotalSamples caps samples over all VMs of a resampled CSV.
	MaxTotalSamples = 1 << 25
)

// PlanetLabInterval is the sampling interval of the PlanetLab traces.
const PlanetLabInterval = 300.0

// VM is one VM's utilisation series.
type VM struct {
	Name string
	// CPU holds the CPU utilisation as a fraction of the VM's capacity
	// (0..1) at consecutive samples.
	CPU []float64
	// Mem holds memory utilisation fractions, or nil when the trace has
	// none.
	Mem []float64
}

// Trace is a set of VM series sampled at a fixed interval.
type Trace struct {
	Interval float64 // seconds between samples
	VMs      []VM
}

// Samples returns the length of the longest series.
func (t *Trace) Samples() int {
	n := 0
	for _, v := range t.VMs {
		if len(v.CPU) > n {
			n = len(v.CPU)
		}
	}
	return n
}

// Validate checks that the trace is usable for replay.
func (t *Trace) Validate() error {
	if t == nil || len(t.VMs) == 0 || t.Samples() == 0 {
		return ErrEmpty
	}
	if !(t.Interval > 0) {
		return fmt.Errorf("%w: interval %v", ErrFormat, t.Interval)
	}
	for _, v := range t.VMs {
		for i, c := range v.CPU {
			if c < 0 || c > 1 || c != c {
				return fmt.Errorf("%w: vm %q sample %d: cpu %v outside [0, 1]", ErrFormat, v.Name, i, c)
			}
		}
	}
	return nil
}
