package qemu

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/qmp"
)

// TestQEMURunsAsItsOwnUser boots two VMs and checks, through the kernel's
// view, that each QEMU runs as a non-root uid of its own, and, through
// each VM's own QMP monitor (what a compromised QEMU or an attacker on
// its monitor commands), that QEMU can open neither a root-only host file
// nor the other VM's disk (VP-11, docs/security.md).
func TestQEMURunsAsItsOwnUser(t *testing.T) {
	g := heavy(t)
	if os.Geteuid() != 0 {
		t.Skip("per-VM users need root (the driver runs QEMU as the agent's user otherwise)")
	}
	cfg := testConfig(t, shortTempDir(t))
	d := newDriver(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ids := []string{"test.usera", "test.userb"}
	for _, name := range []string{"usera", "userb"} {
		vc := vmConfig(g, name)
		mustDo(t, "Create "+name, d.Create(ctx, vc))
		mustDo(t, "Start "+name, d.Start(ctx, vc.ID))
	}
	uids := map[uint32]string{}
	procs := map[string]*process{}
	for _, id := range ids {
		v, err := d.get(id)
		mustDo(t, "get", err)
		v.mu.Lock()
		p, rec := v.proc, v.rec
		v.mu.Unlock()
		uid, ok := procUID(strconv.Itoa(p.pid))
		if !ok {
			t.Fatalf("%s: no uid in /proc/%d/status", id, p.pid)
		}
		if uid == 0 {
			t.Fatalf("%s: QEMU (pid %d) runs as root", id, p.pid)
		}
		if other, ok := uids[uid]; ok {
			t.Fatalf("%s and %s both run as uid %d", id, other, uid)
		}
		uids[uid] = id
		if rec.User == nil || rec.User.UID != uid {
			t.Fatalf("%s: record says %+v, /proc says uid %d", id, rec.User, uid)
		}
		// No supplementary group but the VMs' shared device group.
		groups := procField(t, p.pid, "Groups:")
		if want := strconv.FormatUint(uint64(d.cfg.VMUIDBase), 10); d.accel == "tcg" && groups != want {
			t.Errorf("%s: QEMU has supplementary groups %q, want only %s", id, groups, want)
		}
		if uid == d.cfg.VMUIDBase {
			t.Errorf("%s runs as the VMs' shared group id %d", id, uid)
		}
		// Its disk is its own, 0600, in a directory it cannot write.
		checkOwner(t, rec.Disks[0].Layers[0].File, uid, 0o600)
		checkOwner(t, rec.Disks[0].Dir, 0, 0o710)
		procs[id] = p
	}

	// In the VM's own disk directory, which its user may search (and its
	// mount namespace shows): only the file's own mode stands in the way.
	va0, _ := d.get(ids[0])
	secret := filepath.Join(va0.rec.Disks[0].Dir, "root-only")
	mustDo(t, "write", os.WriteFile(secret, []byte("host secret"), 0o600))
	va, _ := d.get(ids[1])
	otherDisk := va.rec.Disks[0].Layers[0].File
	for _, tc := range []struct{ name, file string }{
		{"a root-only host file", secret},
		{"/etc/shadow", "/etc/shadow"},
		{"the other VM's disk", otherDisk},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := procs[ids[0]].qmp.BlockdevAdd(ctx, qmp.Args{"driver": "file", "node-name": "steal", "filename": tc.file, "read-only": true})
			if err == nil {
				procs[ids[0]].qmp.BlockdevDel(ctx, "steal")
				t.Fatalf("QEMU of %s opened %s", ids[0], tc.file)
			}
			if !strings.Contains(err.Error(), "Permission denied") {
				t.Fatalf("blockdev-add %s: %v, want Permission denied", tc.file, err)
			}
		})
	}

	// The agent restarts: the running QEMUs keep their uids, the new
	// driver knows them (record and /proc agree), and a new VM gets
	// another one.
	d.Close()
	d2 := newDriver(t, cfg)
	for uid, id := range uids {
		v, err := d2.get(id)
		mustDo(t, "get after restart", err)
		if v.rec.User == nil || v.rec.User.UID != uid {
			t.Fatalf("%s after the restart: record says %+v, want uid %d", id, v.rec.User, uid)
		}
		if got, _ := procUID(strconv.Itoa(procs[id].pid)); got != uid {
			t.Fatalf("%s's QEMU runs as %d after the restart, want %d", id, got, uid)
		}
	}
	third := vmConfig(g, "userc")
	mustDo(t, "Create userc", d2.Create(ctx, third))
	v3, _ := d2.get(third.ID)
	if holder, taken := uids[v3.rec.User.UID]; taken {
		t.Fatalf("a VM created after the restart got uid %d, which %s holds", v3.rec.User.UID, holder)
	}
}

func procField(t *testing.T, pid int, key string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	mustDo(t, "read status", err)
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, key); ok {
			return strings.TrimSpace(rest)
		}
	}
	t.Fatalf("no %s in /proc/%d/status", key, pid)
	return ""
}

func checkOwner(t *testing.T, path string, uid uint32, mode os.FileMode) {
	t.Helper()
	var st syscall.Stat_t
	mustDo(t, "stat", syscall.Stat(path, &st))
	if st.Uid != uid || os.FileMode(st.Mode).Perm() != mode {
		t.Errorf("%s: owner %d mode %o, want owner %d mode %o", filepath.Base(path), st.Uid, os.FileMode(st.Mode).Perm(), uid, mode)
	}
}
