package devenv_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

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

func TestFindTestGuest(t *testing.T) {
	cache := t.TempDir()
	touch(t, filepath.Join(cache, "old", "vmlinux"), "k")
	touch(t, filepath.Join(cache, "old", "initramfs.cpio.gz"), "i")
	touch(t, filepath.Join(cache, "new", "vmlinux"), "k")
	touch(t, filepath.Join(cache, "new", "initramfs.cpio.gz"), "i")
	touch(t, filepath.Join(cache, "half", "vmlinux"), "k") // no initramfs: a build that broke off
	past := time.Now().Add(-time.Hour)
	if err := os.Chtimes(filepath.Join(cache, "old", "vmlinux"), past, past); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, root, want string
		ok               bool
	}{
		{"newest complete build", cache, filepath.Join(cache, "new"), true},
		{"empty cache", t.TempDir(), "", false},
		{"no cache", filepath.Join(cache, "missing"), "", false},
		{"no root", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := devenv.FindTestGuest(tt.root)
			if got != tt.want || ok != tt.ok {
				t.Fatalf("FindTestGuest(%q) = %q, %v; want %q, %v", tt.root, got, ok, tt.want, tt.ok)
			}
		})
	}
}
