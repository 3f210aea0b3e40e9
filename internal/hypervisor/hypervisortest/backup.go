package hypervisortest

import (
	"bytes"
	"errors"

	"github.com/vpool/vpool/internal/hypervisor"
)

// FeatureBackup is hypervisor.Backupper.
const FeatureBackup Feature = "backup"

// writeDisk has the guest of a running VM write length bytes of pattern
// at off on disk (Harness.WriteDisk).
func (e *env) writeDisk(d hypervisor.Driver, id, disk string, off, length int64, pattern byte) {
	e.t.Helper()
	if e.h.WriteDisk == nil {
		e.t.Fatal("hypervisortest: the backup cases need Harness.WriteDisk")
	}
	e.h.WriteDisk(e.t, d, id, disk, off, length, pattern)
}

func (e *env) backupper(d hypervisor.Driver) hypervisor.Backupper {
	e.t.Helper()
	b, ok := d.(hypervisor.Backupper)
	if !ok {
		e.skipUnsupported(FeatureBackup, hypervisor.ErrUnsupported)
	}
	if e.h.lacks(FeatureBackup) {
		e.t.Fatalf("the harness says %s is unsupported but the driver implements it", FeatureBackup)
	}
	return b
}

type written struct {
	off, n int64
	pat    byte
}

// checkSession checks a session's extents against what was written and
// that reading them gives the written bytes.
func (e *env) checkSession(s hypervisor.BackupSession, incremental bool, want []written, slack int64) {
	e.t.Helper()
	ds := s.Disks()
	if len(ds) != 1 || ds[0].Name != "root" || ds[0].Incremental != incremental {
		e.t.Fatalf("session disks %+v, want root incremental=%v", ds, incremental)
	}
	exts, err := s.Extents(e.ctx, "root")
	if err != nil {
		e.t.Fatalf("Extents: %v", err)
	}
	var listed, need int64
	for _, x := range exts {
		if !x.Zero {
			listed += x.Length
		}
	}
	for _, w := range want {
		need += w.n
		if !covered(exts, w.off, w.n) {
			e.t.Fatalf("extents %+v do not cover the write at %d+%d", exts, w.off, w.n)
		}
		buf := make([]byte, w.n)
		if err := s.ReadAt(e.ctx, "root", buf, w.off); err != nil {
			e.t.Fatalf("ReadAt: %v", err)
		}
		if !bytes.Equal(buf, bytes.Repeat([]byte{w.pat}, int(w.n))) {
			e.t.Fatalf("read at %d does not hold pattern %#x", w.off, w.pat)
		}
	}
	if listed > need+slack {
		e.t.Fatalf("extents list %d bytes for %d written (slack %d): %+v", listed, need, slack, exts)
	}
}

func covered(exts []hypervisor.Extent, off, n int64) bool {
	for off < off+n && n > 0 {
		hit := false
		for _, x := range exts {
			if !x.Zero && x.Offset <= off && off < x.Offset+x.Length {
				adv := min(x.Offset+x.Length, off+n) - off
				off, n, hit = off+adv, n-adv, true
				break
			}
		}
		if !hit {
			return false
		}
	}
	return true
}

func (e *env) open(b hypervisor.Backupper, id, cp, since string) hypervisor.BackupSession {
	e.t.Helper()
	s, err := b.OpenBackup(e.ctx, id, hypervisor.BackupRequest{Checkpoint: cp, Since: since})
	if err != nil {
		e.t.Fatalf("OpenBackup(%s, since %q): %v", cp, since, err)
	}
	return s
}

func (e *env) closeSession(s hypervisor.BackupSession, keep bool) {
	e.t.Helper()
	if err := s.Close(e.ctx, keep); err != nil {
		e.t.Fatalf("Close(keep=%v): %v", keep, err)
	}
}

