package qemu

import (
	"fmt"
	"slices"
	"strings"
)

// Machine types. "q35" is an alias of the newest versioned type of each
// QEMU (pc-q35-7.2 on 7.2, pc-q35-10.0 on 10.0), and a running VM can only
// move to a QEMU that runs it with the same versioned type: the device
// state differs between versions. So the driver resolves the configured
// type once, runs every VM with the versioned one, reports it in the
// inventory (the migration pre-checks compare hosts), and a target names
// it in its migration address so the source can refuse a mismatch before
// anything moves. A host upgraded to a newer QEMU keeps moving VMs with
// the others by naming the old type (vpool agent --machine pc-q35-7.2).

// resolveMachineType returns the versioned machine type `-machine help`
// output (help) gives for want: the target of an alias, or want itself
// when QEMU lists it.
func resolveMachineType(help, want string) (string, error) {
	for _, line := range strings.Split(help, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != want {
			continue
		}
		const alias = "(alias of "
		if i := strings.Index(line, alias); i >= 0 {
			if t, _, ok := strings.Cut(line[i+len(alias):], ")"); ok && t != "" {
				return t, nil
			}
		}
		return want, nil
	}
	return "", fmt.Errorf("qemu: machine type %q is unknown to this QEMU (see -machine help)", want)
}

// resolveMachine sets d.machineType from Config.Machine.
func (d *Driver) resolveMachine() error {
	out, err := d.qemuHelp("-machine")
	if err != nil {
		return err
	}
	d.machineType, err = resolveMachineType(out, d.cfg.Machine)
	return err
}

// isQ35 reports whether machine type t is a q35 (PCIe) machine.
func isQ35(t string) bool { return t == "q35" || strings.HasPrefix(t, "pc-q35-") }

// runMachineType is the machine type the VM's QEMU was started with (from
// its recorded command line); empty when unknown.
func runMachineType(r *runRec) string {
	if r == nil {
		return ""
	}
	i := slices.Index(r.Cmdline, "-machine")
	if i < 0 || i+1 >= len(r.Cmdline) {
		return ""
	}
	_, kvs := parseOpts(r.Cmdline[i+1])
	for _, p := range kvs {
		if p.k == "type" {
			return p.v
		}
	}
	return ""
}

// checkTargetMachine refuses to move a VM running machine type running to
// a target that runs target. An unversioned type on either side (a VM
// started before types were resolved, an older target) is not checked.
func checkTargetMachine(running, target string) error {
	if running == "" || target == "" || running == target || !versioned(running) || !versioned(target) {
		return nil
	}
	return fmt.Errorf("the VM runs machine type %s but the target runs %s: start the target's agent with --machine %s, or restart the VM to move it cold", running, target, running)
}

// versioned reports whether machine type t names a QEMU version
// (pc-q35-10.0), unlike an alias (q35, pc).
func versioned(t string) bool {
	i := strings.LastIndexByte(t, '-')
	if i < 0 {
		return false
	}
	var major, minor int
	_, err := fmt.Sscanf(t[i+1:], "%d.%d", &major, &minor)
	return err == nil
}
