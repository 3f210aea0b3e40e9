package qemu

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// What a VM's QEMU may open, running as the VM's own uid (uidalloc.go).
// QEMU is started directly as that uid and gid (exec credentials, no
// supplementary groups but kvm's when /dev/kvm is used), not as root with
// -run-with user=: QEMU opens its command line's files before it drops
// privileges, so a path that reached the command line would still be
// opened as root. Started as the VM's user, every open — the command
// line's, and later QMP's blockdev-add, object-add, nbd-server-start —
// is checked against the VM's uid, and seccomp (-sandbox) stays on.
//
// The agent (root) hands over what QEMU needs:
//   - disk layers: owned by the VM's uid, 0600, in root-owned directories
//     (root:<vm gid> 0710) that QEMU can search but not write, so it can
//     neither create, rename nor unlink files there (own);
//   - the cloud-init seed: root:<vm gid> 0640 (read-only for the VM);
//   - image bases, kernels, initrds (shared by every VM of the host): read
//     in place when every VM user can (o+r on the file, o+x on each
//     directory above it, as the agent's content-addressed image cache
//     lays them out), else through a copy under StateDir/images (0644);
//   - the serial log and the pid file: made by the agent, owned by the uid
//     (QEMU opens them, never creates them);
//   - QMP, console and guest-agent sockets: bound by the agent (0600,
//     root) and passed to QEMU as listening descriptors (chardev fd=), so
//     QEMU needs no directory it can write and the agent never follows a
//     path QEMU could have replaced; the backup NBD socket likewise;
//   - LUKS keys: inherited pipes, their inode given to the uid (QEMU opens
//     /dev/fd/N);
//   - taps: opened by the agent and passed as descriptors (netdev tap
//     fd=; /dev/net/tun may be root's only), made with the VM's uid as
//     owner so no other user attaches to them;
//   - migration TLS credentials: copied into the VM directory for the
//     object-add that loads them and removed right after (vmTLSDir).
//
// Modes keep QEMU out of root's and other VMs' files; what every user of
// the host may read or write (other processes' /proc, /tmp, home
// directories) is hidden by a mount namespace of its own (vmns.go).
//
// Directories above all this must be searchable by the VM users: the
// driver makes its own state dir, vms/, pools and RunDir 0711, and gives
// o+x to ancestors that lack it (grantSearch: logged; a directory not
// owned by root is refused instead).

// userConfig holds the driver's per-VM user settings (Config defaults).
const (
	defaultVMUIDBase     = 2000000
	defaultVMUIDCount    = 65536
	defaultVMUIDRegistry = "/run/vpool/vm-uids"
)

// initUsers sets up the per-VM users: the allocator and the directories
// QEMU must search. Without root (no CAP_SETUID) QEMU runs as the
// driver's own user, as before.
func (d *Driver) initUsers() error {
	if os.Geteuid() != 0 {
		d.log.Info("qemu: not root: VMs' QEMUs run as the agent's own user (no per-VM users)")
		return nil
	}
	if d.cfg.VMUIDCount < 2 {
		return fmt.Errorf("qemu: per-VM uid range %d+%d: want at least 2 ids (the first is the VMs' shared device group)", d.cfg.VMUIDBase, d.cfg.VMUIDCount)
	}
	// The range's first id is the group every QEMU shares for devices
	// (userfaultfd); VMs get the others.
	a, err := newUIDAllocator(d.cfg.VMUIDRegistry, d.cfg.VMUIDBase+1, d.cfg.VMUIDCount-1, d.cfg.StateDir)
	if err != nil {
		return err
	}
	d.users = a
	if err := d.shareUserfaultfd(); err != nil {
		return err
	}
	dirs := append([]string{d.cfg.StateDir, filepath.Join(d.cfg.StateDir, "vms"), d.cfg.RunDir}, poolDirs(d.cfg.Pools)...)
	for _, dir := range dirs {
		if err := os.MkdirAll(dir, 0o711); err != nil {
			return fmt.Errorf("qemu: %w", err)
		}
		if err := os.Chmod(dir, 0o711); err != nil {
			return fmt.Errorf("qemu: %w", err)
		}
		if err := d.grantSearch(filepath.Dir(dir)); err != nil {
			return err
		}
	}
	if d.accel == "kvm" {
		var st syscall.Stat_t
		if syscall.Stat("/dev/kvm", &st) == nil && st.Mode&0o006 != 0o006 {
			d.kvmGID = &st.Gid
		}
	}
	return nil
}

