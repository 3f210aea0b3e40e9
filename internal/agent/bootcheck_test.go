package agent

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
)

// bootDriver is a driver with a console and a guest agent whose answers
// the test sets.
type bootDriver struct {
	hypervisor.Driver // nil: only the methods below are called
	console           string
	ping              error
	pings             int
}

func (d *bootDriver) Name() string { return "boot-fake" }
func (d *bootDriver) OpenConsole(context.Context, string) (io.ReadWriteCloser, error) {
	return nil, errors.New("not here")
}
func (d *bootDriver) ConsoleLog(context.Context, string, int) ([]byte, error) {
	return []byte(d.console), nil
}
func (d *bootDriver) GuestPing(context.Context, string) error {
	d.pings++
	return d.ping
}

func TestBootCheckModes(t *testing.T) {
	oldT, oldP := bootCheckTimeout, bootCheckPoll
	bootCheckTimeout, bootCheckPoll = 50*time.Millisecond, 5*time.Millisecond
	t.Cleanup(func() { bootCheckTimeout, bootCheckPoll = oldT, oldP })
	silent := errors.New("qemu: the guest agent does not answer: i/o timeout")
	for _, tc := range []struct {
		name    string
		by      string
		console string
		ping    error
		want    string // BootCheck* or "error: <substring>"
	}{
		{"auto, agent answers", "", "", nil, model.BootCheckAgent},
		{"auto, no channel: the marker", model.BootCheckAuto, "x\nVPOOL-GUEST-READY cpus=1\n", hypervisor.ErrNoGuestAgent, model.BootCheckMarker},
		{"auto, agent silent: the marker", "", "VPOOL-GUEST-READY", silent, model.BootCheckMarker},
		{"auto, neither", "", "booting", silent, "error: the guest agent did not answer"},
		{"marker only, agent answers but no marker", model.BootCheckMarker, "booting", nil, "error: did not appear on the console"},
		{"agent only, marker shown but no channel", model.BootCheckAgent, "VPOOL-GUEST-READY", hypervisor.ErrNoGuestAgent, "error: no guest-agent channel"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			drv := &bootDriver{console: tc.console, ping: tc.ping}
			bk := &backups{a: &Agent{cfg: Config{Driver: drv}}}
			by, err := bk.bootCheck(context.Background(), "p.vm", model.Restore{BootCheck: true, BootCheckBy: tc.by})
			if want, ok := strings.CutPrefix(tc.want, "error: "); ok {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("bootCheck = %q, %v; want an error with %q", by, err, want)
				}
				return
			}
			if err != nil || by != tc.want {
				t.Fatalf("bootCheck = %q, %v; want %q", by, err, tc.want)
			}
			if tc.by == model.BootCheckMarker && drv.pings > 0 {
				t.Fatalf("marker mode pinged the agent %d times", drv.pings)
			}
		})
	}
}
