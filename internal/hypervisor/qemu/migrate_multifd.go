package qemu

import (
	"context"
	"fmt"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/qmp"
)

// multifd: the memory stream over several connections, each with its own
// thread on both hosts (QEMU's "multifd" capability and
// "multifd-channels" parameter). Where a single stream is bound by one
// CPU (TLS, TCG) two channels roughly double what pre-copy moves per
// second, which is what lets a guest that rewrites a quarter of its
// memory converge within the cap; for an idle guest they only add to
// the downtime (each channel is synced at the switch-over), so they are
// chosen per migration from the guest's dirty rate (docs/migration-slo.md).
//
// Both QEMUs must have it set before the target starts listening, so the
// source asks for it in the control connection's "prepare" and the target
// answers the channels it set; a target that does not answer them (an
// older driver) gets a single stream. QEMU 10.0 refuses multifd together
// with postcopy-ram ("Postcopy is not yet compatible with multifd"): a VM
// that allows post-copy gets a single stream unless the migration asks
// for channels, and then it is refused rather than silently losing one
// or the other.

const (
	// maxMultifdChannels bounds MigrateOptions.MultifdChannels (QEMU
	// allows 255; more channels than CPUs only add threads).
	maxMultifdChannels = model.MaxMultifdChannels
	// dirtyProbe is how long the source measures the guest's dirty rate
	// before it chooses (calc-dirty-rate, page sampling).
	dirtyProbe = 200 * time.Millisecond
	// defaultStreamBw is what one stream is assumed to move until this
	// host has measured one: one TLS stream under TCG moved 150–440
	// MiB/s on the 2-core development machine.
	defaultStreamBw = 256 * int64(model.MiB)
)

// defaultMultifdChannels is the driver's default for a host with cpus
// CPUs: two channels where there are two CPUs to run them.
func defaultMultifdChannels(cpus int) int {
	if cpus >= 2 {
		return 2
	}
	return 1
}

// multifdChannels is how many channels an outgoing migration asks for
// when that does not depend on the guest (fixed true): the options'
// (refused with post-copy), one with post-copy or without escalation
// (QEMU's own default) or on a host whose default is one. Otherwise
// (fixed false) chooseChannels decides from the guest's dirty rate.
func multifdChannels(o hypervisor.MigrateOptions, host int) (n int, fixed bool, err error) {
	postcopy := o.AllowPostCopy && !o.NoEscalation
	switch n := o.MultifdChannels; {
	case n < 0 || n > maxMultifdChannels:
		return 0, true, fmt.Errorf("qemu: multifd channels must be 0 (the host's choice) to %d (got %d): %w", maxMultifdChannels, n, hypervisor.ErrUnsupported)
	case n > 1 && postcopy:
		return 0, true, fmt.Errorf("qemu: %d multifd channels cannot be combined with post-copy (QEMU 10.0: \"Postcopy is not yet compatible with multifd\"): ask for 1 channel or do not allow post-copy: %w", n, hypervisor.ErrUnsupported)
	case n > 0:
		return n, true, nil
	case postcopy || o.NoEscalation || host <= 1:
		return 1, true, nil
	}
	return host, false, nil
}

// chooseChannels decides between one stream and host channels for a
// guest of mem bytes dirtying dirty bytes/s, when one stream moves
// streamBw and the downtime cap is limit: channels when one stream
// would need more than maxPasses pre-copy passes after the first to fit
// the rest in the cap (the converger's own estimate), or never would.
// It says why, for the result's notes.
func chooseChannels(mem, dirty, streamBw int64, limit time.Duration, host int) (int, string) {
	if streamBw <= 0 {
		streamBw = defaultStreamBw
	}
	q := float64(dirty) / float64(streamBw)
	// The first pass sends mem while the guest dirties at its rate.
	rest := min(mem, int64(float64(mem)*q))
	n := passesToFit(rest, fits(int64(float64(streamBw)*switchoverShare), capLimit(limit)), q)
	why := fmt.Sprintf("dirtying %s/s against one stream's %s/s the rest would need %s more passes to fit in %v",
		model.Bytes(dirty), model.Bytes(streamBw), passes(n), capLimit(limit))
	if n > maxPasses {
		return host, why
	}
	return 1, why
}

// measureDirtyRate is the guest's dirty rate over dirtyProbe (bytes/s),
// from QEMU's page sampling.
func measureDirtyRate(ctx context.Context, p *process) (int64, error) {
	q := p.qmp
	args := qmp.Args{"calc-time": dirtyProbe.Milliseconds(), "calc-time-unit": "millisecond", "sample-pages": 512}
	if err := q.Execute(ctx, "calc-dirty-rate", args, nil); err != nil {
		return 0, err
	}
	deadline := time.Now().Add(dirtyProbe + 5*time.Second)
	for {
		var r struct {
			Status string `json:"status"`
			Rate   int64  `json:"dirty-rate"` // MB/s
		}
		if err := q.Execute(ctx, "query-dirty-rate", nil, &r); err != nil {
			return 0, err
		}
		switch {
		case r.Status == "measured":
			return r.Rate << 20, nil
		case time.Now().After(deadline):
			return 0, fmt.Errorf("qemu: calc-dirty-rate still %q after %v", r.Status, dirtyProbe+5*time.Second)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-p.exited:
			return 0, fmt.Errorf("qemu: QEMU exited")
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// chooseChannels measures the guest's dirty rate and sets m.channels to
// one stream or the host's channels (chooseChannels). When the rate
// cannot be measured, one stream.
func (m *outgoing) chooseChannels(ctx context.Context) {
	host := m.channels
	m.channels = 1
	if !m.running {
		return // a paused guest dirties nothing
	}
	dirty, err := measureDirtyRate(ctx, m.p)
	if err != nil {
		m.d.log.Warn("qemu: measuring the dirty rate; one migration stream", "vm", m.v.rec.Config.ID, "err", err)
		return
	}
	bw := m.d.streamBw.Load()
	if bw <= 0 {
		bw = defaultStreamBw
	}
	bw = min(bw, m.opts.BandwidthBps)
	var why string
	m.channels, why = chooseChannels(int64(m.v.rec.Config.Spec.Memory), dirty, bw, m.opts.DowntimeLimit, host)
	m.d.log.Info("qemu: migration streams chosen", "vm", m.v.rec.Config.ID, "channels", m.channels, "why", why)
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
