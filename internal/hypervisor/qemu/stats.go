package qemu

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/qmp"
)

// clockTick is USER_HZ, 100 on every Linux architecture vpool runs on.
const clockTick = 100

// Stats returns a running VM's counters: CPU time of the QEMU process
// (all threads, from /proc), its resident memory, disk bytes from
// query-blockstats and network bytes from its taps (zero under user-mode
// networking). A stopped VM reports zeros.
//
// While an operation holds the VM (a slow Stop), the last sample is
// returned instead of waiting.
func (d *Driver) Stats(ctx context.Context, id string) (hypervisor.Stats, error) {
	v, err := d.get(id)
	if err != nil {
		return hypervisor.Stats{}, err
	}
	if !v.mu.TryLock() {
		if s := v.stats.Load(); s != nil {
			return *s, nil
		}
		return hypervisor.Stats{At: d.clock.Now()}, nil
	}
	defer v.mu.Unlock()
	if v.deleted {
		return hypervisor.Stats{}, fmt.Errorf("qemu: %s: %w", id, hypervisor.ErrNotFound)
	}
	if v.proc != nil && v.proc.hasExited() {
		d.reapLocked(v, v.proc)
	}
	s, err := d.statsLocked(ctx, v)
	if err == nil {
		v.stats.Store(&s)
	}
	return s, err
}

func (d *Driver) statsLocked(ctx context.Context, v *vm) (hypervisor.Stats, error) {
	id := v.rec.Config.ID
	s := hypervisor.Stats{At: d.clock.Now()}
	p := v.proc
	if p == nil {
		return s, nil
	}
	cpu, rss, err := procStats(p.pid)
	if err != nil {
		return s, fmt.Errorf("qemu: stats of %s: %w", id, err)
	}
	s.CPUTimeNs = cpu
	s.Memory = min(model.Bytes(rss), v.rec.Config.Spec.Memory)
	if used, ok := guestMemoryUsed(ctx, p); ok {
		s.Memory = used
	}
	bs, err := p.qmp.QueryBlockstats(ctx)
	if err != nil {
		return s, fmt.Errorf("qemu: stats of %s: %w", id, err)
	}
	for _, b := range bs {
		s.DiskRead += b.Stats.RdBytes
		s.DiskWrite += b.Stats.WrBytes
	}
	for _, n := range v.rec.NICs {
		if n.Tap != "" {
			rx, tx := tapCounters(n.Tap)
			s.NetRx += rx
			s.NetTx += tx
		}
	}
	return s, nil
}

// guestMemoryUsed asks the balloon for the guest's own view (total minus
// available), which the guest reports every few seconds once polling is on.
func guestMemoryUsed(ctx context.Context, p *process) (model.Bytes, bool) {
	var r struct {
		Stats map[string]uint64 `json:"stats"`
	}
	if err := p.qmp.Execute(ctx, "qom-get", qmp.Args{"path": balloonPath, "property": "guest-stats"}, &r); err != nil {
		return 0, false
	}
	total, avail := r.Stats["stat-total-memory"], r.Stats["stat-available-memory"]
	if avail == math.MaxUint64 || avail == 0 {
		avail = r.Stats["stat-free-memory"]
	}
	if total == 0 || total == math.MaxUint64 || avail == math.MaxUint64 || avail > total {
		return 0, false
	}
	return model.Bytes(total - avail), true
}

const balloonPath = "/machine/peripheral/balloon0"

