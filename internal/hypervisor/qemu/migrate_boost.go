package qemu

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/vpool/vpool/internal/model"
)

// The switchover boost. A guest that arrives by migration needs the CPU
// at once: its QEMU loads the last of the stream, and under TCG the vCPU
// then translates its whole working set again (~20,000 blocks, 200–300 ms
// of CPU for the test guest) while the main-loop thread must run for the
// guest's timer interrupts to fire (TCG emulates the local APIC in QEMU;
// its timer is a main-loop timer). On a loaded host either thread waiting
// for the CPU stands the guest still: measured on 2 cores under the
// standard load, the target's main-loop thread sat runnable for up to
// 0.9 s while its vCPU halted, waiting for a timer interrupt
// (docs/migration-qemu.md, Guest gap). So from the start of the incoming
// stream until boostHold after the resume, the target QEMU's CPU weight
// is boostFactor times its own: its cgroup's weight, or without cgroups
// the nice value of its threads. The source's is raised likewise for the
// memory stream: QEMU sends the last pages with the guest stopped, and a
// migration thread waiting for the CPU stretched that downtime past the
// cap (521 ms against 300 under a load of 13 on 2 cores).

const (
	boostFactor = 8
	boostNice   = -8 // ≈ 8 × the weight of nice 0
	boostHold   = 3 * time.Second
	maxShares   = 262144
)

// boost raises the CPU weight of rec's QEMU (process p) and returns the
// function that puts it back; it is a no-op where the weight cannot be
// changed (no cgroup and no privilege to renice).
func (d *Driver) boost(rec *record, p *process) (restore func()) {
	id := rec.Config.ID
	shares := rec.Config.Spec.Controls.CPUShares
	if shares == 0 {
		shares = model.DefaultCPUShares
	}
	if d.cg != nil && d.cg.cpuC {
		if err := d.cg.setShares(id, min(shares*boostFactor, maxShares)); err != nil {
			d.log.Debug("qemu: no switchover boost", "vm", id, "err", err)
			return func() {}
		}
		return func() { d.cg.setShares(id, shares) }
	}
	base, err := syscall.Getpriority(syscall.PRIO_PROCESS, p.pid)
	if err != nil {
		return func() {}
	}
	nice := 20 - base // the raw syscall answers 20 - nice
	if err := reniceThreads(p.pid, nice+boostNice); err != nil {
		d.log.Debug("qemu: no switchover boost", "vm", id, "err", err)
		reniceThreads(p.pid, nice)
		return func() {}
	}
	return func() { reniceThreads(p.pid, nice) }
}

// setShares writes the CPU weight of VM id's group.
func (c *cgroups) setShares(id string, shares int) error {
	file, val := "cpu.shares", strconv.Itoa(shares)
	if c.v2 {
		file, val = "cpu.weight", strconv.Itoa(sharesToWeight(shares))
	}
	if err := os.WriteFile(filepath.Join(c.cpu, id, file), []byte(val), 0); err != nil {
		return fmt.Errorf("qemu: cgroup %s=%s: %w", file, val, err)
	}
	return nil
}

// reniceThreads sets the nice value of every thread of pid.
func reniceThreads(pid, nice int) error {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return fmt.Errorf("qemu: %w", err)
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := syscall.Setpriority(syscall.PRIO_PROCESS, tid, nice); err != nil {
			return fmt.Errorf("qemu: renice thread %d: %w", tid, err)
		}
	}
	return nil
}
