package cli

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/client"
	"github.com/vpool/vpool/internal/model"
)

const defaultTimeout = 5 * time.Minute

func (a *app) vmCmd() *cobra.Command {
	return group("vm", "Create, list, show, start, stop, resize and delete virtual machines",
		a.vmCreateCmd(), a.vmListCmd(), a.vmShowCmd(),
		a.vmActionCmd("start", "Start VMs", startAction),
		a.vmStopCmd(),
		a.vmActionCmd("restart", "Restart VMs", restartAction),
		a.vmActionCmd("delete", "Delete VMs", deleteAction),
		a.vmResizeCmd(),
	)
}

// vmCreateOpts are the flags of `vm create`.
type vmCreateOpts struct {
	vcpus                     int
	memory                    string
	disks, networks, nics     []string
	image                     string
	labels, require, prefer   []string
	isolation, group, affin   string
	maxPerHost                int
	host                      string
	cpuShares                 int
	cpuRes, cpuLimit          float64
	memRes, memLimit, diskBps string
	diskIOPS                  int64
	haPriority                string
	watchdog                  string
	stopped                   bool
	count                     int
	dryRun                    bool
	wait                      waitOpts
	timeout                   time.Duration
	cloudInit                 cloudInitOpts
}

func (a *app) vmCreateCmd() *cobra.Command {
	o := &vmCreateOpts{}
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a VM (or --count N of them, named NAME-1..NAME-N)",
		Example: `  vpool vm create web1 --image busybox --memory 256MiB --disk 1GiB
  vpool vm create db --memory 8GiB --disk 20GiB --disk size=100GiB,name=data,tier=ssd --require zone=a
  vpool vm create web --count 3 --affinity-group web --affinity anti-affinity
  vpool vm create big --vcpus 16 --memory 64GiB --dry-run`,
		Args: exactArgs(1, "one VM name"),
		RunE: func(cmd *cobra.Command, args []string) error { return a.vmCreate(cmd, args[0], o) },
	}
	f := cmd.Flags()
	f.IntVar(&o.vcpus, "vcpus", 1, "virtual CPUs")
	f.StringVar(&o.memory, "memory", "1GiB", "memory, with a unit (512MiB, 2GiB)")
	f.StringArrayVar(&o.disks, "disk", nil, "a disk: SIZE or size=SIZE,name=N,pool=P,tier=T,encrypted (repeatable)")
	f.StringArrayVar(&o.networks, "network", nil, "attach a NIC to this network (repeatable)")
	f.StringArrayVar(&o.nics, "nic", nil, "a NIC: NETWORK[,ip=A][,mac=M][,sg=G1+G2][,in=RATE][,out=RATE] (repeatable)")
	f.StringVar(&o.image, "image", "", "image to clone the first disk from")
	f.StringArrayVar(&o.labels, "label", nil, "label key=value (repeatable)")
	f.StringArrayVar(&o.require, "require", nil, "place only on hosts with label key=value (repeatable)")
	f.StringArrayVar(&o.prefer, "prefer", nil, "prefer hosts with label key=value (repeatable)")
	f.StringVar(&o.isolation, "isolation-domain", "", "place only on hosts of this isolation domain, alone with VMs of the same domain")
	f.StringVar(&o.group, "affinity-group", "", "affinity group the VM belongs to")
	f.StringVar(&o.affin, "affinity", "", "how the group's VMs relate: affinity, anti-affinity, soft-affinity, soft-anti-affinity")
	f.IntVar(&o.maxPerHost, "max-per-host", 0, "at most this many VMs of the affinity group per host")
	f.StringVar(&o.host, "host", "", "pin to this host")
	f.IntVar(&o.cpuShares, "cpu-shares", 0, "relative CPU weight (default 1024)")
	f.Float64Var(&o.cpuRes, "cpu-reservation", 0, "CPUs guaranteed, e.g. 0.5")
	f.Float64Var(&o.cpuLimit, "cpu-limit", 0, "CPU cap, e.g. 1.5")
	f.StringVar(&o.memRes, "memory-reservation", "", "memory guaranteed, with a unit")
	f.StringVar(&o.memLimit, "memory-limit", "", "memory cap, with a unit")
	f.Int64Var(&o.diskIOPS, "disk-iops", 0, "disk I/O operations per second cap")
	f.StringVar(&o.diskBps, "disk-bps", "", "disk bytes per second cap, with a unit (e.g. 100MiB)")
	f.StringVar(&o.haPriority, "ha-priority", "", "restart after a host failure: high, medium, low or off (default medium on shared storage; VMs with local disks cannot), or a number 0-1000 ordering VMs of one level (higher first)")
	f.StringVar(&o.watchdog, "watchdog", "", "add a guest watchdog (i6300esb) and what it does when the guest stops feeding it: reset, poweroff or pause")
	f.BoolVar(&o.stopped, "stopped", false, "create the VM without starting it")
	f.IntVar(&o.count, "count", 1, "create this many VMs, named NAME-1..NAME-N, all or nothing")
	f.BoolVar(&o.dryRun, "dry-run", false, "only show where the VM would be placed")
	o.wait.flags(cmd, "the VM runs (or is stopped, with --stopped)")
	f.DurationVar(&o.timeout, "timeout", defaultTimeout, "how long to wait")
	o.cloudInit.flags(cmd)
	return cmd
}

