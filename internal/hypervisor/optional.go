package hypervisor

import (
	"context"
	"io"

	"github.com/vpool/vpool/internal/model"
)

// Optional capabilities. A driver offers them by implementing the
// interface; callers check with a type assertion and answer
// ErrUnsupported where a driver has none.

// DiskHotplugger adds and removes disks of a VM: live on a running VM, in
// the record on a stopped one (the disk is there at its next start).
type DiskHotplugger interface {
	// AttachDisk creates an empty thin disk d and plugs it in.
	AttachDisk(ctx context.Context, id string, d model.Disk) error
	// DetachDisk unplugs the disk named name and deletes it. The first
	// (boot) disk cannot be detached.
	DetachDisk(ctx context.Context, id, name string) error
}

// Console gives access to a VM's serial console.
type Console interface {
	// OpenConsole connects to the console of a running VM: what is read
	// is what the guest prints, what is written is typed on its ttyS0.
	// One connection at a time; closing it detaches.
	OpenConsole(ctx context.Context, id string) (io.ReadWriteCloser, error)
	// ConsoleLog returns up to max bytes of the end of the console
	// output of the VM's current (or last) boot.
	ConsoleLog(ctx context.Context, id string, max int) ([]byte, error)
}

// NICHotplugger adds and removes NICs of a VM: live on a running VM, in
// the record on a stopped one. A driver that cannot unplug or plug the
// NIC live (no free hot-plug slot, a NIC on a bus without hot-plug)
// returns ErrNeedsRestart and changes nothing.
type NICHotplugger interface {
	// AttachNIC plugs nic in with its host side port.
	AttachNIC(ctx context.Context, id string, nic model.NIC, port NICPort) error
	// DetachNIC unplugs the NIC named name and removes its tap.
	DetachNIC(ctx context.Context, id, name string) error
}

// Fencer kills every VM of the host at once, for a self-fence (docs/ha.md,
// "Host failure"). A host back from a freeze runs its VMs from the instant
// it thaws until its agent kills them, while the servers may already run
// them elsewhere: one Kill after another (a state write, or a wait for the
// process to exit, each) stretches that overlap to a tenth of a second and
// more. A driver that can stop them together offers KillAll.
type Fencer interface {
	// KillAll kills every running, paused or unknown VM, without waiting
	// for an operation that holds one, and returns the VMs it killed. An
	// error says some could not be killed; the caller tries again.
	KillAll(ctx context.Context) ([]Info, error)
}
