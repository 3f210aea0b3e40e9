package qemu

import (
	"fmt"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/qmp"
)

// multifd: the memory stream over several connections, each with its own
// thread on both hosts (QEMU's "multifd" capability and
// "multifd-channels" parameter). On a host whose single stream is bound
// by one CPU (TLS, TCG) two channels roughly double what pre-copy moves
// per second, which is what lets a guest that rewrites a quarter of its
// memory converge within the cap (docs/migration-slo.md).
//
// Both QEMUs must have it set before the target starts listening, so the
// source asks for it in the control connection's "prepare" and the target
// answers the channels it set; a target that does not answer them (an
// older driver) gets a single stream. QEMU 10.0 refuses multifd together
// with postcopy-ram ("Postcopy is not yet compatible with multifd"): a VM
// that allows post-copy gets a single stream unless the migration asks
// for channels, and then it is refused (errMultifdPostCopy) rather than
// silently losing one or the other.

// maxMultifdChannels bounds MigrateOptions.MultifdChannels (QEMU allows
// 255; more channels than CPUs only add threads).
const maxMultifdChannels = 16

// defaultMultifdChannels is the driver's default for a host with cpus
// CPUs: two channels where there are two CPUs to run them.
func defaultMultifdChannels(cpus int) int {
	if cpus >= 2 {
		return 2
	}
	return 1
}

// multifdChannels is how many channels an outgoing migration asks for:
// the options' (refused with post-copy), else the host's default (one
// with post-copy, or without escalation: QEMU's own default).
func multifdChannels(o hypervisor.MigrateOptions, host int) (int, error) {
	postcopy := o.AllowPostCopy && !o.NoEscalation
	switch n := o.MultifdChannels; {
	case n < 0 || n > maxMultifdChannels:
		return 0, fmt.Errorf("qemu: multifd channels must be 0 (the host's default) to %d (got %d): %w", maxMultifdChannels, n, hypervisor.ErrUnsupported)
	case n > 1 && postcopy:
		return 0, fmt.Errorf("qemu: %d multifd channels cannot be combined with post-copy (QEMU 10.0: \"Postcopy is not yet compatible with multifd\"): ask for 1 channel or do not allow post-copy: %w", n, hypervisor.ErrUnsupported)
	case n > 0:
		return n, nil
	case postcopy || o.NoEscalation:
		return 1, nil
	}
	return max(host, 1), nil
}

// multifdSetup is what sets n channels (1: multifd off) on one side, for
// migrate-set-capabilities and migrate-set-parameters.
func multifdSetup(n int) (qmp.Args, qmp.Args) {
	capab := qmp.Args{"capability": "multifd", "state": n > 1}
	if n <= 1 {
		return capab, nil
	}
	return capab, qmp.Args{"multifd-channels": n}
}
