package qemu

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/vpool/vpool/internal/model"
)

// cgroups places QEMUs in per-VM groups under the agent's own cgroup
// ("<own>/vpool/<id>") and writes CPU and memory controls there. v1 uses
// the cpu and memory hierarchies; v2 the unified one (the agent moves
// itself into "<own>/agent" first, since v2 lets only leaves hold
// processes once controllers are enabled).
type cgroups struct {
	v2   bool
	cpu  string // v1: <cpu mount>/<own>/vpool; v2: <unified>/<own>/vpool
	mem  string // v1 memory hierarchy base; v2: same as cpu
	cpuC bool   // the cpu controller is usable
	memC bool
}

// errNoCgroup is wrapped when no writable hierarchy is found.
var errNoCgroup = errors.New("qemu: no usable cgroup hierarchy")

// detectCgroups finds the hierarchies, makes the VMs' group (name) under
// this process's own and sets its CPU weight to vms shares (vmsShares;
// 0 leaves the weight as it is).
func detectCgroups(name string, vms int) (*cgroups, error) {
	own, err := readOwnCgroups()
	if err != nil {
		return nil, err
	}
	mounts, err := cgroupMounts()
	if err != nil {
		return nil, err
	}
	cg := &cgroups{}
	if v1cpu, ok := mounts["cpu"]; ok {
		cg.cpu = filepath.Join(v1cpu, own["cpu"], name)
		cg.cpuC = os.MkdirAll(cg.cpu, 0o755) == nil
		if cg.cpuC && vms > 0 {
			cg.writeShares(cg.cpu, vms)
		}
	}
	if v1mem, ok := mounts["memory"]; ok {
		cg.mem = filepath.Join(v1mem, own["memory"], name)
		cg.memC = os.MkdirAll(cg.mem, 0o755) == nil
	}
	if cg.cpuC || cg.memC {
		return cg, nil
	}
	uni, ok := mounts[""]
	if !ok {
		return nil, errNoCgroup
	}
	return detectV2(uni, own[""], name, vms)
}

func detectV2(mount, own, name string, vms int) (*cgroups, error) {
	base := filepath.Join(mount, own)
	ctrls, err := os.ReadFile(filepath.Join(base, "cgroup.controllers"))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errNoCgroup, err)
	}
	have := strings.Fields(string(ctrls))
	cg := &cgroups{v2: true, cpu: filepath.Join(base, name), mem: filepath.Join(base, name)}
	for _, c := range have {
		cg.cpuC = cg.cpuC || c == "cpu"
		cg.memC = cg.memC || c == "memory"
	}
	if !cg.cpuC && !cg.memC {
		return nil, fmt.Errorf("%w: cgroup v2 at %s offers neither cpu nor memory", errNoCgroup, base)
	}
	// Leaf rule: move the agent into <own>/agent, then delegate.
	if err := os.MkdirAll(filepath.Join(base, "agent"), 0o755); err != nil {
		return nil, fmt.Errorf("%w: %w", errNoCgroup, err)
	}
	os.WriteFile(filepath.Join(base, "agent", "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0)
	enable := ""
	if cg.cpuC {
		enable += "+cpu "
	}
	if cg.memC {
		enable += "+memory"
	}
	if err := os.WriteFile(filepath.Join(base, "cgroup.subtree_control"), []byte(enable), 0); err != nil {
		return nil, fmt.Errorf("%w: enabling %q in %s: %w", errNoCgroup, enable, base, err)
	}
	if err := os.MkdirAll(cg.cpu, 0o755); err != nil {
		return nil, fmt.Errorf("%w: %w", errNoCgroup, err)
	}
	if err := os.WriteFile(filepath.Join(cg.cpu, "cgroup.subtree_control"), []byte(enable), 0); err != nil {
		return nil, fmt.Errorf("%w: %w", errNoCgroup, err)
	}
	if cg.cpuC && vms > 0 {
		cg.writeShares(cg.cpu, vms)
	}
	return cg, nil
}

// vmsShares is the CPU weight of the group that holds every VM, in
// cgroup v1 shares (v2's weight is mapped from it): Config.VMsCPUShares,
// by default as much as one busy process per host CPU, as kubelet sizes
// its kubepods group. With the cgroup default, all VMs together weighed
// as much as one process, so two busy loops on the host took two thirds
// of a 2-core machine from every VM at once, and a guest arriving by
// migration waited for the CPU its first second needs
// (docs/migration-slo.md, The stall). A migration multiplies it for its
// duration (migrate_boost.go).
func (d *Driver) vmsShares() int {
	if d.cfg.VMsCPUShares > 0 {
		return min(max(d.cfg.VMsCPUShares, 2), maxShares)
	}
	return model.DefaultCPUShares * runtime.NumCPU()
}

// readOwnCgroups maps controller names ("" for v2) to this process's path.
func readOwnCgroups() (map[string]string, error) {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errNoCgroup, err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			out[c] = parts[2]
		}
	}
	return out, sc.Err()
}

