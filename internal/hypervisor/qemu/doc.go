// Package qemu is the hypervisor.Driver that runs real QEMU virtual
// machines: KVM where /dev/kvm is usable, TCG otherwise. Each VM is a QEMU
// child process (never -daemonize, seccomp sandbox on, running as an
// unprivileged uid and gid of its own) in its own session,
// so it outlives an agent restart; its QMP socket, console socket, serial
// log, pid file and record (config.json) live in a per-VM directory under
// the state directory, which is how a new driver re-attaches (List).
//
// The command line is data (Machine, rendered by Machine.Args and
// golden-tested); disks are qcow2 layers in directory storage pools
// (linked clones of image bases, external overlays for snapshots, LUKS
// with keys passed through secret objects on inherited descriptors);
// resource controls are cgroups (v1 or v2) plus QMP block throttling.
// See docs/qemu.md.
//
// Files: config.go (Config, New), cmdline.go (Machine), record.go (the
// on-disk layout), storage.go and keys.go (disks, LUKS keys), process.go
// (launch, watch, re-attach), uidalloc.go and vmuser.go (the per-VM
// users and what the agent hands them), lifecycle.go, resize.go and cgroup.go,
// network.go, stats.go, snapshot.go, migrate.go.
//
// Only this package and internal/qmp know QEMU. It imports the standard
// library, internal/model, internal/hypervisor and internal/qmp; it must
// not import the store, the server, the agent or any decision package.
package qemu