// grantSearch gives o+x to dir and every directory above it that lacks
// it, so VM users reach what lies below. Only root-owned directories are
// changed; another owner's is an error naming the fix.
func (d *Driver) grantSearch(dir string) error {
	for ; ; dir = filepath.Dir(dir) {
		var st syscall.Stat_t
		if err := syscall.Stat(dir, &st); err != nil {
			return fmt.Errorf("qemu: %w", err)
		}
		if st.Mode&0o001 == 0 {
			if st.Uid != 0 {
				return fmt.Errorf("qemu: %s (mode %o, owner %d) is not searchable by the VMs' users: chmod o+x it", dir, st.Mode&0o7777, st.Uid)
			}
			if err := os.Chmod(dir, os.FileMode(st.Mode&0o777|0o001)|modeExtra(st.Mode)); err != nil {
				return fmt.Errorf("qemu: %w", err)
			}
			d.log.Warn("qemu: made a directory searchable by the VMs' users (o+x) so they reach their files", "dir", dir)
		}
		if dir == "/" || dir == "." {
			return nil
		}
	}
}

// modeExtra keeps setuid, setgid and sticky bits across a chmod.
func modeExtra(m uint32) os.FileMode {
	var out os.FileMode
	if m&syscall.S_ISUID != 0 {
		out |= os.ModeSetuid
	}
	if m&syscall.S_ISGID != 0 {
		out |= os.ModeSetgid
	}
	if m&syscall.S_ISVTX != 0 {
		out |= os.ModeSticky
	}
	return out
}

// assignUser gives rec a uid of its own (Create, incoming, adoption).
func (d *Driver) assignUser(rec *record) error {
	if d.users == nil || rec.User != nil {
		return nil
	}
	u, err := d.users.allocate(rec.Config.ID)
	if err != nil {
		return err
	}
	rec.User = &u
	return nil
}

// releaseUser gives rec's uid back (Delete).
func (d *Driver) releaseUser(rec *record) {
	if d.users == nil || rec.User == nil {
		return
	}
	if err := d.users.release(rec.Config.ID, *rec.User); err != nil {
		d.log.Warn("qemu: releasing the VM's uid", "vm", rec.Config.ID, "uid", rec.User.UID, "err", err)
	}
}

// recoverUser re-claims a loaded record's uid after a restart. A VM whose
// uid another VM took meanwhile (the registry lost, the range changed)
// gets a new one when it is not running; its files follow at its next
// start (own). A record from before per-VM users gets one too.
func (d *Driver) recoverUser(rec *record, pid int) error {
	if d.users == nil {
		return nil
	}
	before := rec.User
	if pid > 0 {
		// The running QEMU's uid is the truth (/proc): a record written
		// by a driver from before per-VM users has none, and its QEMU
		// runs as root until it restarts.
		uid, ok := procUID(strconv.Itoa(pid))
		switch {
		case ok && uid == 0:
			d.log.Warn("qemu: VM runs as root (started before per-VM users); it runs as its own uid from its next start", "vm", rec.Config.ID)
			pid = 0 // its uid only serves the next start
		case ok && (rec.User == nil || rec.User.UID != uid):
			d.log.Warn("qemu: the VM's QEMU runs as another uid than its record says; keeping the running one", "vm", rec.Config.ID, "uid", uid)
			rec.User = &vmUser{UID: uid, GID: uid}
		}
	}
	if rec.User != nil {
		ok, err := d.users.reclaim(rec.Config.ID, *rec.User)
		switch {
		case err != nil:
			return err
		case !ok && pid > 0:
			d.log.Error("qemu: a running VM's uid is claimed by another VM; it keeps it until it stops", "vm", rec.Config.ID, "uid", rec.User.UID)
		case !ok:
			d.log.Warn("qemu: the VM's uid is taken; it gets another", "vm", rec.Config.ID, "uid", rec.User.UID)
			rec.User = nil
		}
	}
	if err := d.assignUser(rec); err != nil { // none yet, or taken
		return err
	}
	if rec.User == before {
		return nil
	}
	return d.saveRecord(rec)
}

// credential is what QEMU of rec runs as (nil: the agent's own user).
func (d *Driver) credential(rec *record) *syscall.Credential {
	if d.users == nil || rec.User == nil {
		return nil
	}
	c := &syscall.Credential{Uid: rec.User.UID, Gid: rec.User.GID, Groups: []uint32{d.cfg.VMUIDBase}}
	if d.kvmGID != nil {
		c.Groups = append(c.Groups, *d.kvmGID)
	}
	return c
}

