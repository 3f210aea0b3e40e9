package devenv_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/agent"
	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/controller"
	"github.com/vpool/vpool/internal/devenv"
	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/hypervisor/qemu"
	"github.com/vpool/vpool/internal/hypervisor/qemu/guest"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/server"
	"github.com/vpool/vpool/internal/store/memstore"
	"github.com/vpool/vpool/internal/testenv"
)

// qemuHost runs a QEMU driver and its agent in a cluster; it returns the
// driver and its state directory.
func qemuHost(t *testing.T, cl *cluster, name string, g guest.Guest) (*qemu.Driver, string) {
	t.Helper()
	dir := t.TempDir()
	lg := failLogger(t)
	d, err := qemu.New(qemu.Config{StateDir: dir, Network: qemu.NetUser, NoCgroups: true, Logger: lg, HostID: name})
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Config{
		ServerURL: cl.srv.AgentURL(), JoinToken: cl.token, StateDir: filepath.Join(cl.dir, name), HostName: name,
		Driver: d, StatusInterval: 300 * time.Millisecond, PollWait: 5 * time.Second, StopTimeout: 10 * time.Second,
		ResolveImage: func(string) (*hypervisor.Image, error) { return g.Image(), nil },
		Logger:       lg,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); a.Run(ctx) }()
	t.Cleanup(func() {
		stop()
		<-done
		cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		infos, _ := d.List(cctx)
		for _, in := range infos {
			d.Delete(cctx, in.ID)
		}
		d.Close()
	})
	return d, dir
}

// activeLayer finds the qcow2 file of a VM's only disk layer.
func activeLayer(t *testing.T, stateDir, id string) string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(stateDir, "pools", "default", id, "root.*.qcow2"))
	if len(files) != 1 {
		t.Fatalf("layers of %s: %v", id, files)
	}
	return files[0]
}

// sameDisk compares two disk images byte for byte (qemu-img compare,
// which reads through open images with -U).
func sameDisk(t *testing.T, a, b string) {
	t.Helper()
	img := testenv.MustHaveTool(t, "qemu-img", "apt-get install qemu-utils")
	out, err := exec.Command(img, "compare", "-U", "-f", "qcow2", "-F", "qcow2", a, b).CombinedOutput()
	if err != nil {
		t.Fatalf("the disks differ: %v %s", err, out)
	}
}

