package devenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/server"
	"github.com/vpool/vpool/internal/state"
)

// TestGuestImage is the image name under which `vpool dev` registers the
// tiny guest that scripts/build-guest.sh builds: Debian's kernel and a
// busybox initramfs with a shell on the serial console. It is no
// distribution: the name says what a user gets.
const TestGuestImage = "busybox"

// testGuestDescription describes the registered test guest.
const testGuestDescription = "Debian's kernel + a busybox shell on the serial console (vpool's test guest, scripts/build-guest.sh)"

// GuestCacheRoot is build-guest's cache root: $VPOOL_GUEST_CACHE, else
// $XDG_CACHE_HOME/vpool/guest, else ~/.cache/vpool/guest.
func GuestCacheRoot() string {
	if root := os.Getenv("VPOOL_GUEST_CACHE"); root != "" {
		return root
	}
	base := os.Getenv("XDG_CACHE_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return ""
		}
		base = filepath.Join(home, ".cache")
	}
	return filepath.Join(base, "vpool", "guest")
}

// FindTestGuest returns the newest build of the test guest under root
// (one directory per build, holding vmlinux and initramfs.cpio.gz).
func FindTestGuest(root string) (string, bool) {
	if root == "" {
		return "", false
	}
	ents, err := os.ReadDir(root)
	if err != nil {
		return "", false
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
		dir := filepath.Join(root, e.Name())
		st, err := os.Stat(filepath.Join(dir, "vmlinux"))
		if err != nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, "initramfs.cpio.gz")); err != nil {
			continue
		}
		cs = append(cs, cand{dir, st.ModTime().UnixNano()})
	}
	if len(cs) == 0 {
		return "", false
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i].mod > cs[j].mod })
	return cs[0].dir, true
}

// registerTestGuest imports the test guest as TestGuestImage unless an
// image of that name is there already. It says what it did.
func registerTestGuest(ctx context.Context, srv *Server, cacheRoot string) (string, error) {
	if im, err := srv.Repo().GetImage(ctx, TestGuestImage); err == nil && im.Phase == model.ImageReady {
		return fmt.Sprintf("image %s is registered", TestGuestImage), nil
	}
	dir, ok := FindTestGuest(cacheRoot)
	if !ok {
		return fmt.Sprintf("no test guest under %s (build it with scripts/build-guest.sh, then restart): VMs without an image boot nothing", cacheRoot), nil
	}
	cmdline := "console=ttyS0"
	if b, err := os.ReadFile(filepath.Join(dir, "cmdline")); err == nil {
		cmdline = strings.TrimSpace(string(b))
	}
	im, err := srv.ImportLocalImage(ctx, api.ImageImportRequest{Name: TestGuestImage, Description: testGuestDescription, Cmdline: cmdline},
		[]server.LocalFile{{Role: model.ImageKernel, Path: filepath.Join(dir, "vmlinux")}, {Role: model.ImageInitrd, Path: filepath.Join(dir, "initramfs.cpio.gz")}})
	if errors.Is(err, state.ErrExists) {
		return fmt.Sprintf("image %s exists (not replaced)", TestGuestImage), nil
	}
	if err != nil {
		return "", err
	}
	var size model.Bytes
	for _, f := range im.Files {
		size += f.Size
	}
	return fmt.Sprintf("registered the test guest as image %s (%s, from %s)", TestGuestImage, size, dir), nil
}