// spec builds the VM spec from the flags.
func (o *vmCreateOpts) spec(cmd *cobra.Command) (model.VMSpec, error) {
	s := model.VMSpec{VCPUs: o.vcpus, Image: o.image, Power: model.PowerRunning}
	if err := parseHAPriority(o.haPriority, &s); err != nil {
		return s, err
	}
	if o.watchdog != "" {
		s.Watchdog = &model.Watchdog{Action: o.watchdog} // the server checks it
	}
	if o.stopped {
		s.Power = model.PowerStopped
	}
	var err error
	if s.Memory, err = parseSize("memory", o.memory); err != nil {
		return s, err
	}
	for _, d := range o.disks {
		disk, err := parseDisk(d)
		if err != nil {
			return s, err
		}
		s.Disks = append(s.Disks, disk)
	}
	for _, n := range o.networks {
		s.NICs = append(s.NICs, model.NIC{Network: n})
	}
	for _, n := range o.nics {
		nic, err := parseNIC(n)
		if err != nil {
			return s, err
		}
		s.NICs = append(s.NICs, nic)
	}
	if s.Labels, err = parseKV("label", o.labels); err != nil {
		return s, err
	}
	p := &s.Placement
	if p.RequiredLabels, err = parseKV("require", o.require); err != nil {
		return s, err
	}
	if p.PreferredLabels, err = parseKV("prefer", o.prefer); err != nil {
		return s, err
	}
	p.IsolationDomain, p.AffinityGroup, p.Affinity, p.MaxPerHost, p.Host = o.isolation, o.group, o.affin, o.maxPerHost, o.host
	c := &s.Controls
	c.CPUShares, c.DiskIOPS = o.cpuShares, o.diskIOPS
	if c.CPUReservation, err = milliCPU("cpu-reservation", o.cpuRes); err != nil {
		return s, err
	}
	if c.CPULimit, err = milliCPU("cpu-limit", o.cpuLimit); err != nil {
		return s, err
	}
	if c.MemoryReservation, _, err = sizeFlag(cmd, "memory-reservation"); err != nil {
		return s, err
	}
	if c.MemoryLimit, _, err = sizeFlag(cmd, "memory-limit"); err != nil {
		return s, err
	}
	bps, _, err := sizeFlag(cmd, "disk-bps")
	c.DiskBps = int64(bps)
	if err != nil {
		return s, err
	}
	s.CloudInit, err = o.cloudInit.build(cmd)
	return s, err
}

func (a *app) vmCreate(cmd *cobra.Command, name string, o *vmCreateOpts) error {
	spec, err := o.spec(cmd)
	if err != nil {
		return err
	}
	if o.count < 1 {
		return usagef("--count: must be at least 1 (got %d)", o.count)
	}
	c, err := a.outputClient()
	if err != nil {
		return err
	}
	ctx, project := cmd.Context(), a.cfg.Project
	if o.dryRun {
		if o.count > 1 {
			res, err := c.DryRunVMs(ctx, project, api.VMBatchRequest{Prefix: name, Count: o.count, Spec: &spec})
			if err != nil {
				return err
			}
			return a.printDryRuns(cmd, name, res)
		}
		res, err := c.DryRunVM(ctx, project, api.VMCreateRequest{Name: name, Spec: spec})
		if err != nil {
			return err
		}
		return a.printDryRun(cmd, name, res)
	}
	var vms []model.VM
	if o.count > 1 {
		res, err := c.CreateVMs(ctx, project, api.VMBatchRequest{Prefix: name, Count: o.count, Spec: &spec})
		if err != nil {
			return err
		}
		vms = res.VMs
	} else {
		vm, err := c.CreateVM(ctx, project, api.VMCreateRequest{Name: name, Spec: spec})
		if err != nil {
			return err
		}
		vms = []model.VM{*vm}
	}
	if o.wait.enabled() {
		want := runningTarget
		if o.stopped {
			want = stoppedTarget
		}
		if vms, err = a.waitAll(cmd, c, vms, func(model.VM) waitTarget { return want }, o.timeout); err != nil {
			return err
		}
	}
	if o.count == 1 {
		return a.print(cmd, vms[0], func(w io.Writer) { a.vmTable(w, vms) })
	}
	return a.print(cmd, vms, func(w io.Writer) { a.vmTable(w, vms) })
}

