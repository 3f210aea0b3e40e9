package qemu

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vpool/vpool/internal/testenv"
)

// TestImageTool checks what the image pool may take: standalone qcow2 and
// raw images, converted to a qcow2 of the same size; never an image that
// names a backing file (it could read any file of the server) or another
// format.
func TestImageTool(t *testing.T) {
	testenv.MustHaveTool(t, "qemu-img", "apt-get install qemu-utils")
	dir := t.TempDir()
	ctx := context.Background()
	img := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img %v: %v: %s", args, err, out)
		}
	}
	raw := filepath.Join(dir, "disk.raw")
	if err := os.WriteFile(raw, make([]byte, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	img("create", "-q", "-f", "qcow2", filepath.Join(dir, "base.qcow2"), "8M")
	img("create", "-q", "-f", "qcow2", "-b", filepath.Join(dir, "base.qcow2"), "-F", "qcow2", filepath.Join(dir, "overlay.qcow2"))
	img("create", "-q", "-f", "vmdk", filepath.Join(dir, "disk.vmdk"), "8M")
	var tool ImageTool
	tests := []struct {
		file, format, err string
		size              int64
	}{
		{file: "disk.raw", format: "raw", size: 4 << 20},
		{file: "base.qcow2", format: "qcow2", size: 8 << 20},
		{file: "overlay.qcow2", err: "backing file"},
		{file: "disk.vmdk", err: "the disk image is vmdk"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			src := filepath.Join(dir, tt.file)
			format, size, err := tool.Inspect(ctx, src)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Inspect = %s %d %v, want an error with %q", format, size, err, tt.err)
				}
				return
			}
			if err != nil || format != tt.format || size != tt.size {
				t.Fatalf("Inspect = %s %d %v, want %s %d", format, size, err, tt.format, tt.size)
			}
			dst := src + ".converted"
			if err := tool.Convert(ctx, src, format, dst); err != nil {
				t.Fatal(err)
			}
			format, size, err = tool.Inspect(ctx, dst)
			if err != nil || format != "qcow2" || size != tt.size {
				t.Fatalf("converted image: %s %d %v, want qcow2 %d", format, size, err, tt.size)
			}
		})
	}
}
