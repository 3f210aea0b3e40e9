package scheduler

import (
	"fmt"
	"strconv"

	"github.com/vpool/vpool/internal/model"
)

// Fit checks CPU, memory and disk against capacity × allocation ratio
// (the host's own ratio, else the cluster's, else 4.0 / 1.0 / 1.0; memory
// at most 3.0), and the VM's reservations against what is left of the
// host's PHYSICAL CPUs and memory after the reservations already there:
// reservations are never overcommitted.
type Fit struct{}

var _ Filter = (*Fit)(nil)

// Reasons of Fit.
const (
	reasonMemory uint8 = iota
	reasonCPU
	reasonDisk
	reasonMemReservation
	reasonCPUReservation
	reasonCapacity // skipped by the index: too full in memory or CPU
)

// Name implements Plugin.
func (Fit) Name() string { return "fit" }

// Filter implements Filter.
func (Fit) Filter(c *Cycle, h int) Status { return fit(&c.snap.hosts[h], &c.d) }

// fit is the capacity rule itself, on one host record and one demand:
// the only place it is written (Fits serves callers outside a snapshot).
func fit(r *hostRec, d *demand) Status {
	switch {
	case r.memUsed+d.mem > r.memLimit:
		return reject(reasonMemory, r.memLimit-r.memUsed)
	case r.cpuUsed+d.cpu > r.cpuLimit:
		return reject(reasonCPU, r.cpuLimit-r.cpuUsed)
	case r.diskUsed+d.disk > r.diskLimit:
		return reject(reasonDisk, r.diskLimit-r.diskUsed)
	case d.memRes > 0 && r.memRes+d.memRes > r.memPhys:
		return reject(reasonMemReservation, r.memPhys-r.memRes)
	case d.cpuRes > 0 && r.cpuRes+d.cpuRes > r.cpuPhys:
		return reject(reasonCPUReservation, r.cpuPhys-r.cpuRes)
	}
	return ok
}

// Explain implements Filter.
func (Fit) Explain(c *Cycle, reason uint8, most int64) string {
	most = max(most, 0)
	d := &c.d
	switch reason {
	case reasonMemory:
		return fmt.Sprintf("insufficient memory (needs %s, most free %s)", model.Bytes(d.mem), model.Bytes(most))
	case reasonCPU:
		return fmt.Sprintf("insufficient CPU (needs %s vCPUs, most free %s vCPUs)", milli(d.cpu), milli(most))
	case reasonDisk:
		return fmt.Sprintf("insufficient disk (needs %s, most free %s)", model.Bytes(d.disk), model.Bytes(most))
	case reasonMemReservation:
		return fmt.Sprintf("memory reservation not covered by physical memory (needs %s, most unreserved %s)", model.Bytes(d.memRes), model.Bytes(most))
	case reasonCapacity:
		return fmt.Sprintf("insufficient memory or CPU (needs %s and %s vCPUs)", model.Bytes(d.mem), milli(d.cpu))
	case reasonCPUReservation:
		return fmt.Sprintf("CPU reservation not covered by physical CPUs (needs %s CPU, most unreserved %s CPU)", milli(d.cpuRes), milli(most))
	}
	return "does not fit"
}

// milli renders milli-CPUs as CPUs: 8000 → "8", 6500 → "6.5".
func milli(m int64) string {
	if m%1000 == 0 {
		return strconv.FormatInt(m/1000, 10)
	}
	return strconv.FormatFloat(float64(m)/1000, 'f', -1, 64)
}