// userfaultfdDev is the device post-copy migration opens (QEMU 10 tries
// it before the userfaultfd system call, which an unprivileged process
// may only use for user-mode faults unless vm.unprivileged_userfaultfd).
const userfaultfdDev = "/dev/userfaultfd"

// shareUserfaultfd opens /dev/userfaultfd to the VMs' shared group
// (root:<VMUIDBase> 0660), so that post-copy keeps working: as root, QEMU
// had it anyway; other users of the host still do not.
func (d *Driver) shareUserfaultfd() error {
	var st syscall.Stat_t
	if err := syscall.Stat(userfaultfdDev, &st); err != nil {
		return nil // an older kernel: QEMU uses the system call
	}
	if st.Gid == d.cfg.VMUIDBase && st.Mode&0o060 == 0o060 {
		return nil
	}
	if st.Mode&0o006 == 0o006 {
		return nil // open to everyone already
	}
	if err := errors.Join(os.Lchown(userfaultfdDev, -1, int(d.cfg.VMUIDBase)), os.Chmod(userfaultfdDev, os.FileMode(st.Mode&0o7777|0o060))); err != nil {
		return fmt.Errorf("qemu: giving %s to the VMs' group (post-copy): %w", userfaultfdDev, err)
	}
	d.log.Info("qemu: opened /dev/userfaultfd to the VMs' shared group for post-copy migration", "gid", d.cfg.VMUIDBase)
	return nil
}

// own hands rec's files to its user: every layer file (uid, 0600), the
// disk and VM directories (root:gid 0710: searchable, not writable) and
// the seed (root:gid 0640). Called before every QEMU start and before QMP
// opens a file the agent just made (snapshot overlays, hot-plugged disks,
// restore targets). A disk on a shared pool that another host owns is
// left alone, unless arriving: an incoming migration's target takes the
// shared disks when its QEMU starts, before the switchover moves the
// owner record; the source QEMU keeps its open descriptors, and takes
// them back if the migration fails (MigrateOut).
func (d *Driver) own(rec *record, arriving bool) error {
	u := rec.User
	if d.users == nil || u == nil {
		return nil
	}
	var errs []error
	dirs := map[string]bool{d.vmDir(rec.Config.ID): true}
	for _, dr := range rec.Disks {
		if !arriving && d.foreignDisk(rec, dr) {
			continue
		}
		dirs[dr.Dir] = true
		for _, l := range dr.Layers {
			errs = append(errs, chownFile(l.File, int(u.UID), int(u.GID), 0o600))
		}
	}
	for dir := range dirs {
		errs = append(errs, chownDir(dir, 0, int(u.GID), 0o710))
	}
	if seed := filepath.Join(d.vmDir(rec.Config.ID), "seed.iso"); fileExists(seed) {
		errs = append(errs, chownFile(seed, 0, int(u.GID), 0o640))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("qemu: handing %s's files to its uid %d: %w", rec.Config.ID, u.UID, err)
	}
	return nil
}

// reown takes back this VM's shared disks after a failed migration whose
// target had taken them at its start (own); the target gives its uid back
// when it deletes the VM.
func (d *Driver) reown(rec *record) {
	if err := d.own(rec, false); err != nil {
		d.log.Warn("qemu: taking the VM's files back after a failed migration", "vm", rec.Config.ID, "err", err)
	}
}

// foreignDisk reports a disk on a shared pool that another host owns now:
// never re-owned from here.
func (d *Driver) foreignDisk(rec *record, dr diskRec) bool {
	o, ok, err := readOwner(dr.Dir)
	return err == nil && ok && !d.mine(o, rec.Config.ID, d.localPool(filepath.Dir(dr.Dir)))
}

// chownFile sets a regular file's owner and mode without following a
// symbolic link.
func chownFile(path string, uid, gid int, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil // a layer not made yet, or removed meanwhile
	}
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	return errors.Join(f.Chown(uid, gid), f.Chmod(mode))
}

func chownDir(path string, uid, gid int, mode os.FileMode) error {
	st, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return fmt.Errorf("%s is not a directory", path)
	}
	return errors.Join(os.Lchown(path, uid, gid), os.Chmod(path, mode))
}