// TestBackupQEMU: a real guest (TCG) writes known data between a full and
// an incremental backup through the API; the restore is compared byte for
// byte and booted; the repository is synced and a second in-process
// cluster (its own QEMU host) fails the project over from the copy; a
// QEMU killed during a backup leaves nothing listed, verify passes, and
// the next backup succeeds (full, saying why).
func TestBackupQEMU(t *testing.T) {
	g := guest.Require(t)
	// Cluster A's host runs the test guest with Debian's qemu-ga (the
	// freeze and the agent boot check end to end); cluster B's the
	// default one (the ready-marker boot check).
	gq := guest.RequireQGA(t)
	guest.AcquireSlot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	shared := t.TempDir()
	stA, stB := memstore.New(), memstore.New()
	t.Cleanup(func() { stA.Close(); stB.Close() })
	fast := controller.BackupConfig{Interval: 200 * time.Millisecond}
	a := startCluster(t, devenv.ServerConfig{Store: stA, BackupDirs: []string{shared}, Backup: fast}, 0)
	dA, dirA := qemuHost(t, a, "qa", gq)
	importTestGuest(t, a, gq)
	key := backupKey()
	p := api.DefaultProject
	for _, r := range []string{"main", "offsite"} {
		if _, err := a.c.CreateBackupRepo(ctx, api.BackupRepoCreateRequest{Name: r, Path: filepath.Join(shared, r), Key: key}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.c.CreateVM(ctx, p, api.VMCreateRequest{Name: "web1", Spec: model.VMSpec{VCPUs: 1, Memory: 256 * model.MiB,
		Image: "test-guest", Disks: []model.Disk{{Name: "root", Size: model.GiB}}}}); err != nil {
		t.Fatal(err)
	}
	a.waitPhase("web1", model.PhaseRunning)
	con := guestShell(t, ctx, dA, p+".web1")
	// Known data: "W1" lines over 8 MiB at 4 MiB, written by the guest
	// (typed on its console; short lines: see shell.run).
	con.do(`cd /dev`, `yes W1|head -c 8388608|dd of=vda bs=64k seek=64`, `sync`)
	backup := func(vm string) *model.Backup {
		t.Helper()
		b, err := a.c.CreateBackup(ctx, p, api.BackupCreateRequest{VM: vm, Repo: "main"})
		if err != nil {
			t.Fatal(err)
		}
		b, err = a.c.WaitBackup(ctx, p, b.Name, nil)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	b1 := backup("web1")
	if b1.Phase != model.BackupCompleted || b1.Kind != "full" || b1.Stats.ReadBytes < 8<<20 {
		t.Fatalf("full backup: %+v", b1)
	}
	con.do(`yes W2|head -c 2097152|dd of=vda bs=64k seek=1600`, `sync`)
	b2 := backup("web1")
	if b2.Phase != model.BackupCompleted || b2.Kind != "incremental" || b2.Stats.ReadBytes > 4<<20 {
		t.Fatalf("incremental backup after 2 MiB written: %+v", b2)
	}
	t.Logf("full: read %d bytes in %dms; incremental: read %d bytes for 2 MiB written", b1.Stats.ReadBytes, b1.Stats.DurationMs, b2.Stats.ReadBytes)
	// The agent asked for a freeze; qemu-ga answered and found nothing
	// freezable (the guest's only file systems are in memory): a
	// crash-consistent point that says so.
	for _, b := range []*model.Backup{b1, b2} {
		if b.Consistency != model.ConsistencyCrash || !strings.Contains(b.ConsistencyNote, "no file system to freeze") {
			t.Fatalf("backup %s consistency %q (%q), want crash with the agent's word", b.Name, b.Consistency, b.ConsistencyNote)
		}
	}
	con.close()
	if _, err := a.c.StopVM(ctx, p, "web1"); err != nil {
		t.Fatal(err)
	}
	a.waitPhase("web1", model.PhaseStopped)

	// Restore as a new VM, booted; byte for byte the source.
	rs, err := a.c.RestoreBackup(ctx, p, b2.Name, api.RestoreRequest{As: "web1-copy", BootCheck: true})
	if err != nil {
		t.Fatal(err)
	}
	if rs, err = a.c.WaitRestore(ctx, p, rs.Name, nil); err != nil || rs.Phase != model.RestoreCompleted {
		t.Fatalf("restore: %v %+v", err, rs)
	}
	t.Logf("restore: %d bytes in %dms, boot check %dms (by %s)", rs.BytesRestored, rs.RestoreMs, rs.BootMs, rs.BootCheckedBy)
	if rs.BootCheckedBy != model.BootCheckAgent {
		t.Fatalf("the restored VM's boot check went by %q, want the guest agent's answer", rs.BootCheckedBy)
	}
	sameDisk(t, activeLayer(t, dirA, p+".web1"), activeLayer(t, dirA, p+".web1-copy"))
	if err := a.c.DeleteVM(ctx, p, "web1-copy"); err != nil {
		t.Fatal(err)
	}

	// Sync, then fail over on cluster B from the copy.
	tk, err := a.c.CreateBackupTask(ctx, api.BackupTaskRequest{Kind: "sync", Repo: "main", Target: "offsite"})
	if err != nil {
		t.Fatal(err)
	}
	if tk, err = a.c.WaitBackupTask(ctx, tk.Name, nil); err != nil || tk.Phase != model.BackupCompleted {
		t.Fatalf("sync: %v %+v", err, tk)
	}
	b := startCluster(t, devenv.ServerConfig{Store: stB, BackupDirs: []string{shared}, Backup: fast}, 0)
	importTestGuest(t, b, g)
	_, dirB := qemuHost(t, b, "qb", g)
	if _, err := b.c.CreateBackupRepo(ctx, api.BackupRepoCreateRequest{Name: "site-a", Path: filepath.Join(shared, "offsite"), Key: key}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	fo, err := b.c.Failover(ctx, api.FailoverRequest{Project: p, Repo: "site-a", BootCheck: true})
	if err != nil || len(fo.Restores) != 1 {
		t.Fatalf("failover: %+v %v", fo, err)
	}
	if r, err := b.c.WaitRestore(ctx, p, fo.Restores[0].Name, nil); err != nil || r.Phase != model.RestoreCompleted || r.BootCheckedBy != model.BootCheckMarker {
		t.Fatalf("failover restore (the default guest: no agent, the ready marker): %v %+v", err, r)
	}
	t.Logf("failover of one VM (1 GiB disk) with boot check: %s", time.Since(start))
	sameDisk(t, activeLayer(t, dirA, p+".web1"), activeLayer(t, dirB, p+".web1"))

	// QEMU killed during a backup.
	if _, err := a.c.StartVM(ctx, p, "web1"); err != nil {
		t.Fatal(err)
	}
	a.waitPhase("web1", model.PhaseRunning)
	con = guestShell(t, ctx, dA, p+".web1")
	con.do(`cd /dev`, `dd if=urandom of=vda bs=1M seek=200 count=48`, `sync`)
	con.close()
	killed := killDuringBackup(t, ctx, a, dA, p, "web1")
	if ids := catalogIDs(t, a, "main"); killed.Phase != model.BackupCompleted && containsID(ids, killed.Name) {
		t.Fatalf("the killed backup %s is listed in the repository", killed.Name)
	}
	if _, err := a.c.StartVM(ctx, p, "web1"); err != nil {
		t.Fatal(err)
	}
	a.waitPhase("web1", model.PhaseRunning)
	next := backup("web1")
	if next.Phase != model.BackupCompleted {
		t.Fatalf("the backup after the kill: %+v", next)
	}
	t.Logf("after the kill: %s backup (%s)", next.Kind, next.Reason)
	tk, _ = a.c.CreateBackupTask(ctx, api.BackupTaskRequest{Kind: "verify", Repo: "main"})
	if tk, err = a.c.WaitBackupTask(ctx, tk.Name, nil); err != nil || tk.Phase != model.BackupCompleted {
		t.Fatalf("verify after the kill: %v %+v", err, tk)
	}
}

// killDuringBackup starts a backup and SIGKILLs the VM's QEMU once the
// backup runs; the backup must fail (never complete).
func killDuringBackup(t *testing.T, ctx context.Context, cl *cluster, d *qemu.Driver, project, vm string) *model.Backup {
	t.Helper()
	// Paced at 2 MiB/s, so that the backup still runs when the kill comes
	// on a busy machine (unpaced, its ~10 MiB took 0.4 s and once ended
	// before QEMU died).
	b, err := cl.c.CreateBackup(ctx, project, api.BackupCreateRequest{VM: vm, Repo: "main", Limits: &model.BackupLimits{RateMiBps: 2}})
	if err != nil {
		t.Fatal(err)
	}
	for {
		cur, err := cl.c.GetBackup(ctx, project, b.Name)
		if err != nil {
			t.Fatal(err)
		}
		if cur.Phase == model.BackupRunning {
			break
		}
		if cur.Phase.Final() {
			t.Fatalf("the backup ended before QEMU could be killed: %+v", cur)
		}
		time.Sleep(5 * time.Millisecond)
	}
	infos, _ := d.List(ctx)
	for _, in := range infos {
		if in.ID == project+"."+vm && in.Pid > 0 {
			syscall.Kill(in.Pid, syscall.SIGKILL)
		}
	}
	b, err = cl.c.WaitBackup(ctx, project, b.Name, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b.Phase != model.BackupFailed {
		t.Logf("note: the backup completed before QEMU died (%+v); the kill still tests the next backup", b.Stats)
	}
	return b
}

func catalogIDs(t *testing.T, cl *cluster, repoName string) []string {
	t.Helper()
	cat, err := cl.c.RepoCatalog(context.Background(), repoName)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range cat.Items {
		ids = append(ids, e.ID)
	}
	return ids
}

func containsID(ids []string, id string) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// shell is the guest's serial console, driven by typing commands and
// waiting for a marker line in the console log.
type shell struct {
	t   *testing.T
	ctx context.Context
	d   *qemu.Driver
	id  string
	c   io.ReadWriteCloser
	n   int // markers used
}

func guestShell(t *testing.T, ctx context.Context, d *qemu.Driver, id string) *shell {
	t.Helper()
	if _, err := guest.WaitFor(ctx, d.SerialLog(id), guest.ReadyMarker); err != nil {
		t.Fatal(err)
	}
	c, err := d.OpenConsole(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	// Drain what the console sends: a client that does not read stalls
	// QEMU's serial output, and with it the guest's tty.
	go io.Copy(io.Discard, c)
	s := &shell{t: t, ctx: ctx, d: d, id: id, c: c}
	s.run("echo SHELL-$((40+2))", "SHELL-42") // the shell is up and reading
	return s
}

func (s *shell) run(cmd, marker string) {
	s.t.Helper()
	if len(cmd) > 72 {
		s.t.Fatalf("command %q is longer than 72 characters: it would wrap on the guest's console", cmd)
	}
	// Type a few characters at a time and wait for the guest's echo
	// before the next: the emulated UART's receive FIFO is 16 bytes, and
	// a guest busy under TCG drops what overflows it.
	before, _ := os.ReadFile(s.d.SerialLog(s.id))
	in := []byte(cmd + "\n")
	typed := ""
	for len(in) > 0 {
		n := min(len(in), 4)
		if _, err := s.c.Write(in[:n]); err != nil {
			s.t.Fatal(err)
		}
		typed += strings.TrimSuffix(string(in[:n]), "\n")
		in = in[n:]
		for wait := time.Now().Add(10 * time.Second); time.Now().Before(wait); time.Sleep(20 * time.Millisecond) {
			b, _ := os.ReadFile(s.d.SerialLog(s.id))
			if len(b) >= len(before) && strings.Contains(strings.ReplaceAll(string(b[len(before):]), "\x1b[6n", ""), typed) {
				break
			}
		}
	}
	if marker == "" {
		return
	}
	deadline := time.Now().Add(4 * time.Minute)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(s.d.SerialLog(s.id))
		for _, l := range strings.Split(string(b), "\n") {
			if strings.TrimSpace(l) == marker {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	b, rerr := os.ReadFile(s.d.SerialLog(s.id))
	tail := string(b)
	if len(tail) > 2000 {
		tail = tail[len(tail)-2000:]
	}
	// An empty console (CI saw one) means the log went or began again:
	// say what the driver holds of the VM.
	infos, _ := s.d.List(s.ctx)
	var held *hypervisor.Info
	for i := range infos {
		if infos[i].ID == s.id {
			held = &infos[i]
		}
	}
	s.t.Fatalf("no %q from the guest after %q; serial log (read error %v, %d bytes), the VM on its host: %s; console:\n%s", marker, cmd, rerr, len(b), vmBrief(held), tail)
}

// do runs commands one by one, each followed by an echo of a fresh
// marker it waits for.
func (s *shell) do(cmds ...string) {
	s.t.Helper()
	for _, c := range cmds {
		s.n++
		// One line: typing while a command runs loses input.
		s.run(fmt.Sprintf("%s;echo M-$((%d+0))", c, s.n), fmt.Sprintf("M-%d", s.n))
	}
}

func (s *shell) close() { s.c.Close() }

// vmBrief is what a failure says of a VM on its host.
func vmBrief(in *hypervisor.Info) string {
	if in == nil {
		return "none: the driver does not list it"
	}
	return fmt.Sprintf("state %s (%s), pid %d, started %s", in.State, in.Reason, in.Pid, in.StartedAt.Format(time.RFC3339Nano))
}

// importTestGuest records the test guest's image on a cluster: the
// agents boot it whatever the record says (ResolveImage), but admission
// wants the record.
func importTestGuest(t *testing.T, cl *cluster, g guest.Guest) {
	t.Helper()
	if _, err := cl.srv.ImportLocalImage(context.Background(), api.ImageImportRequest{Name: "test-guest"},
		[]server.LocalFile{{Role: model.ImageKernel, Path: g.Kernel}}); err != nil {
		t.Fatal(err)
	}
}
