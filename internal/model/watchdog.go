package model

import (
	"strings"
	"time"
)

// Watchdog is a VM's guest watchdog device (VM-level HA, docs/ha.md): a
// watchdog the guest arms and feeds (Linux's i6300esb driver, systemd's
// RuntimeWatchdogSec, a watchdog daemon); when the guest stops feeding
// it — a hung kernel, a wedged userspace — the hypervisor acts on the
// VM without asking the guest.
type Watchdog struct {
	// Model is the emulated device; "" is i6300esb (the only one offered:
	// a PCI device every x86 guest kernel has a driver for).
	Model string `json:"model,omitempty"`
	// Action is what happens when it fires: reset (the default: the guest
	// reboots in place, same QEMU), poweroff (QEMU ends as after a guest
	// power-off; while the VM is asked to run its host starts it again,
	// in a fresh QEMU) or pause (the VM is frozen as it is, phase paused,
	// for an operator to inspect; `vpool vm restart` reboots it).
	Action string `json:"action,omitempty"`
}

// Watchdog models and actions.
const (
	WatchdogI6300ESB = "i6300esb"

	WatchdogReset    = "reset"
	WatchdogPoweroff = "poweroff"
	WatchdogPause    = "pause"
)

// WatchdogActions lists the accepted Watchdog.Action values.
var WatchdogActions = []string{WatchdogReset, WatchdogPoweroff, WatchdogPause}

// validate fills the defaults and checks the device and action.
func (w *Watchdog) validate() error {
	if w == nil {
		return nil
	}
	if w.Model == "" {
		w.Model = WatchdogI6300ESB
	}
	if w.Model != WatchdogI6300ESB {
		return fieldErr("spec.watchdog.model", "must be %s, the only watchdog device offered (got %s); leave it empty for the default", WatchdogI6300ESB, quoteShort(w.Model))
	}
	if w.Action == "" {
		w.Action = WatchdogReset
	}
	for _, a := range WatchdogActions {
		if w.Action == a {
			return nil
		}
	}
	return fieldErr("spec.watchdog.action", "must be one of %s (got %s): reset reboots the guest, poweroff stops the VM, pause freezes it", strings.Join(WatchdogActions, ", "), quoteShort(w.Action))
}

// WatchdogFiring is the last firing of a VM's guest watchdog as its host
// saw it (VMStatus.Watchdog): when, the action QEMU took, and how many
// times it fired in the VM's current QEMU.
type WatchdogFiring struct {
	At     time.Time `json:"at"`
	Action string    `json:"action"`
	Count  int       `json:"count"`
}

// MaxWatchdogFirings bounds the count a host may report.
const MaxWatchdogFirings = 1 << 30

// Validate checks a firing a host reports (hosts are not trusted): a
// known action, a count in range, a time.
func (w *WatchdogFiring) Validate() error {
	if w == nil {
		return nil
	}
	if w.At.IsZero() {
		return fieldErr("watchdog.at", "must be the time the watchdog fired")
	}
	if w.Count < 1 || w.Count > MaxWatchdogFirings {
		return fieldErr("watchdog.count", "must be between 1 and %d (got %d)", MaxWatchdogFirings, w.Count)
	}
	// QEMU's own actions; "none", "debug" and "inject-nmi" are reported
	// as they are, though vpool sets only the three of WatchdogActions
	switch strings.ToLower(w.Action) {
	case WatchdogReset, WatchdogPoweroff, WatchdogPause, "shutdown", "none", "debug", "inject-nmi":
		return nil
	}
	return fieldErr("watchdog.action", "must be a QEMU watchdog action such as %s (got %s)", strings.Join(WatchdogActions, ", "), quoteShort(w.Action))
}
