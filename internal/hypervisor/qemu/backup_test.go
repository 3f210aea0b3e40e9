package qemu

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/qmp"
)

// guestWrite writes n bytes of pattern at off on a running VM's disk
// through the block layer under its virtio device (HMP qemu-io on the
// device's backend), as a guest write would: dirty bitmaps see it.
func guestWrite(t testing.TB, d *Driver, id, disk string, off, n int64, pat byte) {
	t.Helper()
	v, err := d.get(id)
	if err != nil {
		t.Fatal(err)
	}
	v.mu.Lock()
	p := v.proc
	dev := ""
	for _, dr := range v.rec.Disks {
		if dr.Name == disk {
			dev = "/machine/peripheral/" + dr.deviceID() + "/virtio-backend"
		}
	}
	v.mu.Unlock()
	if p == nil || dev == "" {
		t.Fatalf("guestWrite: %s is not running or has no disk %q", id, disk)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out string
	cmd := fmt.Sprintf(`qemu-io -d %s "write -P 0x%02x %d %d"`, dev, pat, off, n)
	if err := p.qmp.Execute(ctx, "human-monitor-command", qmp.Args{"command-line": cmd}, &out); err != nil {
		t.Fatalf("guestWrite: %v", err)
	}
	// qemu-io prints its success to QEMU's stdout; the monitor answers
	// only errors.
	if strings.TrimSpace(out) != "" {
		t.Fatalf("guestWrite %s: %s", cmd, out)
	}
}
