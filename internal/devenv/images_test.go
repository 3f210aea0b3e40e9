package devenv_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/vpool/vpool/internal/devenv"
)

func touch(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestImageResolver(t *testing.T) {
	dir, cache := t.TempDir(), t.TempDir()
	touch(t, filepath.Join(dir, "tiny", "vmlinux"), "k")
	touch(t, filepath.Join(dir, "tiny", "initramfs.cpio.gz"), "i")
	touch(t, filepath.Join(dir, "tiny", "cmdline"), "console=ttyS0\n")
	touch(t, filepath.Join(dir, "cloud", "disk.qcow2"), "d")
	touch(t, filepath.Join(dir, "empty", "README"), "")
	touch(t, filepath.Join(cache, "abc", "vmlinux"), "k")
	touch(t, filepath.Join(cache, "abc", "initramfs.cpio.gz"), "i")
	r := devenv.ImageResolver{Dirs: []string{dir}, GuestCache: cache}
	tests := []struct {
		name    string
		kernel  bool
		disk    string
		cmdline string
		err     error
	}{
		{name: "tiny", kernel: true, cmdline: "console=ttyS0"},
		{name: "cloud", disk: "qcow2"},
		{name: "empty", err: devenv.ErrNoImage},
		{name: "missing", err: devenv.ErrNoImage},
		{name: "../etc", err: devenv.ErrNoImage},
		{name: devenv.TestGuest, kernel: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			im, err := r.Resolve(tt.name)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("Resolve = %+v, %v; want %v", im, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (im.Kernel != "") != tt.kernel || im.Format != tt.disk || im.Cmdline != tt.cmdline || im.Name != tt.name {
				t.Fatalf("Resolve = %+v", im)
			}
		})
	}
}
