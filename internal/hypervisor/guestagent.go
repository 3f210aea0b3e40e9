package hypervisor

import (
	"context"
	"errors"
)

// ErrNoGuestAgent: the VM has no guest-agent channel (it was started
// without one, or by a driver version that did not add one).
var ErrNoGuestAgent = errors.New("hypervisor: the VM has no guest-agent channel")

// GuestAgent is an optional capability: talking to an agent inside the
// guest (for QEMU, qemu-ga on the org.qemu.guest_agent.0 virtio-serial
// channel every VM gets).
type GuestAgent interface {
	// GuestPing returns nil when the VM's guest agent answers within
	// ctx; ErrNoGuestAgent when the VM has no channel; another error
	// when nothing answers (no agent runs in the guest, or not yet).
	GuestPing(ctx context.Context, id string) error
}