// procStats returns the CPU time (ns) and RSS (bytes) of pid.
func procStats(pid int) (int64, int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// After the comm field: state(0) ... utime(11) stime(12) ... rss(21).
	if len(f) < 22 {
		return 0, 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	rss, _ := strconv.ParseInt(f[21], 10, 64)
	return (ut + st) * (1e9 / clockTick), rss * int64(os.Getpagesize()), nil
}

// Inventory reports the host: CPUs, memory, pool space, accelerator and
// QEMU version.
func (d *Driver) Inventory(ctx context.Context) (hypervisor.Inventory, error) {
	mem, err := hostMemory()
	if err != nil {
		return hypervisor.Inventory{}, err
	}
	inv := hypervisor.Inventory{CPUs: runtime.NumCPU(), Memory: mem, Accel: d.accel, CPUModel: d.guestCPUModel(), Version: d.qemuVersion(ctx),
		Machine: d.machineType}
	names := make([]string, 0, len(d.cfg.Pools))
	for n := range d.cfg.Pools {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		var st syscall.Statfs_t
		if err := syscall.Statfs(d.cfg.Pools[n], &st); err != nil {
			continue
		}
		inv.Disk += model.Bytes(int64(st.Blocks) * st.Bsize)
		inv.Pools = append(inv.Pools, model.StoragePoolRef{Name: n, Tier: "local", Free: model.Bytes(int64(st.Bavail) * st.Bsize), Shared: !d.localPool(d.cfg.Pools[n])})
	}
	return inv, nil
}

// Capacity returns how many VMs of mem the capacity rule admits on this
// host when nothing else runs.
func (d *Driver) Capacity(mem model.Bytes) (int, error) {
	total, err := hostMemory()
	if err != nil {
		return 0, err
	}
	return int((total - d.cfg.HostReserve) / (mem + d.cfg.VMOverhead)), nil
}

func hostMemory() (model.Bytes, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, fmt.Errorf("qemu: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			kb, err := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("qemu: /proc/meminfo: %w", err)
			}
			return model.Bytes(kb) * model.KiB, nil
		}
	}
	return 0, fmt.Errorf("qemu: no MemTotal in /proc/meminfo")
}

// guestCPUModel is the CPU model guests of this host see: the configured
// baseline, QEMU's default under TCG, or "host (<physical model>)" when
// KVM passes the host CPU through.
func (d *Driver) guestCPUModel() string {
	switch m := d.cpuModelArg(); m {
	case "":
		return "qemu64"
	case "host":
		return "host (" + cpuModel() + ")"
	default:
		return m
	}
}

// cpuModelArg is the -cpu argument of every VM ("" for QEMU's default).
func (d *Driver) cpuModelArg() string {
	if d.cfg.CPUModel != "" {
		return d.cfg.CPUModel
	}
	if d.accel == "kvm" {
		return "host"
	}
	return ""
}

// checkCPUModel refuses a configured CPU model this QEMU does not know.
func (d *Driver) checkCPUModel() error {
	m := d.cfg.CPUModel
	if m == "" || m == "host" {
		if m == "host" && d.accel != "kvm" {
			return fmt.Errorf("qemu: CPUModel host needs KVM (this host runs %s): name a model such as qemu64", d.accel)
		}
		return nil
	}
	out, err := d.qemuHelp("-cpu")
	if err != nil {
		return err
	}
	if knownCPUModel(out, m) {
		return nil
	}
	return fmt.Errorf("qemu: CPU model %q is unknown to %s (see %s -cpu help)", m, d.cfg.QEMU, d.cfg.QEMU)
}

// qemuHelp returns what `qemu-system-x86_64 <option> help` prints
// (-cpu, -machine).
func (d *Driver) qemuHelp(option string) (string, error) {
	bin, err := binary(d.cfg.QEMU)
	if err != nil {
		return "", err
	}
	out, err := exec.Command(bin, option, "help").Output()
	if err != nil {
		return "", fmt.Errorf("qemu: %s %s help: %w", bin, option, err)
	}
	return string(out), nil
}

// knownCPUModel reports whether `-cpu help` output lists model m: QEMU 7
// prints "x86 NAME  description", QEMU 8 and later "  NAME  description"
// under "Available CPUs:". The CPUID flags listed after the models are not
// models.
func knownCPUModel(help, m string) bool {
	for _, line := range strings.Split(help, "\n") {
		if strings.HasPrefix(line, "Recognized CPUID flags") {
			return false
		}
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "x86" && f[1] == m || len(f) >= 1 && f[0] == m && strings.HasPrefix(line, " ") {
			return true
		}
	}
	return false
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func (d *Driver) qemuVersion(ctx context.Context) string {
	d.versionOnce.Do(func() {
		bin, err := binary(d.cfg.QEMU)
		if err != nil {
			return
		}
		out, err := exec.CommandContext(ctx, bin, "--version").Output()
		if err != nil {
			return
		}
		// "QEMU emulator version 7.2.22 (Debian ...)"
		f := strings.Fields(string(out))
		for i, w := range f {
			if w == "version" && i+1 < len(f) {
				d.version = f[i+1]
				return
			}
		}
	})
	return d.version
}
