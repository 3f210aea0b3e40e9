// Package guest locates vpool's tiny test guest — the Debian kernel and a
// busybox initramfs built by scripts/build-guest.sh from Debian packages
// only — building it when it is missing, and helps tests wait for its
// serial-console markers. Tests and benchmarks of the QEMU driver (and
// end-to-end tests) use it; production code does not.
//
// It imports the standard library, testing, internal/hypervisor and
// internal/testenv; it must not import the driver itself.
package guest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/testenv"
)

// Markers the guest prints on its serial console.
const (
	ReadyMarker    = "VPOOL-GUEST-READY"
	PoweroffMarker = "VPOOL-GUEST-POWEROFF"
	// QGAMarker: the "with qemu-ga" variant started the guest agent on
	// the VM's org.qemu.guest_agent.0 port (FindQGA).
	QGAMarker = "VPOOL-GUEST-QGA"
	// DataFSMarker: the variant mounted vpool.datafs=DEV on /data.
	DataFSMarker = "VPOOL-GUEST-DATAFS"
)

// Guest is a built test guest.
type Guest struct {
	Dir     string
	Kernel  string // uncompressed vmlinux (PVH boot)
	Initrd  string // gzip'd cpio with a busybox /init
	Cmdline string // default kernel command line
}

// Image returns the guest as a boot image, with extra kernel switches
// appended (e.g. "vpool.tick=1", "vpool.diskread=1", "vpool.dirty=64").
func (g Guest) Image(extra ...string) *hypervisor.Image {
	return &hypervisor.Image{
		Name:    "vpool-test-guest",
		Kernel:  g.Kernel,
		Initrd:  g.Initrd,
		Cmdline: strings.TrimSpace(g.Cmdline + " " + strings.Join(extra, " ")),
	}
}

var (
	once   sync.Once
	cached Guest
	errFnd error

	qgaOnce   sync.Once
	qgaCached Guest
	qgaErr    error
)

// Find returns the test guest: VPOOL_GUEST_DIR when set, else the output
// of scripts/build-guest.sh (which returns at once when its cache holds
// the guest and builds it otherwise).
func Find() (Guest, error) {
	once.Do(func() { cached, errFnd = find("VPOOL_GUEST_DIR", "build-guest.sh") })
	return cached, errFnd
}

// FindQGA returns the "with qemu-ga" variant of the test guest (the same
// kernel and /init plus Debian's qemu-guest-agent and ext4, built by
// scripts/build-guest-qga.sh beside the default guest, which it does not
// change): VPOOL_GUEST_QGA_DIR when set, else the script's output.
func FindQGA() (Guest, error) {
	qgaOnce.Do(func() { qgaCached, qgaErr = find("VPOOL_GUEST_QGA_DIR", "build-guest-qga.sh") })
	return qgaCached, qgaErr
}

// RequireQGA is Require for the "with qemu-ga" variant.
func RequireQGA(tb testing.TB) Guest {
	tb.Helper()
	Require(tb)
	g, err := FindQGA()
	if err != nil {
		tb.Fatalf("building the test guest with qemu-ga: %v", err)
	}
	return g
}

func find(env, name string) (Guest, error) {
	dir := os.Getenv(env)
	if dir == "" {
		root, err := repoRoot()
		if err != nil {
			return Guest{}, err
		}
		script := filepath.Join(root, "scripts", name)
		var stderr bytes.Buffer
		cmd := exec.Command(script)
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return Guest{}, fmt.Errorf("guest: %s: %w: %s", script, err, strings.TrimSpace(stderr.String()))
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		dir = lines[len(lines)-1]
	}
	dir, err := shared(dir)
	if err != nil {
		return Guest{}, err
	}
	g := Guest{Dir: dir, Kernel: filepath.Join(dir, "vmlinux"), Initrd: filepath.Join(dir, "initramfs.cpio.gz")}
	b, err := os.ReadFile(filepath.Join(dir, "cmdline"))
	if err != nil {
		return Guest{}, fmt.Errorf("guest: %w", err)
	}
	g.Cmdline = strings.TrimSpace(string(b))
	for _, f := range []string{g.Kernel, g.Initrd} {
		if _, err := os.Stat(f); err != nil {
			return Guest{}, fmt.Errorf("guest: %w", err)
		}
	}
	return g, nil
}

