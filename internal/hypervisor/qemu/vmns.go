package qemu

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// What a VM's QEMU sees of the host's file tree (VP-11, docs/security.md).
//
// File modes (vmuser.go) keep a QEMU running as its VM's user out of what
// belongs to root and to other VMs, but not out of what every user of the
// host may read or write. So every per-VM-user QEMU starts in a mount
// namespace of its own, as libvirt's and Incus's QEMUs do:
//   - /proc is a procfs of its own with hidepid=invisible: QEMU sees its
//     own process only, not the agent's or other QEMUs' command lines,
//     status or descriptors;
//   - /tmp, /var/tmp and /dev/shm are empty private tmpfs: nothing left
//     there by others is readable, nothing written there reaches another
//     VM (no channel between two escaped tenants);
//   - /home, /root, /mnt, /media and Config.HideFromVMs (the agent's state
//     dir: its key, certificates) are empty tmpfs;
//   - the driver's state dir is an empty tmpfs too (other VMs'
//     directories, keys/, migration-tls/, image copies);
//   - what QEMU opens stays where it is: the VM's own directory, RunDir,
//     the pools and the directories of its disks are bound back at their
//     own paths when a hidden directory holds them, and its kernel,
//     initrd and disk base (shared by VMs, read-only) one file at a time.
//     Bind mounts show a directory's current contents, so files made after
//     the start (snapshot overlays, hot-plugged disks, backup fleeces,
//     storage migration targets in a pool, migration TLS copies in the VM
//     directory) are reachable as well; /usr/share (firmware) and /dev
//     (/dev/userfaultfd, /dev/kvm, the key pipes' /dev/fd) are untouched.
//
// The namespace is made on a locked OS thread that unshares its mount
// namespace, mounts the view and starts QEMU (which inherits the
// thread's namespace); the thread is never unlocked, so it ends with its
// goroutine and the namespace lives on in QEMU alone. Where the host's
// mounts are shared (systemd's default), its later mounts propagate into
// the view (slave); the view's never leave it. The network namespace stays
// the host's: migration, its NBD and multifd connections are QEMU's own
// TCP connections to other hosts.

// defaultHidden are the host directories every VM's QEMU sees empty, and
// the modes of the tmpfs over them: sticky and writable where programs
// expect to write, else searchable only (kept directories below are
// reached, nothing is listed).
var defaultHidden = map[string]os.FileMode{
	"/tmp": 0o1777, "/var/tmp": 0o1777, "/dev/shm": 0o1777,
	"/home": 0o711, "/root": 0o711, "/mnt": 0o711, "/media": 0o711,
}

// mountOp is one step of a QEMU's mount namespace: an empty tmpfs over
// Path (Bind false), or Path bound back from the host's view (Bind true;
// File: a single file, else a directory).
type mountOp struct {
	Path string
	Bind bool
	File bool
	Mode os.FileMode // the tmpfs's mode
}

// planMounts orders the view's steps: a tmpfs over each hidden
// directory, then each kept directory or file that a hidden directory
// above it would hide, bound back (parents before children). A
// directory both hidden and kept is kept.
func planMounts(hide map[string]os.FileMode, keepDirs, keepFiles []string) []mountOp {
	kept := map[string]bool{} // path → a file
	for _, k := range keepDirs {
		kept[filepath.Clean(k)] = false
	}
	for _, k := range keepFiles {
		if _, ok := kept[filepath.Clean(k)]; !ok {
			kept[filepath.Clean(k)] = true
		}
	}
	var all []mountOp
	for h, mode := range hide {
		h = filepath.Clean(h)
		if _, ok := kept[h]; !ok && h != "/" {
			all = append(all, mountOp{Path: h, Mode: mode})
		}
	}
	for k, file := range kept {
		all = append(all, mountOp{Path: k, Bind: true, File: file})
	}
	// A parent is a prefix of its child, so it sorts first.
	sort.Slice(all, func(i, j int) bool { return all[i].Path < all[j].Path })
	var out []mountOp
	for i, op := range all {
		if !op.Bind {
			out = append(out, op)
			continue
		}
		// Bind back only when the nearest step above it is a tmpfs: under a
		// kept directory (or nothing) it is visible already.
		for j := i - 1; j >= 0; j-- {
			if under(op.Path, all[j].Path) {
				if !all[j].Bind {
					out = append(out, op)
				}
				break
			}
		}
	}
	return out
}

// under reports whether path lies strictly below dir.
func under(path, dir string) bool {
	return dir == "/" && path != "/" || strings.HasPrefix(path, dir+"/")
}

// mountPlan is the view of rec's QEMU started as bin with m (nil: no
// namespace of its own, when QEMU runs as the agent's user or the host
// cannot make one).
func (d *Driver) mountPlan(rec *record, m Machine, bin string) []mountOp {
	if d.users == nil || rec.User == nil || d.cfg.NoMountNamespace {
		return nil
	}
	hide := map[string]os.FileMode{}
	for h, mode := range defaultHidden {
		hide[h] = mode
	}
	for _, h := range d.cfg.HideFromVMs {
		hide[h] = 0o711
	}
	// The state dir is hidden whole: other VMs' directories, keys/,
	// migration-tls/, image copies made for other VMs.
	hide[d.cfg.StateDir] = 0o711
	dirs := append([]string{d.cfg.RunDir, d.vmDir(rec.Config.ID), filepath.Dir(bin),
		filepath.Join(filepath.Dir(filepath.Dir(bin)), "share", "qemu")}, poolDirs(d.cfg.Pools)...)
	for _, f := range []string{m.SerialLog, m.PidFile, m.QMPSocket, m.ConsoleSocket, m.GuestAgentSocket} {
		if f != "" {
			dirs = append(dirs, filepath.Dir(f))
		}
	}
	for _, dr := range rec.Disks {
		dirs = append(dirs, dr.Dir)
	}
	// Read-only inputs shared by VMs (kernel, initrd, a disk's base; in
	// the agent's image cache or the state dir's copies) are bound one
	// file at a time: the images of other VMs and projects stay out of
	// sight. A layer in a kept directory needs nothing more.
	files := []string{m.Kernel, m.Initrd, m.Seed}
	for _, dr := range m.Drives {
		for _, l := range dr.Layers {
			files = append(files, l.File)
		}
	}
	for _, dr := range rec.Disks {
		files = append(files, dr.Base)
	}
	var keepFiles []string
	for _, f := range files {
		if f != "" && !strings.HasPrefix(f, "/dev/") {
			keepFiles = append(keepFiles, f)
		}
	}
	return planMounts(resolveAll(hide), resolveKeep(dirs), resolveKeep(keepFiles))
}

