package qemu

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/hypervisor/qemu/guest"
	"github.com/vpool/vpool/internal/model"
)

// TestGuestWatchdogFires boots the test guest with a watchdog (action
// pause) and has it arm /dev/watchdog with a 1 s timeout and never feed
// it: the guest sees an i6300esb (its driver binds), the device fires and
// QEMU pauses the VM in the "watchdog" run state, which the driver
// reports as paused, with the firing in the VM's info. Without the device the guest has no /dev/watchdog
// and never arms it.
func TestGuestWatchdogFires(t *testing.T) {
	t.Parallel()
	g := heavy(t)
	var logs syncBuffer
	dc := testConfig(t, "")
	dc.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	d := newDriver(t, dc)
	ctx := context.Background()
	cfg := vmConfig(g, "wdog", "vpool.watchdog=1")
	cfg.Spec.Watchdog = &model.Watchdog{Action: model.WatchdogPause}
	if err := cfg.Spec.Validate(); err != nil {
		t.Fatal(err)
	}
	mustDo(t, "Create", d.Create(ctx, cfg))
	mustDo(t, "Start", d.Start(ctx, cfg.ID))
	waitReady(t, d, cfg.ID)
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if _, err := guest.WaitFor(wctx, d.SerialLog(cfg.ID), "VPOOL-GUEST-WATCHDOG-ARMED"); err != nil {
		b, _ := os.ReadFile(d.SerialLog(cfg.ID))
		t.Fatalf("the guest did not arm a watchdog (no /dev/watchdog?): %v\nserial.log tail: %s", err, tail(string(b), 1500))
	}
	var st hypervisor.State
	for st != hypervisor.StatePaused && wctx.Err() == nil {
		time.Sleep(200 * time.Millisecond)
		st = state(t, d, cfg.ID)
	}
	if st != hypervisor.StatePaused {
		t.Fatalf("state %s 60 s after the guest armed its watchdog, want paused by the watchdog", st)
	}
	d.mu.Lock()
	v := d.vms[cfg.ID]
	d.mu.Unlock()
	qs, err := v.proc.qmp.QueryStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if qs.Status != "watchdog" {
		t.Fatalf("QEMU run state %q, want watchdog (paused by the watchdog's action)", qs.Status)
	}
	if !strings.Contains(logs.String(), `msg="qemu: the guest watchdog fired"`) || !strings.Contains(logs.String(), "action=pause") {
		t.Fatalf("the driver did not log the watchdog's firing:\n%s", logs.String())
	}
	// the firing is part of the VM's info, which the agent reports
	in, ok := d.infoOf(ctx, cfg.ID)
	if !ok || in.Watchdog == nil || in.Watchdog.Action != "pause" || in.Watchdog.Count != 1 || in.Watchdog.At.IsZero() {
		t.Fatalf("info after the firing: %+v, want the firing (pause, once)", in.Watchdog)
	}
}
