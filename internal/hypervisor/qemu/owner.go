package qemu

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// Disk directories and who owns them. A pool may be shared: several hosts
// mount one directory at the same path (NFS), and their agents may all
// run with the same --state-dir path. So the owner of <pool>/<vm>/ is
// recorded by identity, never by a path:
//
//	<pool>/<vm>/.vpool-owner   {"host":"h1","vm":"team-a.web1","epoch":2}
//
// epoch counts hand-overs (every migration that adopts the directory
// raises it); HA fencing will compare it. The rules:
//
//   - a directory is this driver's when its owner names this host and
//     that VM, or when it has no owner file;
//   - a pool inside the state dir is this host's alone (local); any other
//     pool may be shared;
//   - at start-up nothing on a shared pool is deleted: orphans there (this
//     host's directories without a VM) are reported in the log; the
//     control plane orders deletions there (Delete of a VM this host
//     runs, or the clean-up after the VM migrated away), and then only
//     this driver's own directories go;
//   - an owner file from before identities holds a state-dir path: it is
//     this driver's only in a local pool of that state dir; elsewhere it
//     is treated as another host's (never deleted, adopted by a
//     migration like any other host's).

// ownerFile is the owner record in every VM directory of a pool.
const ownerFile = ".vpool-owner"

// hostIDFile keeps the host id a driver made up when Config.HostID is
// empty.
const hostIDFile = "host-id"

var hostIDRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// owner is the owner record of a VM's directory in a pool.
type owner struct {
	Host  string `json:"host"`
	VM    string `json:"vm"`
	Epoch int64  `json:"epoch"`
	// legacy is the state-dir path an older driver wrote instead.
	legacy string
}

func (o owner) String() string {
	if o.legacy != "" {
		return "a driver of an older version (" + o.legacy + ")"
	}
	return fmt.Sprintf("host %s (VM %s, epoch %d)", o.Host, o.VM, o.Epoch)
}

// readOwner reads dir's owner record; ok is false when there is none.
func readOwner(dir string) (o owner, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(dir, ownerFile))
	if errors.Is(err, os.ErrNotExist) {
		return owner{}, false, nil
	}
	if err != nil {
		return owner{}, false, fmt.Errorf("qemu: owner of %s: %w", dir, err)
	}
	s := strings.TrimSpace(string(b))
	if !strings.HasPrefix(s, "{") {
		return owner{legacy: s}, true, nil
	}
	if err := json.Unmarshal([]byte(s), &o); err != nil || o.Host == "" {
		return owner{}, true, fmt.Errorf("qemu: owner record of %s is corrupt", dir)
	}
	return o, true, nil
}

// writeOwner writes dir's owner record (atomically).
func writeOwner(dir string, o owner) error {
	b, err := json.Marshal(o)
	if err != nil {
		return fmt.Errorf("qemu: encoding owner: %w", err)
	}
	return writeFileAtomic(filepath.Join(dir, ownerFile), append(b, '\n'), 0o600)
}

// localPool reports whether the pool at dir lies inside the state dir,
// where no other host can see it.
func (d *Driver) localPool(dir string) bool {
	rel, err := filepath.Rel(d.cfg.StateDir, dir)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../") && !filepath.IsAbs(rel)
}

// mine reports whether o names this driver as the owner of vm's
// directory in a pool that is local or not.
func (d *Driver) mine(o owner, vm string, local bool) bool {
	if o.legacy != "" {
		return local && o.legacy == d.cfg.StateDir
	}
	return o.Host == d.hostID && o.VM == vm
}

// ownsDir reports whether vm's disk directory dir (in a pool directory)
// is this driver's: no owner record, or one naming this host and vm.
func (d *Driver) ownsDir(dir, vm string) bool {
	o, ok, err := readOwner(dir)
	if err != nil {
		return false
	}
	return !ok || d.mine(o, vm, d.localPool(filepath.Dir(dir)))
}

// resolveHostID sets d.hostID: Config.HostID, else the id kept in the
// state dir (made up on first use).
func (d *Driver) resolveHostID() error {
	id := d.cfg.HostID
	if id == "" {
		path := filepath.Join(d.cfg.StateDir, hostIDFile)
		b, err := os.ReadFile(path)
		switch {
		case err == nil:
			id = strings.TrimSpace(string(b))
		case errors.Is(err, os.ErrNotExist):
			r := make([]byte, 8)
			rand.Read(r)
			id = "host-" + hex.EncodeToString(r)
			if err := writeFileAtomic(path, []byte(id+"\n"), 0o600); err != nil {
				return err
			}
		default:
			return fmt.Errorf("qemu: host id: %w", err)
		}
	}
	if !hostIDRe.MatchString(id) {
		return fmt.Errorf("qemu: host id %q: use letters, digits, '.', '_' and '-'", id)
	}
	d.hostID = id
	return nil
}

// HostID returns the identity this driver records as the owner of its
// disk directories.
func (d *Driver) HostID() string { return d.hostID }
