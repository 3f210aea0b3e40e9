package scheduler

import "fmt"

// Pin honours Placement.Host: the VM may use that host only.
type Pin struct{}

var _ Filter = (*Pin)(nil)

const (
	reasonNotPinned uint8 = iota
	reasonPinMissing
)

// Name implements Plugin.
func (Pin) Name() string { return "pin" }

// Filter implements Filter.
func (Pin) Filter(c *Cycle, h int) Status {
	switch {
	case c.d.pin == noPin || c.d.pin == int32(h):
		return ok
	case c.d.pin == unknownID:
		return reject(reasonPinMissing, 0)
	}
	return reject(reasonNotPinned, 0)
}

// Explain implements Filter.
func (Pin) Explain(c *Cycle, reason uint8, _ int64) string {
	if reason == reasonPinMissing {
		return fmt.Sprintf("the requested host %q does not exist", c.d.pinName)
	}
	return fmt.Sprintf("not the requested host %q", c.d.pinName)
}