func (a *app) vmListCmd() *cobra.Command {
	var all bool
	var host, phase string
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List VMs",
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			opt := client.ListVMsOptions{Project: a.cfg.Project, AllProjects: all}
			if all {
				opt.Project = ""
			}
			out, err := a.listStream(cmd, vmHeader...)
			if err != nil {
				return err
			}
			now := a.env.now()
			err = c.VMPages(cmd.Context(), opt, 0, func(page []model.VM) error {
				vms := make([]model.VM, 0, len(page))
				for _, vm := range page {
					if (host == "" || vm.Status.Host == host) && (phase == "" || string(vm.Status.Phase) == phase) {
						vms = append(vms, vm)
					}
				}
				sortVMs(vms)
				items, rows := make([]any, len(vms)), make([][]string, len(vms))
				for i, vm := range vms {
					items[i], rows[i] = vm, vmRow(&vm, now)
				}
				out.page(items, rows)
				return out.err
			})
			if err != nil {
				return err
			}
			if out.n == 0 && !all && host == "" && phase == "" {
				a.emptyHint(cmd, "VMs")
			}
			return out.close()
		},
	}
	cmd.Flags().BoolVarP(&all, "all-projects", "A", false, "list the VMs of every project (admins)")
	cmd.Flags().StringVar(&host, "host", "", "only VMs on this host")
	cmd.Flags().StringVar(&phase, "phase", "", "only VMs in this phase (pending, running, stopped, failed, ...)")
	return cmd
}

func sortVMs(vms []model.VM) {
	sort.Slice(vms, func(i, j int) bool {
		if vms[i].Project != vms[j].Project {
			return vms[i].Project < vms[j].Project
		}
		return vms[i].Name < vms[j].Name
	})
}

// vmTable writes VMs as NAME PROJECT PHASE HOST VCPUS MEMORY DISK AGE.
// vmHeader and vmRow are the columns of the VM table.
var vmHeader = []string{"NAME", "PROJECT", "PHASE", "HOST", "VCPUS", "MEMORY", "DISK", "AGE"}

func vmRow(vm *model.VM, now time.Time) []string {
	return []string{vm.Name, vm.Project, orDash(string(vm.Status.Phase)), orDash(vm.Status.Host),
		fmt.Sprint(vm.Spec.VCPUs), vm.Spec.Memory.String(), vm.Spec.DiskSize().String(), age(now, vm.CreatedAt)}
}

func (a *app) vmTable(w io.Writer, vms []model.VM) {
	now := a.env.now()
	row(w, toAny(vmHeader)...)
	for i := range vms {
		row(w, toAny(vmRow(&vms[i], now))...)
	}
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

func (a *app) vmShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "show NAME",
		Aliases: []string{"get", "describe"},
		Short:   "Show a VM: spec, status, and why it was placed where it is",
		Args:    exactArgs(1, "one VM name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			vm, err := c.GetVM(cmd.Context(), a.cfg.Project, args[0])
			if err != nil {
				return err
			}
			return a.print(cmd, vm, func(w io.Writer) { a.describeVM(w, vm) })
		},
	}
}

func (a *app) vmResizeCmd() *cobra.Command {
	var vcpus int
	var memory string
	var restart bool
	cmd := &cobra.Command{
		Use:     "resize NAME",
		Short:   "Change a VM's vCPUs or memory",
		Example: `  vpool vm resize web1 --vcpus 4 --memory 4GiB --restart`,
		Args:    exactArgs(1, "one VM name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var req api.VMPatchRequest
			if cmd.Flags().Changed("vcpus") {
				req.VCPUs = &vcpus
			}
			if m, ok, err := sizeFlag(cmd, "memory"); err != nil {
				return err
			} else if ok {
				req.Memory = &m
			}
			if req.VCPUs == nil && req.Memory == nil {
				return usageErr(fmt.Errorf("vm resize: %w (--vcpus, --memory)", errNothingToChange))
			}
			req.Restart = restart
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			vm, err := c.PatchVM(cmd.Context(), a.cfg.Project, args[0], req)
			if err != nil {
				return err
			}
			if vm, err = a.awaitResize(cmd, c, vm); err != nil {
				return err
			}
			return a.print(cmd, vm, func(w io.Writer) { a.vmTable(w, []model.VM{*vm}) })
		},
	}
	cmd.Flags().IntVar(&vcpus, "vcpus", 0, "new number of virtual CPUs")
	cmd.Flags().StringVar(&memory, "memory", "", "new memory size, with a unit")
	cmd.Flags().BoolVar(&restart, "restart", false, "restart the VM to apply changes that need it")
	return cmd
}

// emptyHint says on stderr, in table output, where an empty list looked
// and how to look everywhere.
func (a *app) emptyHint(cmd *cobra.Command, what string) {
	if f, _ := a.format(); f != formatTable {
		return
	}
	p := a.cfg.Project
	if p == "" {
		p = api.DefaultProject + " (the default; 'vpool project use NAME' sets another)"
	}
	fmt.Fprintf(errw(cmd), "no %s in project %s; -A lists every project's (admins)\n", what, p)
}

// parseHAPriority reads --ha-priority: a level (high, medium, low, off)
// or a number 0-1000 that orders VMs within their level.
func parseHAPriority(v string, s *model.VMSpec) error {
	switch v {
	case "":
		return nil
	case model.HAHigh, model.HAMedium, model.HALow, model.HAOff:
		s.HA = v
		return nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > 1000 {
		return fmt.Errorf("--ha-priority: want high, medium, low, off or a number 0-1000, got %q", v)
	}
	s.HAPriority = n
	return nil
}
