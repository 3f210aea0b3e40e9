package qemu

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Per-VM users. Every QEMU runs as a uid and gid of its own, taken from a
// configured range (Config.VMUIDBase, VMUIDCount) when the VM is created
// on this host (Create, an incoming migration, an adoption) and given back
// when it is deleted. The VM's files are owned by it (vmuser.go); two VMs
// on a host never share one, so one VM's QEMU cannot open another's files.
//
// The range is host-wide: several drivers (agents) on one machine share
// it through a registry directory (Config.VMUIDRegistry) holding one claim
// file per uid in use, named by the uid, naming the state dir and VM that
// hold it. Claims are made under a flock of the registry, so two drivers
// never take the same uid. A claim is stale, and its uid free again, when
// the VM it names is gone (no VM directory under its state dir) or its
// record names another uid; a uid any live process runs as is never
// handed out, claim or not (a QEMU whose claim was lost with /run).

// ErrUIDRangeExhausted is returned when every uid of the range is in use.
var ErrUIDRangeExhausted = errors.New("qemu: the per-VM uid range is exhausted")

// vmUser is the uid and gid a VM's QEMU runs as (the gid equals the uid).
type vmUser struct {
	UID uint32 `json:"uid"`
	GID uint32 `json:"gid"`
}

// uidClaim is the content of a claim file.
type uidClaim struct {
	StateDir string `json:"stateDir"`
	VM       string `json:"vm"`
}

// uidAllocator hands out the uids of one range through a registry.
type uidAllocator struct {
	dir         string // the registry
	base, count uint32
	stateDir    string // the claimant's state dir
	// liveUIDs returns the real uids of the host's processes (procUIDs;
	// tests inject theirs).
	liveUIDs func() map[uint32]bool
}

func newUIDAllocator(dir string, base, count uint32, stateDir string) (*uidAllocator, error) {
	if base == 0 || count == 0 || uint64(base)+uint64(count) > 1<<32-1 {
		return nil, fmt.Errorf("qemu: per-VM uid range %d+%d: want a base above 0 and a count that ends below 2^32-1", base, count)
	}
	// The parents as usual (0755: /run/vpool holds other services'
	// directories, such as dnsmasq's, that must stay searchable), the
	// registry itself root's only.
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, fmt.Errorf("qemu: uid registry: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("qemu: uid registry: %w", err)
	}
	return &uidAllocator{dir: dir, base: base, count: count, stateDir: stateDir, liveUIDs: procUIDs}, nil
}

// locked runs fn under the registry's flock.
func (a *uidAllocator) locked(fn func() error) error {
	f, err := os.OpenFile(filepath.Join(a.dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("qemu: uid registry: %w", err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("qemu: uid registry: %w", err)
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return fn()
}

// allocate claims a free uid of the range for vm.
func (a *uidAllocator) allocate(vm string) (vmUser, error) {
	var u vmUser
	err := a.locked(func() error {
		live := a.liveUIDs()
		for i := uint32(0); i < a.count; i++ {
			uid := a.base + i
			if live[uid] {
				continue
			}
			if c, ok := a.readClaim(uid); ok && !a.stale(c, uid) {
				continue
			}
			if err := a.writeClaim(uid, vm); err != nil {
				return err
			}
			u = vmUser{UID: uid, GID: uid}
			return nil
		}
		return fmt.Errorf("%w: all %d uids from %d are held by VMs or processes; widen the range (--vm-uid-range) or delete VMs", ErrUIDRangeExhausted, a.count, a.base)
	})
	return u, err
}

// reclaim keeps u for vm after a restart: it rewrites the claim when it is
// missing or stale and reports false when another VM holds u now.
func (a *uidAllocator) reclaim(vm string, u vmUser) (bool, error) {
	if !a.inRange(u.UID) {
		return false, nil
	}
	ok := false
	err := a.locked(func() error {
		c, found := a.readClaim(u.UID)
		if found && c == (uidClaim{StateDir: a.stateDir, VM: vm}) {
			ok = true
			return nil
		}
		if found && !a.stale(c, u.UID) {
			return nil
		}
		ok = true
		return a.writeClaim(u.UID, vm)
	})
	return ok, err
}

// release gives u back when vm holds its claim.
func (a *uidAllocator) release(vm string, u vmUser) error {
	return a.locked(func() error {
		if c, ok := a.readClaim(u.UID); ok && c == (uidClaim{StateDir: a.stateDir, VM: vm}) {
			if err := os.Remove(a.claimPath(u.UID)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("qemu: uid registry: %w", err)
			}
		}
		return nil
	})
}

func (a *uidAllocator) inRange(uid uint32) bool { return uid >= a.base && uid-a.base < a.count }

func (a *uidAllocator) claimPath(uid uint32) string {
	return filepath.Join(a.dir, strconv.FormatUint(uint64(uid), 10))
}

func (a *uidAllocator) readClaim(uid uint32) (uidClaim, bool) {
	b, err := os.ReadFile(a.claimPath(uid))
	if err != nil {
		return uidClaim{}, false
	}
	var c uidClaim
	if json.Unmarshal(b, &c) != nil {
		return uidClaim{}, false // torn or foreign: treated as free
	}
	return c, true
}

func (a *uidAllocator) writeClaim(uid uint32, vm string) error {
	b, _ := json.Marshal(uidClaim{StateDir: a.stateDir, VM: vm})
	return writeFileAtomic(a.claimPath(uid), b, 0o600)
}

// stale reports whether claim c of uid no longer holds: its VM's
// directory is gone, or its record names another uid. A VM being created
// (a directory, no record yet) holds its claim.
func (a *uidAllocator) stale(c uidClaim, uid uint32) bool {
	if c.StateDir == "" || validID(c.VM) != nil {
		return true
	}
	dir := filepath.Join(c.StateDir, "vms", c.VM)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return true
	}
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return false
	}
	var r struct {
		User *vmUser `json:"user"`
	}
	if json.Unmarshal(b, &r) != nil || r.User == nil {
		return false
	}
	return r.User.UID != uid
}

// procUIDs returns the real uids of every process on the host.
func procUIDs() map[uint32]bool {
	out := map[uint32]bool{}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		if uid, ok := procUID(e.Name()); ok {
			out[uid] = true
		}
	}
	return out
}

// procUID reads the real uid of process pid from /proc/<pid>/status.
func procUID(pid string) (uint32, bool) {
	f, err := os.Open("/proc/" + pid + "/status")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "Uid:"); ok {
			fs := strings.Fields(rest)
			if len(fs) == 0 {
				return 0, false
			}
			n, err := strconv.ParseUint(fs[0], 10, 32)
			return uint32(n), err == nil
		}
	}
	return 0, false
}
