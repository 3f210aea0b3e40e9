package qemu

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/hypervisor/qemu/guest"
)

func TestRedact(t *testing.T) {
	long := strings.Repeat("é", 400)
	tests := []struct{ in, want string }{
		{"qemu: start a: open /var/lib/vpool/vms/a/x: permission denied", "qemu: start a: open <path>: permission denied"},
		{"Could not open '/pools/a/root.0.qcow2': No such file", "Could not open '<path>': No such file"},
		{"file=/dev/fd/3,format=raw", "file=<path>,format=raw"},
		{"line one\n  line two\tend", "line one line two end"},
		{"I/O error on vd0", "I/O error on vd0"},
		{"/usr/bin/qemu-system-x86_64 -name guest=a", "<path> -name guest=a"},
	}
	for _, tt := range tests {
		if got := redact(tt.in); got != tt.want {
			t.Errorf("redact(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	got := redact(long)
	if len(got) > maxErrorLen+len("…") || !strings.HasSuffix(got, "…") || !utf8Valid(got) {
		t.Errorf("redact of %d bytes = %d bytes %q", len(long), len(got), got[len(got)-10:])
	}
}

func utf8Valid(s string) bool { return strings.ToValidUTF8(s, "?") == s }

// syncBuffer is a log sink the driver's goroutines may write at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestStartErrorStaysOnHost: a QEMU that cannot start (its disk is gone)
// gives an error that is short and holds neither the command line nor a
// host path; the agent's log has the detail.
func TestStartErrorStaysOnHost(t *testing.T) {
	g := guest.Require(t)
	var logs syncBuffer
	cfg := testConfig(t, shortTempDir(t))
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	d := newDriver(t, cfg)
	ctx := context.Background()
	vc := vmConfig(g, "noroot")
	mustDo(t, "Create", d.Create(ctx, vc))
	v, err := d.get(vc.ID)
	mustDo(t, "get", err)
	mustDo(t, "remove the disk", os.Remove(v.rec.Disks[0].Layers[0].File))

	err = d.Start(ctx, vc.ID)
	if err == nil {
		t.Fatal("Start without its disk succeeded")
	}
	msg := err.Error()
	for _, bad := range []string{d.cfg.StateDir, "-blockdev", "-machine", "qemu-system", "/"} {
		if strings.Contains(msg, bad) {
			t.Errorf("the error leaks %q: %s", bad, msg)
		}
	}
	if len(msg) > maxErrorLen+len("…") {
		t.Errorf("the error is %d bytes long: %s", len(msg), msg)
	}
	if !strings.Contains(logs.String(), "-blockdev") {
		t.Errorf("the agent's log lacks QEMU's detail:\n%s", logs.String())
	}
	if errors.Is(err, hypervisor.ErrNotFound) {
		t.Errorf("a start failure reads as ErrNotFound: %v", err)
	}
	// Causes stay visible to errors.Is through the shortened text.
	if err := d.Start(ctx, "test.none"); !errors.Is(err, hypervisor.ErrNotFound) {
		t.Errorf("Start of an unknown VM = %v, want ErrNotFound", err)
	}
}
