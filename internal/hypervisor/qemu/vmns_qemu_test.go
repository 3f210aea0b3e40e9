package qemu

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/qmp"
)

// TestQEMUSeesItsOwnView plays a tenant that escaped QEMU (VP-11,
// docs/security.md): through a VM's own QMP monitor (QEMU opening files
// for it) and from a shell started exactly as that VM's QEMU is (same
// uid, gid, groups and mount namespace: startAsVM), it tries what file
// modes alone allow every user of the host: another VM's seed, a key
// file of the agent left readable, a world-readable file in /tmp, the
// agent's and the other QEMU's /proc entries, and a file another VM
// drops in /tmp. Each must be out of reach, while the VM's own files
// stay reachable.
func TestQEMUSeesItsOwnView(t *testing.T) {
	g := heavy(t)
	if os.Geteuid() != 0 {
		t.Skip("per-VM users and their namespaces need root")
	}
	// The agent's state dir holds the driver's (as vpool agent lays it
	// out) and a key whose mode went wrong: only the namespace hides it.
	agentDir := shortTempDir(t)
	agentKey := filepath.Join(agentDir, "agent.key")
	mustDo(t, "write key", os.WriteFile(agentKey, []byte("agent private key"), 0o644))
	cfg := testConfig(t, filepath.Join(agentDir, "qemu"))
	cfg.HideFromVMs = []string{agentDir}
	d := newDriver(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	tmpFile, err := os.CreateTemp("", "vpool-ns-world-readable-*")
	mustDo(t, "temp file", err)
	tmpFile.WriteString("left in /tmp by another program")
	tmpFile.Close()
	os.Chmod(tmpFile.Name(), 0o644)
	t.Cleanup(func() { os.Remove(tmpFile.Name()) })

	// An image copy the driver made for another VM (world-readable, as
	// shareable makes them).
	otherImage := filepath.Join(d.imagesDir(), "other-project-image.qcow2")
	mustDo(t, "mkdir", os.MkdirAll(d.imagesDir(), 0o711))
	mustDo(t, "write image", os.WriteFile(otherImage, make([]byte, 512), 0o644))

	a, b := vmConfig(g, "nsa"), vmConfig(g, "nsb")
	doc := "#cloud-config\npassword: secret-of-b\n"
	b.Spec.CloudInit = &model.CloudInit{Hostname: "b", UserData: doc, UserDataSize: len(doc), UserDataDigest: "hmac-sha256:00"}
	for _, vc := range []string{a.ID, b.ID} {
		c := a
		if vc == b.ID {
			c = b
		}
		mustDo(t, "Create "+vc, d.Create(ctx, c))
		mustDo(t, "Start "+vc, d.Start(ctx, vc))
	}
	va, err := d.get(a.ID)
	mustDo(t, "get", err)
	vb, err := d.get(b.ID)
	mustDo(t, "get", err)
	pa, pb := va.proc, vb.proc
	seedB := filepath.Join(d.vmDir(b.ID), "seed.iso")
	if !fileExists(seedB) {
		t.Fatalf("no seed for %s", b.ID)
	}
	agentProc := fmt.Sprintf("/proc/%d/cmdline", os.Getpid())
	otherQEMU := fmt.Sprintf("/proc/%d/cmdline", pb.pid)

	// What QEMU opens for its monitor.
	for _, tc := range []struct{ name, file string }{
		{"another VM's seed", seedB},
		{"the agent's key", agentKey},
		{"a world-readable file in /tmp", tmpFile.Name()},
		{"the agent's command line", agentProc},
		{"the other QEMU's command line", otherQEMU},
		{"another VM's image copy", otherImage},
	} {
		t.Run("qmp/"+tc.name, func(t *testing.T) {
			err := pa.qmp.BlockdevAdd(ctx, qmp.Args{"driver": "file", "node-name": "steal", "filename": tc.file, "read-only": true})
			if err == nil {
				pa.qmp.BlockdevDel(ctx, "steal")
				t.Fatalf("QEMU of %s opened %s", a.ID, tc.file)
			}
			if !strings.Contains(err.Error(), "No such file") && !strings.Contains(err.Error(), "Permission denied") {
				t.Fatalf("blockdev-add %s: %v, want no such file or permission denied", tc.file, err)
			}
		})
	}
	// Its own files, and one made after the start (as a snapshot overlay
	// or a hot-plugged disk is), stay reachable.
	late := filepath.Join(va.rec.Disks[0].Dir, "late.raw")
	mustDo(t, "late file", os.WriteFile(late, make([]byte, 512), 0o600))
	mustDo(t, "give late file", d.giveLayer(va.rec, late))
	mustDo(t, "QEMU opens a file made after its start", pa.qmp.BlockdevAdd(ctx, qmp.Args{"driver": "file", "node-name": "late", "filename": late, "read-only": true}))
	pa.qmp.BlockdevDel(ctx, "late")

	// A shell started as VM a's QEMU, then as b's: a drops a file in
	// /tmp, b looks for it.
	drop := "/tmp/vpool-ns-channel"
	t.Cleanup(func() { os.Remove(drop) })
	shA := asVM(t, d, va.rec, fmt.Sprintf(`echo from-a > %s; ls /proc | grep -c '^[0-9]'; for f in %s %s %s %s %s %s; do cat $f >/dev/null 2>&1 && echo "READ $f"; done; ls /home/* /root 2>/dev/null | head -3`,
		drop, seedB, agentKey, tmpFile.Name(), agentProc, otherQEMU, otherImage))
	lines := strings.Split(strings.TrimSpace(shA), "\n")
	if n, err := strconv.Atoi(lines[0]); err != nil || n > 8 {
		t.Errorf("a VM's shell sees %s processes in /proc, want its own only", lines[0])
	}
	for _, l := range lines[1:] {
		t.Errorf("a VM's shell: %s", l)
	}
	if got := asVM(t, d, vb.rec, "cat "+drop+" 2>/dev/null; true"); strings.Contains(got, "from-a") {
		t.Errorf("VM b's shell reads what VM a wrote in /tmp")
	}
	// The host's /tmp is not theirs either.
	if fileExists(drop) {
		t.Errorf("a VM's write to /tmp reached the host's /tmp")
	}
	// A user namespace of its own (where the kernel lets any user make
	// one) gives the escape CAP_SYS_ADMIN there, but the view's mounts
	// came from a more privileged namespace: locked, they cannot be
	// unmounted to uncover what they hide, nor /proc mounted afresh.
	if _, err := exec.LookPath("unshare"); err == nil {
		undo := fmt.Sprintf(`unshare -Urm sh -c 'for m in /proc /tmp %s %s; do umount -l $m; done; mount -t proc proc /proc; cat %s %s %s %s' 2>/dev/null; true`,
			agentDir, d.cfg.StateDir, agentKey, tmpFile.Name(), agentProc, otherImage)
		if got := asVM(t, d, va.rec, undo); got != "" {
			t.Errorf("in a user namespace of its own, a VM's shell undoes its view: %q", tail(got, 120))
		}
	}
	if got := asVM(t, d, va.rec, "cat "+filepath.Join(d.vmDir(a.ID), "qemu.pid")); strings.TrimSpace(got) != strconv.Itoa(pa.pid) {
		t.Errorf("a VM's shell reads its own pid file as %q, want %d", got, pa.pid)
	}
}

// asVM runs script in /bin/sh started as rec's QEMU is (startAsVM) and
// returns its output.
func asVM(t *testing.T, d *Driver, rec *record, script string) string {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.Stdout, cmd.Stderr = &out, &out
	mustDo(t, "start a shell as the VM", d.startAsVM(cmd, rec, Machine{}, "/usr/bin/qemu-system-x86_64"))
	if err := cmd.Wait(); err != nil {
		t.Fatalf("shell as %s: %v: %s", rec.Config.ID, err, out.String())
	}
	return out.String()
}