// cgroupMounts maps v1 controllers to their mount points, and "" to the
// cgroup2 mount.
func cgroupMounts() (map[string]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errNoCgroup, err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint options ... - fstype source superoptions
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, fl := range fields {
			if fl == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+3 >= len(fields) || len(fields) < 5 {
			continue
		}
		mnt, fstype, super := fields[4], fields[sep+1], fields[sep+3]
		switch fstype {
		case "cgroup2":
			if _, ok := out[""]; !ok {
				out[""] = mnt
			}
		case "cgroup":
			for _, o := range strings.Split(super, ",") {
				if o == "cpu" || o == "memory" {
					out[o] = mnt
				}
			}
		}
	}
	return out, sc.Err()
}

func (c *cgroups) dirs(id string) []string {
	var out []string
	if c.cpuC {
		out = append(out, filepath.Join(c.cpu, id))
	}
	if c.memC && (!c.v2 || !c.cpuC) {
		out = append(out, filepath.Join(c.mem, id))
	}
	return out
}

// attach creates the VM's groups and moves pid (all its threads) in.
func (c *cgroups) attach(id string, pid int) error {
	for _, dir := range c.dirs(id) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("qemu: cgroup: %w", err)
		}
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
			return fmt.Errorf("qemu: cgroup: moving %d into %s: %w", pid, dir, err)
		}
	}
	return nil
}

// apply writes CPU shares and limit and the memory limit.
func (c *cgroups) apply(id string, ctl model.Controls) error {
	var errs []error
	w := func(dir, file, val string) {
		if err := os.WriteFile(filepath.Join(dir, file), []byte(val), 0); err != nil {
			errs = append(errs, fmt.Errorf("qemu: cgroup %s=%s: %w", file, val, err))
		}
	}
	shares := ctl.CPUShares
	if shares == 0 {
		shares = model.DefaultCPUShares
	}
	const period = 100000
	if c.cpuC {
		dir := filepath.Join(c.cpu, id)
		if c.v2 {
			w(dir, "cpu.weight", strconv.Itoa(sharesToWeight(shares)))
			if ctl.CPULimit > 0 {
				w(dir, "cpu.max", fmt.Sprintf("%d %d", ctl.CPULimit*period/1000, period))
			} else {
				w(dir, "cpu.max", fmt.Sprintf("max %d", period))
			}
		} else {
			w(dir, "cpu.shares", strconv.Itoa(shares))
			w(dir, "cpu.cfs_period_us", strconv.Itoa(period))
			if ctl.CPULimit > 0 {
				w(dir, "cpu.cfs_quota_us", strconv.Itoa(ctl.CPULimit*period/1000))
			} else {
				w(dir, "cpu.cfs_quota_us", "-1")
			}
		}
	}
	if c.memC {
		dir := filepath.Join(c.mem, id)
		switch {
		case c.v2 && ctl.MemoryLimit > 0:
			w(dir, "memory.max", strconv.FormatInt(int64(ctl.MemoryLimit), 10))
		case c.v2:
			w(dir, "memory.max", "max")
		case ctl.MemoryLimit > 0:
			w(dir, "memory.limit_in_bytes", strconv.FormatInt(int64(ctl.MemoryLimit), 10))
		default:
			w(dir, "memory.limit_in_bytes", "-1")
		}
		if ctl.MemoryReservation > 0 {
			if c.v2 {
				w(dir, "memory.low", strconv.FormatInt(int64(ctl.MemoryReservation), 10))
			} else {
				w(dir, "memory.soft_limit_in_bytes", strconv.FormatInt(int64(ctl.MemoryReservation), 10))
			}
		}
	}
	return errors.Join(errs...)
}

// remove deletes the VM's groups (they must be empty).
func (c *cgroups) remove(id string) {
	for _, dir := range c.dirs(id) {
		os.Remove(dir)
	}
}

// cpuUsage returns the group's CPU time in ns, if the hierarchy says.
func (c *cgroups) cpuUsage(id string) (int64, bool) {
	if !c.cpuC {
		return 0, false
	}
	if c.v2 {
		b, err := os.ReadFile(filepath.Join(c.cpu, id, "cpu.stat"))
		if err != nil {
			return 0, false
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "usage_usec "); ok {
				n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				return n * 1000, err == nil
			}
		}
	}
	return 0, false
}

// sharesToWeight maps cgroup v1 shares [2, 262144] onto v2 weights
// [1, 10000], as runc and systemd do.
func sharesToWeight(shares int) int {
	if shares <= 2 {
		return 1
	}
	return 1 + ((shares-2)*9999)/262142
}