// shared returns a copy of the guest every user can read, once per build
// (build directories are named by a hash of their inputs): QEMU runs as
// each VM's own unprivileged user, and the build cache usually sits under
// a home directory no other user may search. Without it the driver would
// copy the kernel into every test's state directory.
func shared(dir string) (string, error) {
	if searchableByAll(dir) {
		return dir, nil
	}
	dst := filepath.Join(os.TempDir(), "vpool-guest-"+filepath.Base(dir))
	if _, err := os.Stat(filepath.Join(dst, "vmlinux")); err == nil {
		return dst, nil
	}
	tmp, err := os.MkdirTemp(os.TempDir(), ".vpool-guest-")
	if err != nil {
		return "", fmt.Errorf("guest: %w", err)
	}
	defer os.RemoveAll(tmp) // gone after the rename, or a failure
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("guest: %w", err)
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err == nil {
			err = os.WriteFile(filepath.Join(tmp, e.Name()), b, 0o644)
		}
		if err != nil {
			return "", fmt.Errorf("guest: %w", err)
		}
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", fmt.Errorf("guest: %w", err)
	}
	if err := os.Rename(tmp, dst); err != nil && !errors.Is(err, os.ErrExist) && !errors.Is(err, syscall.ENOTEMPTY) {
		return "", fmt.Errorf("guest: %w", err)
	}
	return dst, nil
}

// searchableByAll reports whether every user reaches dir's files: o+x on
// dir and every directory above it.
func searchableByAll(dir string) bool {
	for ; ; dir = filepath.Dir(dir) {
		st, err := os.Stat(dir)
		if err != nil || st.Mode().Perm()&0o001 == 0 {
			return false
		}
		if dir == "/" || dir == "." {
			return true
		}
	}
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("guest: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "scripts", "build-guest.sh")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("guest: scripts/build-guest.sh not found above the working directory")
		}
		dir = parent
	}
}

// Require returns the guest for a test that boots real QEMU. Without
// qemu-system-x86_64 the test is skipped with the reason — or fails when
// VPOOL_REQUIRE_HEAVY=1 (CI), where nothing heavy may be skipped.
func Require(tb testing.TB) Guest {
	tb.Helper()
	for _, bin := range []string{"qemu-system-x86_64", "qemu-img"} {
		testenv.MustHaveTool(tb, bin, "apt-get install qemu-system-x86 qemu-utils; a real-QEMU test")
	}
	g, err := Find()
	if err != nil {
		tb.Fatalf("building the test guest: %v", err)
	}
	return g
}

// Slots is how many real-QEMU tests may boot guests at once on this
// machine, across every test binary (go test runs packages in parallel).
const Slots = 2

// AcquireSlot blocks until one of the machine-wide QEMU test slots is
// free (a flock on a file in the temp dir) and releases it at the end of
// the test. Two cores carry two TCG guests booting at once.
func AcquireSlot(tb testing.TB) {
	tb.Helper()
	for {
		for i := 0; i < Slots; i++ {
			path := filepath.Join(os.TempDir(), fmt.Sprintf("vpool-qemu-test-slot-%d.lock", i))
			f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o666)
			if err != nil {
				tb.Fatalf("guest: %v", err)
			}
			if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err == nil {
				tb.Cleanup(func() { f.Close() }) // closing releases the lock
				return
			}
			f.Close()
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// WaitFor polls the serial log at path until a line containing marker
// appears, and returns that line.
func WaitFor(ctx context.Context, path, marker string) (string, error) {
	for {
		if line, ok := scan(path, marker); ok {
			return line, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("guest: %q not seen in %s: %w", marker, path, ctx.Err())
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// Lines returns every line of the log at path that contains marker.
func Lines(path, marker string) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), marker) {
			out = append(out, sc.Text())
		}
	}
	return out
}

func scan(path, marker string) (string, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", false
	}
	i := bytes.Index(b, []byte(marker))
	if i < 0 {
		return "", false
	}
	end := bytes.IndexByte(b[i:], '\n')
	if end < 0 {
		return "", false // the line is not complete yet
	}
	start := bytes.LastIndexByte(b[:i], '\n') + 1
	return strings.TrimRight(string(b[start:i+end]), "\r"), true
}
