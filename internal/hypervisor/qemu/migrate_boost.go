package qemu

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/vpool/vpool/internal/model"
)

// The migration boost. A guest that arrives by migration needs the CPU
// at once: its QEMU loads the last of the stream, and under TCG the vCPU
// then translates its whole working set again (~20,000 blocks, 200–300 ms
// of CPU for the test guest) while the main-loop thread must run for the
// guest's timer interrupts to fire (TCG emulates the local APIC in QEMU;
// its timer is a main-loop timer). On a loaded host either thread waiting
// for the CPU stands the guest still: measured on 2 cores under the
// standard load, the target's main-loop thread sat runnable for up to
// 0.9 s while its vCPU halted, waiting for a timer interrupt
// (docs/migration-slo.md, The stall). The source's QEMU sends the last
// pages with the guest stopped, and a migration thread waiting for the
// CPU stretched that downtime past the cap (521 ms against 300 under a
// load of 13 on 2 cores).
//
// So while a migration needs the CPU — on the source for the memory
// stream, on the target from the start of the incoming stream until
// boostHold after the resume — two weights are multiplied by
// Config.MigrationCPUBoost (default 8):
//
//   - the VMs' group ("<agent's cgroup>/vpool"), against the host's other
//     processes. This is the one that counts on a busy host: a VM's own
//     weight only ranks it among the VMs, and with the VMs' group at one
//     process per CPU (vmsShares) two busy loops on a 2-core host still
//     took half the machine from every QEMU of the host together
//     (source and target on one machine in the tests: ¼ core each);
//   - the migrating VM's own group, against the host's other VMs.
//
// Without cgroups the nice value of the QEMU's threads is lowered
// instead (boostNice). Boosts of one group nest (counted in groupBoosts):
// the last to end puts the weight back, so a host migrating two VMs, or
// the tests' two drivers on one machine (whose VMs of one id share a
// group), never ends another's boost early.

const (
	defaultMigrationBoost = 8
	boostHold             = 3 * time.Second
	maxShares             = 262144
)

// boostNice is the nice value that weighs about factor times nice 0 (each
// nice step is ~1.25×), at least -19.
func boostNice(factor int) int {
	return max(-int(math.Round(math.Log(float64(factor))/math.Log(1.25))), -19)
}

// groupBoosts counts the boosts held on each cgroup directory and keeps
// the weight to put back.
var groupBoosts = struct {
	sync.Mutex
	n    map[string]int
	base map[string]int
}{n: map[string]int{}, base: map[string]int{}}

// boostGroup multiplies dir's CPU shares (base, as vpool set them) by
// factor until the returned function is called; nested boosts of one
// dir count.
func (c *cgroups) boostGroup(dir string, base, factor int) (restore func(), err error) {
	groupBoosts.Lock()
	defer groupBoosts.Unlock()
	if groupBoosts.n[dir] == 0 {
		if err := c.writeShares(dir, min(base*factor, maxShares)); err != nil {
			return nil, err
		}
		groupBoosts.base[dir] = base
	}
	groupBoosts.n[dir]++
	return func() {
		groupBoosts.Lock()
		defer groupBoosts.Unlock()
		if groupBoosts.n[dir]--; groupBoosts.n[dir] > 0 {
			return
		}
		c.writeShares(dir, groupBoosts.base[dir])
		delete(groupBoosts.n, dir)
		delete(groupBoosts.base, dir)
	}, nil
}

// boost raises the CPU weight of rec's QEMU (process p) and of the VMs'
// group and returns the function that puts them back (once, however
// often it is called); it is a no-op where the weight cannot be changed
// (no cgroup and no privilege to renice) or the boost is off.
func (d *Driver) boost(rec *record, p *process) (restore func()) {
	factor := d.cfg.MigrationCPUBoost
	if factor <= 1 {
		return func() {}
	}
	id := rec.Config.ID
	var undo []func()
	if d.cg != nil && d.cg.cpuC {
		shares := rec.Config.Spec.Controls.CPUShares
		if shares == 0 {
			shares = model.DefaultCPUShares
		}
		for _, g := range []struct {
			dir  string
			base int
		}{{d.cg.cpu, d.vmsShares()}, {filepath.Join(d.cg.cpu, id), shares}} {
			r, err := d.cg.boostGroup(g.dir, g.base, factor)
			if err != nil {
				d.log.Debug("qemu: no migration boost", "vm", id, "group", g.dir, "err", err)
				continue
			}
			undo = append(undo, r)
		}
	} else if r, err := boostNiceThreads(p.pid, boostNice(factor)); err != nil {
		d.log.Debug("qemu: no migration boost", "vm", id, "err", err)
	} else {
		undo = append(undo, r)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			for _, u := range undo {
				u()
			}
		})
	}
}

// boostNiceThreads lowers the nice value of pid's threads by delta.
func boostNiceThreads(pid, delta int) (restore func(), err error) {
	base, err := syscall.Getpriority(syscall.PRIO_PROCESS, pid)
	if err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	nice := 20 - base // the raw syscall answers 20 - nice
	if err := reniceThreads(pid, max(nice+delta, -20)); err != nil {
		reniceThreads(pid, nice)
		return nil, err
	}
	return func() { reniceThreads(pid, nice) }, nil
}

// writeShares writes the CPU weight of the group at dir.
func (c *cgroups) writeShares(dir string, shares int) error {
	file, val := "cpu.shares", strconv.Itoa(shares)
	if c.v2 {
		file, val = "cpu.weight", strconv.Itoa(sharesToWeight(shares))
	}
	if err := os.WriteFile(filepath.Join(dir, file), []byte(val), 0); err != nil {
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