// resolveAll and resolveKeep give the paths as the kernel will see them
// (symbolic links resolved) where they exist.
func resolveAll(hide map[string]os.FileMode) map[string]os.FileMode {
	out := make(map[string]os.FileMode, len(hide))
	for h, mode := range hide {
		out[resolve(h)] = mode
	}
	return out
}

func resolveKeep(keep []string) []string {
	out := make([]string, 0, len(keep))
	for _, k := range keep {
		if k != "" {
			out = append(out, resolve(k))
		}
	}
	return out
}

func resolve(p string) string {
	abs, err := filepath.Abs(p)
	if err != nil {
		return filepath.Clean(p)
	}
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		return r
	}
	return abs
}

// startAsVM starts cmd (QEMU, bin, for rec with m) as a VM's QEMU runs:
// in a session of its own and without a parent-death signal (VMs outlive
// the agent), as the VM's uid and gid with no supplementary group but the
// VMs' device group and kvm's (vmuser.go), in a mount namespace of its
// own.
func (d *Driver) startAsVM(cmd *exec.Cmd, rec *record, m Machine, bin string) error {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: d.credential(rec)}
	return startInNamespace(cmd, d.mountPlan(rec, m, bin))
}

// startInNamespace starts cmd in a new mount namespace set up by plan
// (vmns.go); a nil plan starts it as it is.
func startInNamespace(cmd *exec.Cmd, plan []mountOp) error {
	if plan == nil {
		return cmd.Start()
	}
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: this thread's namespace is QEMU's, and the
		// runtime ends the thread with the goroutine.
		runtime.LockOSThread()
		if err := applyMounts(plan); err != nil {
			errc <- fmt.Errorf("qemu: QEMU's mount namespace (Config.NoMountNamespace turns it off): %w", err)
			return
		}
		errc <- cmd.Start()
	}()
	return <-errc
}

// applyMounts makes the calling thread's mount namespace plan's view.
// The thread must be locked and never serve another goroutine.
func applyMounts(plan []mountOp) error {
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("unshare: %w", err)
	}
	// The host's later mounts (a pool mounted after the start) reach the
	// view; the view's never reach the host.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return fmt.Errorf("making / a slave: %w", err)
	}
	// Kept directories are opened before anything hides them.
	fds := map[string]int{}
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	for _, op := range plan {
		if !op.Bind {
			continue
		}
		flags := unix.O_PATH | unix.O_CLOEXEC
		if op.File {
			flags |= unix.O_NOFOLLOW
		} else {
			flags |= unix.O_DIRECTORY
		}
		fd, err := unix.Open(op.Path, flags, 0)
		if errors.Is(err, unix.ENOENT) {
			continue // nothing to show
		}
		if err != nil {
			return fmt.Errorf("opening %s: %w", op.Path, err)
		}
		fds[op.Path] = fd
	}
	for _, op := range plan {
		if err := applyMount(op, fds); err != nil {
			return err
		}
	}
	opts := "hidepid=invisible"
	err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, opts)
	if errors.Is(err, unix.EINVAL) { // a kernel before 5.8
		err = unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "hidepid=2")
	}
	if err != nil {
		return fmt.Errorf("mounting /proc (hidepid): %w", err)
	}
	return nil
}

func applyMount(op mountOp, fds map[string]int) error {
	if !op.Bind {
		st, err := os.Lstat(op.Path)
		if err != nil || !st.IsDir() {
			return nil // nothing there to hide
		}
		size := "1m"
		if op.Mode&0o1000 != 0 {
			size = "64m"
		}
		data := fmt.Sprintf("mode=%o,size=%s", uint32(op.Mode)&0o1777, size)
		if err := unix.Mount("tmpfs", op.Path, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, data); err != nil {
			return fmt.Errorf("hiding %s: %w", op.Path, err)
		}
		return nil
	}
	fd, ok := fds[op.Path]
	if !ok {
		return nil
	}
	if err := makeMountpoint(op); err != nil {
		return fmt.Errorf("keeping %s: %w", op.Path, err)
	}
	if err := unix.Mount(fmt.Sprintf("/proc/self/fd/%d", fd), op.Path, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("keeping %s: %w", op.Path, err)
	}
	return nil
}

// makeMountpoint makes what op binds over, in the tmpfs that hides it:
// a directory, or an empty file in a directory.
func makeMountpoint(op mountOp) error {
	if !op.File {
		return os.MkdirAll(op.Path, 0o711)
	}
	if err := os.MkdirAll(filepath.Dir(op.Path), 0o711); err != nil {
		return err
	}
	f, err := os.OpenFile(op.Path, os.O_CREATE|os.O_RDONLY|unix.O_NOFOLLOW, 0o400)
	if err != nil {
		return err
	}
	return f.Close()
}