// giveLayer hands one disk file the agent just made to rec's user before
// QMP opens it (a snapshot overlay, a hot-plugged disk, a backup fleece).
func (d *Driver) giveLayer(rec *record, file string) error {
	u := rec.User
	if d.users == nil || u == nil {
		return nil
	}
	if err := errors.Join(chownFile(file, int(u.UID), int(u.GID), 0o600), chownDir(filepath.Dir(file), 0, int(u.GID), 0o710)); err != nil {
		return fmt.Errorf("qemu: handing %s to the VM's uid: %w", filepath.Base(file), err)
	}
	return nil
}

func fileExists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// giveFile makes an empty file at path owned by rec's user (0600) for
// QEMU to open: its serial log, its pid file.
func (d *Driver) giveFile(rec *record, path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("qemu: %w", err)
	}
	defer f.Close()
	if u := rec.User; d.users != nil && u != nil {
		if err := f.Chown(int(u.UID), int(u.GID)); err != nil {
			return fmt.Errorf("qemu: %w", err)
		}
	}
	return nil
}

// giveFD hands an inherited descriptor (a key pipe) to rec's user, so
// that QEMU may open it as /dev/fd/N.
func (d *Driver) giveFD(rec *record, f *os.File) error {
	if u := rec.User; d.users != nil && u != nil {
		if err := f.Chown(int(u.UID), int(u.GID)); err != nil {
			return fmt.Errorf("qemu: %w", err)
		}
	}
	return nil
}

// listenUnix binds a unix socket at path (0600, root: only the agent
// connects) and returns its listening descriptor for QEMU; the path stays
// when the descriptor is closed.
func listenUnix(path string) (*os.File, error) {
	os.Remove(path)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	ln.SetUnlinkOnClose(false)
	defer ln.Close()
	if err := os.Chmod(path, 0o600); err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	f, err := ln.File()
	if err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	return f, nil
}

// shareable returns a path of the read-only shared input file (image
// base, kernel, initrd) that every VM user can read: the file itself when
// it can already, else a copy under StateDir/images, made once per file
// version (path, size, modification time). The copy is counted as used
// by VM id until the VM is deleted (imagecopies.go); the last VM to go
// takes the copy with it.
func (d *Driver) shareable(path, id string) (string, error) {
	if d.users == nil || path == "" || readableByOthers(path) {
		return path, nil
	}
	d.copies.mu.Lock()
	defer d.copies.mu.Unlock()
	st, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("qemu: %w", err)
	}
	dst := d.copyPath(path, st)
	if dst2, err := os.Stat(dst); err == nil && dst2.Size() == st.Size() {
		d.copies.use(dst, id)
		return dst, nil
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o711); err != nil {
		return "", fmt.Errorf("qemu: %w", err)
	}
	if err := copyFile(path, dst, 0o644); err != nil {
		return "", err
	}
	d.copies.use(dst, id)
	d.log.Info("qemu: copied an image file the VMs' users cannot read in place", "file", path, "copy", dst)
	return dst, nil
}

// copyPath is where shareable copies path (st: its stat).
func (d *Driver) copyPath(path string, st os.FileInfo) string {
	h := sha256.Sum256([]byte(path + "\x00" + strconv.FormatInt(st.Size(), 10) + "\x00" + strconv.FormatInt(st.ModTime().UnixNano(), 10)))
	return filepath.Join(d.imagesDir(), hex.EncodeToString(h[:12])+"-"+filepath.Base(path))
}

// imagesDir holds shareable's copies.
func (d *Driver) imagesDir() string { return filepath.Join(d.cfg.StateDir, "images") }

// readableByOthers reports whether any user can read path: o+r on the
// file and o+x on every directory above it.
func readableByOthers(path string) bool {
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm()&0o004 == 0 {
		return false
	}
	for dir := filepath.Dir(path); ; dir = filepath.Dir(dir) {
		ds, err := os.Stat(dir)
		if err != nil || ds.Mode().Perm()&0o001 == 0 {
			return false
		}
		if dir == "/" || dir == "." {
			return true
		}
	}
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("qemu: %w", err)
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".tmp-copy-*")
	if err != nil {
		return fmt.Errorf("qemu: %w", err)
	}
	_, cerr := io.Copy(tmp, in)
	err = errors.Join(cerr, tmp.Close(), os.Chmod(tmp.Name(), mode))
	if err == nil {
		err = os.Rename(tmp.Name(), dst)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("qemu: copying %s: %w", src, err)
	}
	return nil
}