// testBackup: a full session lists what was written and reads it as of
// its point while the guest keeps writing; the next session with Since
// lists only the changes; a session closed without keeping folds its
// changes back; tracking survives a restart and works on a stopped VM;
// a restore writes a stopped VM's disks; a running VM refuses a restore.
func testBackup(e *env) {
	dp := e.driver()
	d := *dp
	b := e.backupper(d)
	const slack = 256 << 10 // guest metadata writes, cluster rounding
	cfg := e.running(d, "backup")
	a := written{1 << 20, 128 << 10, 0x11}
	e.writeDisk(d, cfg.ID, "root", a.off, a.n, a.pat)
	s := e.open(b, cfg.ID, "b1", "")
	e.checkSession(s, false, []written{a}, slack)
	// The guest overwrites a while the session is open: the session
	// still reads the old bytes (a backup is one point in time).
	c := written{a.off, 64 << 10, 0x33}
	e.writeDisk(d, cfg.ID, "root", c.off, c.n, c.pat)
	e.checkSession(s, false, []written{a}, slack)
	e.closeSession(s, true)

	s = e.open(b, cfg.ID, "b2", "b1")
	e.checkSession(s, true, []written{c}, slack)
	e.closeSession(s, false) // the backup failed: b1 stays the base

	dw := written{9 << 20, 64 << 10, 0x44}
	e.writeDisk(d, cfg.ID, "root", dw.off, dw.n, dw.pat)
	s = e.open(b, cfg.ID, "b3", "b1")
	e.checkSession(s, true, []written{c, dw}, slack)
	e.closeSession(s, true)

	// A second session of the same VM waits for the first to close.
	s = e.open(b, cfg.ID, "b4", "b3")
	if _, err := b.OpenBackup(e.ctx, cfg.ID, hypervisor.BackupRequest{Checkpoint: "b5", Since: "b3"}); !errors.Is(err, hypervisor.ErrBadState) {
		e.t.Fatalf("a second session: %v, want ErrBadState", err)
	}
	e.checkSession(s, true, nil, slack)
	e.closeSession(s, true)

	// Tracking survives a restart.
	if err := d.Stop(e.ctx, cfg.ID, e.h.StopTimeout); err != nil {
		e.t.Fatalf("Stop: %v", err)
	}
	if err := d.Start(e.ctx, cfg.ID); err != nil {
		e.t.Fatalf("Start: %v", err)
	}
	e.h.WaitReady(e.t, d, cfg.ID)
	f := written{20 << 20, 192 << 10, 0x55}
	e.writeDisk(d, cfg.ID, "root", f.off, f.n, f.pat)
	s = e.open(b, cfg.ID, "b6", "b4")
	e.checkSession(s, true, []written{f}, slack)
	e.closeSession(s, true)

	// A stopped VM backs up too.
	if err := d.Stop(e.ctx, cfg.ID, e.h.StopTimeout); err != nil {
		e.t.Fatalf("Stop: %v", err)
	}
	s = e.open(b, cfg.ID, "b7", "b6")
	e.checkSession(s, true, nil, slack)
	e.closeSession(s, true)
	all := []written{{a.off + c.n, a.n - c.n, a.pat}, c, dw, f}
	s = e.open(b, cfg.ID, "b8", "")
	e.checkSession(s, false, all, slack)
	image := e.readAll(s)
	e.closeSession(s, true)

	// Restore into another (stopped) VM; a running one refuses.
	if err := d.Start(e.ctx, cfg.ID); err != nil {
		e.t.Fatalf("Start: %v", err)
	}
	if _, err := b.OpenRestore(e.ctx, cfg.ID); !errors.Is(err, hypervisor.ErrBadState) {
		e.t.Fatalf("OpenRestore of a running VM: %v, want ErrBadState", err)
	}
	dst := e.created(d, "backup-restored")
	rs, err := b.OpenRestore(e.ctx, dst.ID)
	if err != nil {
		e.t.Fatalf("OpenRestore: %v", err)
	}
	for _, x := range image {
		if err := rs.WriteAt(e.ctx, "root", x.data, x.off); err != nil {
			e.t.Fatalf("WriteAt: %v", err)
		}
	}
	if err := rs.WriteZeroes(e.ctx, "root", 40<<20, 1<<20); err != nil {
		e.t.Fatalf("WriteZeroes: %v", err)
	}
	if err := rs.Close(e.ctx); err != nil {
		e.t.Fatalf("restore Close: %v", err)
	}
	s = e.open(b, dst.ID, "r1", "")
	e.checkSession(s, false, all, slack)
	e.closeSession(s, true)

	// An agent that dies with a session open: the next session (of a
	// new driver) still lists every change since the last kept one.
	if e.h.Reopen == nil {
		return
	}
	e.h.WaitReady(e.t, d, cfg.ID)
	s = e.open(b, cfg.ID, "b9", "b8")
	g := written{30 << 20, 64 << 10, 0x66}
	e.writeDisk(d, cfg.ID, "root", g.off, g.n, g.pat)
	_ = s // never closed: the agent died
	e.reopen(dp)
	d = *dp
	b = e.backupper(d)
	s = e.open(b, cfg.ID, "b10", "b8")
	e.checkSession(s, true, []written{g}, slack)
	e.closeSession(s, true)
}

type piece struct {
	off  int64
	data []byte
}

// readAll reads every extent of a session's root disk.
func (e *env) readAll(s hypervisor.BackupSession) []piece {
	e.t.Helper()
	exts, err := s.Extents(e.ctx, "root")
	if err != nil {
		e.t.Fatalf("Extents: %v", err)
	}
	var out []piece
	for _, x := range exts {
		if x.Zero {
			continue
		}
		buf := make([]byte, x.Length)
		if err := s.ReadAt(e.ctx, "root", buf, x.Offset); err != nil {
			e.t.Fatalf("ReadAt: %v", err)
		}
		out = append(out, piece{x.Offset, buf})
	}
	return out
}
