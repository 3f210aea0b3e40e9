package devenv

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
)

// ErrNoImage says an image name resolves to nothing on this host.
var ErrNoImage = errors.New("devenv: image not found")

// TestGuest is the image name of the tiny guest that
// scripts/build-guest.sh builds (newest build in its cache).
const TestGuest = "test-guest"

// ImageResolver finds boot images on a host until the image service
// exists: an image named N is the directory N under one of Dirs, holding
// a kernel (vmlinux, or kernel) with an initrd (initramfs.cpio.gz, or
// initrd) and an optional cmdline file, and/or a base disk (disk.qcow2 or
// disk.raw). TestGuest names the newest build of scripts/build-guest.sh.
type ImageResolver struct {
	Dirs []string
	// GuestCache is build-guest's cache root (default
	// $VPOOL_GUEST_CACHE, else $XDG_CACHE_HOME/vpool/guest, else
	// ~/.cache/vpool/guest).
	GuestCache string
}

// Resolve returns the image named name.
func (r ImageResolver) Resolve(name string) (*hypervisor.Image, error) {
	if err := model.ValidName("image", name); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoImage, err)
	}
	for _, d := range r.Dirs {
		if im, ok := imageIn(filepath.Join(d, name), name); ok {
			return im, nil
		}
	}
	if name == TestGuest {
		if im, ok := r.testGuest(); ok {
			return im, nil
		}
		return nil, fmt.Errorf("%w: %s is not built (run scripts/build-guest.sh)", ErrNoImage, name)
	}
	return nil, fmt.Errorf("%w: %s (put it in %s/%s/ with vmlinux + initramfs.cpio.gz or disk.qcow2)", ErrNoImage, name, strings.Join(r.Dirs, " or "), name)
}

func (r ImageResolver) testGuest() (*hypervisor.Image, bool) {
	root := r.GuestCache
	if root == "" {
		root = os.Getenv("VPOOL_GUEST_CACHE")
	}
	if root == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return nil, false
			}
			base = filepath.Join(home, ".cache")
		}
		root = filepath.Join(base, "vpool", "guest")
	}
	ents, err := os.ReadDir(root)
	if err != nil {
		return nil, false
	}
	type cand struct {
		dir string
		mod int64
	}
	var cs []cand
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		if st, err := os.Stat(filepath.Join(root, e.Name(), "vmlinux")); err == nil {
			cs = append(cs, cand{filepath.Join(root, e.Name()), st.ModTime().UnixNano()})
		}
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i].mod > cs[j].mod })
	for _, c := range cs {
		if im, ok := imageIn(c.dir, TestGuest); ok {
			return im, true
		}
	}
	return nil, false
}

// imageIn reads an image directory.
func imageIn(dir, name string) (*hypervisor.Image, bool) {
	first := func(names ...string) string {
		for _, n := range names {
			p := filepath.Join(dir, n)
			if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
				return p
			}
		}
		return ""
	}
	im := &hypervisor.Image{Name: name, Kernel: first("vmlinux", "kernel"), Initrd: first("initramfs.cpio.gz", "initrd")}
	if b, err := os.ReadFile(filepath.Join(dir, "cmdline")); err == nil {
		im.Cmdline = strings.TrimSpace(string(b))
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, false
	}
	if d := first("disk.qcow2"); d != "" {
		im.Disk, im.Format = d, "qcow2"
	} else if d := first("disk.raw"); d != "" {
		im.Disk, im.Format = d, "raw"
	}
	if im.Kernel == "" && im.Disk == "" {
		return nil, false
	}
	return im, true
}
