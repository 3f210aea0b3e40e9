package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/nbd"
	"github.com/vpool/vpool/internal/qmp"
)

// Backups read disks through QEMU's image fleecing, pulled over NBD
// (docs/backup.md):
//
//   - every disk's active node gets a persistent dirty bitmap named
//     vpool-<checkpoint>, 64 KiB granular, in the same transaction that
//     starts a copy-before-write job (blockdev-backup sync=none) into a
//     temporary "fleece" qcow2 whose backing is the active node: reading
//     the fleece node gives the disk as of the transaction while the
//     guest keeps writing;
//   - for an incremental backup the same transaction disables the
//     bitmap of the previous checkpoint, which then holds exactly the
//     changes between the two points;
//   - the fleece nodes are exported over NBD on a private unix socket
//     with the previous bitmap, and the agent reads only the extents it
//     marks (NBD block status, qemu:dirty-bitmap context), or everything
//     allocated (base:allocation) for a full backup.
//
// A stopped VM is read the same way through a helper QEMU (-machine none)
// that opens its disks. Persistent bitmaps are stored in the qcow2 of
// the active layer when QEMU closes it, so they survive restarts. A
// snapshot puts a new layer on top (the bitmap stays below): the next
// backup is full and says why; so does one after a migration (the
// target's disk is new), a restore, or a QEMU that died (its bitmaps are
// inconsistent and dropped).

const (
	checkpointPrefix  = "vpool-"
	bitmapGranularity = 64 << 10
)

var checkpointRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,55}$`)

var _ hypervisor.Backupper = (*Driver)(nil)

// bitmapInfo is one entry of a node's dirty-bitmaps.
type bitmapInfo struct {
	Name         string `json:"name"`
	Recording    bool   `json:"recording"`
	Persistent   bool   `json:"persistent"`
	Inconsistent bool   `json:"inconsistent"`
}

type nodeBitmaps struct {
	NodeName string       `json:"node-name"`
	Bitmaps  []bitmapInfo `json:"dirty-bitmaps"`
}

func queryBitmaps(ctx context.Context, p *process) (map[string][]bitmapInfo, error) {
	var nodes []nodeBitmaps
	if err := p.qmp.Execute(ctx, "query-named-block-nodes", qmp.Args{"flat": true}, &nodes); err != nil {
		return nil, err
	}
	out := map[string][]bitmapInfo{}
	for _, n := range nodes {
		out[n.NodeName] = n.Bitmaps
	}
	return out, nil
}

func (dr *diskRec) fleeceNode() string { return fmt.Sprintf("bkf%d", dr.Index) }
func (dr *diskRec) backupJob() string  { return fmt.Sprintf("bkj%d", dr.Index) }
func (dr *diskRec) exportID() string   { return fmt.Sprintf("bke%d", dr.Index) }
func (dr *diskRec) fleeceFile() string {
	return filepath.Join(dr.Dir, fmt.Sprintf(".backup-%s.fleece.qcow2", dr.Name))
}

// backupSession is one open OpenBackup or OpenRestore.
type backupSession struct {
	d      *Driver
	v      *vm
	id     string
	p      *process
	helper func() // stops the helper QEMU of a stopped VM; nil when live
	disks  []hypervisor.BackupDisk
	drs    map[string]diskRec
	nbd    map[string]*nbd.Client
	req    hypervisor.BackupRequest
	sock   string
	write  bool
	done   bool
	// consistency of the point (BackupRequest.Freeze; qga.go)
	consistency hypervisor.BackupConsistency
}

// Consistency implements hypervisor.BackupConsistencyReporter.
func (s *backupSession) Consistency() hypervisor.BackupConsistency { return s.consistency }

func (d *Driver) beginSession(id string) error {
	if _, busy := d.backups.LoadOrStore(id, true); busy {
		return fmt.Errorf("qemu: %s: a backup or restore of this VM is running: %w", id, hypervisor.ErrBadState)
	}
	return nil
}

// OpenBackup implements hypervisor.Backupper.
func (d *Driver) OpenBackup(ctx context.Context, id string, req hypervisor.BackupRequest) (_ hypervisor.BackupSession, err error) {
	defer d.public(&err, "backup", id)
	if !checkpointRe.MatchString(req.Checkpoint) || (req.Since != "" && !checkpointRe.MatchString(req.Since)) {
		return nil, fmt.Errorf("qemu: bad checkpoint name %q / %q", req.Checkpoint, req.Since)
	}
	v, err := d.lock(id)
	if err != nil {
		return nil, err
	}
	defer v.mu.Unlock()
	if err := d.beginSession(id); err != nil {
		return nil, err
	}
	s := &backupSession{d: d, v: v, id: id, req: req, drs: map[string]diskRec{}, nbd: map[string]*nbd.Client{}}
	rev := &reverter{}
	defer rev.fail()
	rev.add(func() { d.backups.Delete(id) })
	if err := s.attach(ctx, rev); err != nil {
		return nil, err
	}
	bitmaps, err := queryBitmaps(ctx, s.p)
	if err != nil {
		return nil, err
	}
	var repair, start []qmp.Action
	for _, dr := range v.rec.Disks {
		s.drs[dr.Name] = dr
		bd, fix := s.decide(dr, bitmaps)
		repair = append(repair, fix...)
		s.disks = append(s.disks, bd)
		if err := s.addFleece(ctx, dr, rev); err != nil {
			return nil, err
		}
		top := dr.node(dr.Active)
		if bd.Incremental {
			start = append(start, qmp.Action{Type: "block-dirty-bitmap-disable", Data: qmp.Args{"node": top, "name": checkpointPrefix + req.Since}})
		}
		start = append(start,
			qmp.Action{Type: "block-dirty-bitmap-add", Data: qmp.Args{"node": top, "name": checkpointPrefix + req.Checkpoint,
				"persistent": true, "granularity": bitmapGranularity}},
			qmp.Action{Type: "blockdev-backup", Data: qmp.Args{"device": top, "target": dr.fleeceNode(), "sync": "none",
				"job-id": dr.backupJob(), "auto-finalize": true, "auto-dismiss": true}})
	}
	if len(repair) > 0 {
		if err := s.p.qmp.Transaction(ctx, repair); err != nil {
			return nil, fmt.Errorf("qemu: repairing change tracking: %w", err)
		}
	}
	var thaw func()
	switch {
	case !req.Freeze:
	case s.helper != nil:
		s.consistency.Reason = "the VM is stopped: its disks are as it left them"
	default:
		s.consistency, thaw = d.freezeGuest(ctx, id)
	}
	err = s.p.qmp.Transaction(ctx, start)
	if thaw != nil {
		thaw() // always, and before anything else can fail
	}
	if err != nil {
		return nil, fmt.Errorf("qemu: starting the backup point: %w", err)
	}
	rev.add(func() { s.teardown(false) })
	if err := s.export(ctx); err != nil {
		return nil, err
	}
	rev.success()
	return s, nil
}

// attach finds the live QEMU, or starts a helper for a stopped VM, and
// clears what a session that never closed left in it.
func (s *backupSession) attach(ctx context.Context, rev *reverter) error {
	v := s.v
	if v.rec.Run != nil && v.rec.Run.Helper {
		return fmt.Errorf("qemu: %s is being migrated: %w", s.id, hypervisor.ErrBadState)
	}
	if v.proc != nil {
		s.p = v.proc
	} else {
		p, stop, err := s.d.diskHelper(ctx, v)
		if err != nil {
			return err
		}
		s.p, s.helper = p, stop
		rev.add(stop)
	}
	s.d.clearBackupLeftovers(ctx, s.p, v.rec)
	return nil
}

// decide says whether dr can be read incrementally, and which bitmap
// actions restore a sane state first: inconsistent bitmaps go; with a
// usable Since every other vpool bitmap is folded into it (a superset of
// the changes is always safe) and it records again; without, all go.
func (s *backupSession) decide(dr diskRec, bitmaps map[string][]bitmapInfo) (hypervisor.BackupDisk, []qmp.Action) {
	top := dr.node(dr.Active)
	bd := hypervisor.BackupDisk{Name: dr.Name, Size: dr.Size}
	since := checkpointPrefix + s.req.Since
	var fix []qmp.Action
	var others []string
	var target *bitmapInfo
	lost := false
	for _, b := range bitmaps[top] {
		if !strings.HasPrefix(b.Name, checkpointPrefix) {
			continue
		}
		switch {
		case b.Inconsistent:
			lost = lost || b.Name == since
			fix = append(fix, qmp.Action{Type: "block-dirty-bitmap-remove", Data: qmp.Args{"node": top, "name": b.Name}})
		case s.req.Since != "" && b.Name == since:
			target = &b
		default:
			others = append(others, b.Name)
		}
	}
	if target != nil && len(others) > 0 {
		fix = append(fix, qmp.Action{Type: "block-dirty-bitmap-merge", Data: qmp.Args{"node": top, "target": since, "bitmaps": others}})
	}
	if target != nil && !target.Recording {
		fix = append(fix, qmp.Action{Type: "block-dirty-bitmap-enable", Data: qmp.Args{"node": top, "name": since}})
	}
	for _, o := range others {
		fix = append(fix, qmp.Action{Type: "block-dirty-bitmap-remove", Data: qmp.Args{"node": top, "name": o}})
	}
	switch {
	case target != nil:
		bd.Incremental = true
	case s.req.Since == "":
	case lost:
		bd.Reason = "change tracking was lost: QEMU did not close the disk cleanly since the last backup"
	case belowTop(dr, bitmaps, since):
		bd.Reason = "a snapshot since the last backup moved the disk to a new layer"
	default:
		bd.Reason = "no change tracking since the last backup on this host (the disk was re-created, restored or migrated)"
	}
	return bd, fix
}

func belowTop(dr diskRec, bitmaps map[string][]bitmapInfo, name string) bool {
	for _, l := range dr.chain() {
		if l.ID == dr.Active {
			continue
		}
		for _, b := range bitmaps[dr.node(l.ID)] {
			if b.Name == name {
				return true
			}
		}
	}
	return false
}

// addFleece creates the temporary image and its nodes (backing: the
// active node). An encrypted disk's fleece is encrypted with its key.
func (s *backupSession) addFleece(ctx context.Context, dr diskRec, rev *reverter) error {
	file := dr.fleeceFile()
	os.Remove(file)
	var key []byte
	if dr.Encrypted {
		k, err := s.d.keys.VolumeKey(ctx, s.id, dr.Name, false)
		if err != nil {
			return err
		}
		key = k
	}
	if err := s.d.createLayer(ctx, file, dr.Size, "", "", key); err != nil {
		return err
	}
	rev.add(func() { os.Remove(file) })
	if err := s.d.giveLayer(s.v.rec, file); err != nil { // QMP opens it as the VM's user
		return err
	}
	l := Layer{Node: dr.fleeceNode(), File: file, Format: "qcow2"}
	if dr.Encrypted {
		l.Secret = dr.secretID()
	}
	for _, js := range []string{l.fileJSON(), l.formatJSON(dr.node(dr.Active), false)} {
		var a qmp.Args
		if err := json.Unmarshal([]byte(js), &a); err != nil {
			return err
		}
		if err := s.p.qmp.BlockdevAdd(ctx, a); err != nil {
			return fmt.Errorf("qemu: adding the backup's fleece node: %w", err)
		}
	}
	p := s.p
	rev.add(func() {
		ctx, cancel := s.d.cleanupCtx()
		defer cancel()
		p.qmp.BlockdevDel(ctx, l.Node)
		p.qmp.BlockdevDel(ctx, "f"+l.Node)
	})
	return nil
}

// export serves the session's nodes over NBD on a private socket and
// connects to them.
func (s *backupSession) export(ctx context.Context) error {
	s.sock = s.d.socketPath(s.id, "backup-nbd.sock")
	// Bound here (root, 0600) and handed over: QEMU, as the VM's user,
	// can create nothing in the VM directory (vmuser.go).
	ln, err := listenUnix(s.sock)
	if err != nil {
		return err
	}
	err = s.p.qmp.Getfd(ctx, nbdListenFD, ln)
	ln.Close() // QEMU holds its own copy
	if err != nil {
		return fmt.Errorf("qemu: nbd-server-start: %w", err)
	}
	if err := s.p.qmp.Execute(ctx, "nbd-server-start", qmp.Args{"addr": qmp.Args{"type": "fd", "data": qmp.Args{"str": nbdListenFD}}}, nil); err != nil {
		return fmt.Errorf("qemu: nbd-server-start: %w", err)
	}
	for _, bd := range s.disks {
		dr := s.drs[bd.Name]
		node := dr.fleeceNode()
		metas := []string{nbd.BaseAllocation}
		args := qmp.Args{"type": "nbd", "id": dr.exportID(), "node-name": node, "name": dr.deviceID(), "writable": s.write}
		if s.write {
			args["node-name"] = dr.node(dr.Active)
		}
		if bd.Incremental {
			args["bitmaps"] = []qmp.Args{{"node": dr.node(dr.Active), "name": checkpointPrefix + s.req.Since}}
			metas = append(metas, nbd.DirtyBitmap(checkpointPrefix+s.req.Since))
		}
		if err := s.p.qmp.Execute(ctx, "block-export-add", args, nil); err != nil {
			return fmt.Errorf("qemu: block-export-add: %w", err)
		}
		c, err := nbd.Dial(ctx, "unix", s.sock, nbd.Options{Export: dr.deviceID(), MetaContexts: metas})
		if err != nil {
			return err
		}
		s.nbd[bd.Name] = c
	}
	for i := range s.disks {
		s.disks[i].Size = s.nbd[s.disks[i].Name].Size()
	}
	return nil
}

// Disks implements hypervisor.BackupSession.
func (s *backupSession) Disks() []hypervisor.BackupDisk {
	return append([]hypervisor.BackupDisk(nil), s.disks...)
}

func (s *backupSession) client(disk string) (*nbd.Client, hypervisor.BackupDisk, error) {
	for _, bd := range s.disks {
		if bd.Name == disk {
			return s.nbd[disk], bd, nil
		}
	}
	return nil, hypervisor.BackupDisk{}, fmt.Errorf("qemu: %s has no disk %q", s.id, disk)
}

// Extents implements hypervisor.BackupSession.
func (s *backupSession) Extents(ctx context.Context, disk string) ([]hypervisor.Extent, error) {
	c, bd, err := s.client(disk)
	if err != nil {
		return nil, err
	}
	meta, want := nbd.BaseAllocation, func(f uint32) bool { return f&(nbd.StateHole|nbd.StateZero) == 0 }
	if bd.Incremental {
		meta, want = nbd.DirtyBitmap(checkpointPrefix+s.req.Since), func(f uint32) bool { return f&nbd.StateDirty != 0 }
	}
	var out []hypervisor.Extent
	err = c.Walk(ctx, meta, func(off int64, e nbd.Extent) error {
		if !want(e.Flags) {
			return nil
		}
		if n := len(out); n > 0 && out[n-1].Offset+out[n-1].Length == off {
			out[n-1].Length += int64(e.Length)
			return nil
		}
		out = append(out, hypervisor.Extent{Offset: off, Length: int64(e.Length)})
		return nil
	})
	return out, err
}

// ReadAt implements hypervisor.BackupSession.
func (s *backupSession) ReadAt(ctx context.Context, disk string, p []byte, off int64) error {
	c, _, err := s.client(disk)
	if err != nil {
		return err
	}
	for len(p) > 0 {
		n := min(len(p), nbd.MaxRequest)
		if err := c.ReadAt(ctx, p[:n], off); err != nil {
			return err
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

// Close implements hypervisor.BackupSession.
func (s *backupSession) Close(ctx context.Context, keep bool) error {
	if s.done {
		return nil
	}
	s.v.mu.Lock()
	defer s.v.mu.Unlock()
	return s.teardown(keep)
}

// teardown removes the session from QEMU and settles the bitmaps. It
// runs on its own bounded context: it is clean-up.
func (s *backupSession) teardown(keep bool) error {
	if s.done {
		return nil
	}
	s.done = true
	defer s.d.backups.Delete(s.id)
	ctx, cancel := s.d.cleanupCtx()
	defer cancel()
	for _, c := range s.nbd {
		c.Close()
	}
	var err error
	if !s.p.hasExited() {
		s.d.clearBackupLeftovers(ctx, s.p, s.v.rec)
		if acts := s.settle(keep); len(acts) > 0 {
			err = s.p.qmp.Transaction(ctx, acts)
		}
	}
	for _, dr := range s.drs {
		os.Remove(dr.fleeceFile())
	}
	os.Remove(s.sock)
	if s.helper != nil {
		s.helper()
	}
	if err != nil {
		return fmt.Errorf("qemu: settling change tracking of %s: %w", s.id, err)
	}
	return nil
}

// settle: kept → the new checkpoint is the base, the old one goes;
// dropped → the new one folds into the old one, which records again.
func (s *backupSession) settle(keep bool) []qmp.Action {
	if s.write {
		return nil
	}
	var acts []qmp.Action
	cp, since := checkpointPrefix+s.req.Checkpoint, checkpointPrefix+s.req.Since
	for _, bd := range s.disks {
		dr := s.drs[bd.Name]
		top := dr.node(dr.Active)
		switch {
		case keep && bd.Incremental:
			acts = append(acts, qmp.Action{Type: "block-dirty-bitmap-remove", Data: qmp.Args{"node": top, "name": since}})
		case keep:
		case bd.Incremental:
			acts = append(acts,
				qmp.Action{Type: "block-dirty-bitmap-merge", Data: qmp.Args{"node": top, "target": since, "bitmaps": []string{cp}}},
				qmp.Action{Type: "block-dirty-bitmap-enable", Data: qmp.Args{"node": top, "name": since}},
				qmp.Action{Type: "block-dirty-bitmap-remove", Data: qmp.Args{"node": top, "name": cp}})
		default:
			acts = append(acts, qmp.Action{Type: "block-dirty-bitmap-remove", Data: qmp.Args{"node": top, "name": cp}})
		}
	}
	return acts
}

// clearBackupLeftovers removes a session's exports, NBD server, jobs and
// fleece nodes from p (a session's own, or one an agent that died left);
// each step may find nothing.
func (d *Driver) clearBackupLeftovers(ctx context.Context, p *process, rec *record) {
	for _, dr := range rec.Disks {
		p.qmp.Execute(ctx, "block-export-del", qmp.Args{"id": dr.exportID(), "mode": "hard"}, nil)
	}
	p.qmp.Execute(ctx, "nbd-server-stop", nil, nil)
	jobs := map[string]bool{}
	for _, dr := range rec.Disks {
		if p.qmp.Execute(ctx, "block-job-cancel", qmp.Args{"device": dr.backupJob(), "force": true}, nil) == nil {
			jobs[dr.backupJob()] = true
		}
	}
	for deadline := time.Now().Add(d.cfg.QMPTimeout); len(jobs) > 0 && time.Now().Before(deadline); {
		js, err := p.qmp.QueryBlockJobs(ctx)
		if err != nil {
			break
		}
		left := map[string]bool{}
		for _, j := range js {
			if jobs[j.Device] {
				left[j.Device] = true
			}
		}
		jobs = left
		if len(jobs) > 0 {
			time.Sleep(20 * time.Millisecond)
		}
	}
	for _, dr := range rec.Disks {
		p.qmp.BlockdevDel(ctx, dr.fleeceNode())
		p.qmp.BlockdevDel(ctx, "f"+dr.fleeceNode())
	}
}

// OpenRestore implements hypervisor.Backupper: the stopped VM's disks
// are opened by a helper QEMU and exported writable; every vpool bitmap
// is dropped (the content changes wholesale).
func (d *Driver) OpenRestore(ctx context.Context, id string) (_ hypervisor.RestoreSession, err error) {
	defer d.public(&err, "restore", id)
	v, err := d.lock(id)
	if err != nil {
		return nil, err
	}
	defer v.mu.Unlock()
	if v.proc != nil {
		return nil, fmt.Errorf("qemu: %s runs; stop it before a restore: %w", id, hypervisor.ErrBadState)
	}
	if err := d.beginSession(id); err != nil {
		return nil, err
	}
	s := &backupSession{d: d, v: v, id: id, write: true, drs: map[string]diskRec{}, nbd: map[string]*nbd.Client{}}
	rev := &reverter{}
	defer rev.fail()
	rev.add(func() { d.backups.Delete(id) })
	if err := s.attach(ctx, rev); err != nil {
		return nil, err
	}
	bitmaps, err := queryBitmaps(ctx, s.p)
	if err != nil {
		return nil, err
	}
	var drop []qmp.Action
	for _, dr := range v.rec.Disks {
		s.drs[dr.Name] = dr
		s.disks = append(s.disks, hypervisor.BackupDisk{Name: dr.Name, Size: dr.Size})
		for _, b := range bitmaps[dr.node(dr.Active)] {
			if strings.HasPrefix(b.Name, checkpointPrefix) {
				drop = append(drop, qmp.Action{Type: "block-dirty-bitmap-remove", Data: qmp.Args{"node": dr.node(dr.Active), "name": b.Name}})
			}
		}
	}
	if len(drop) > 0 {
		if err := s.p.qmp.Transaction(ctx, drop); err != nil {
			return nil, fmt.Errorf("qemu: dropping change tracking: %w", err)
		}
	}
	rev.add(func() { s.teardown(false) })
	if err := s.export(ctx); err != nil {
		return nil, err
	}
	rev.success()
	return restoreSession{s}, nil
}

// WriteAt implements hypervisor.RestoreSession.
func (s *backupSession) WriteAt(ctx context.Context, disk string, p []byte, off int64) error {
	c, _, err := s.client(disk)
	if err != nil {
		return err
	}
	for len(p) > 0 {
		n := min(len(p), nbd.MaxRequest)
		if err := c.WriteAt(ctx, p[:n], off); err != nil {
			return err
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

// WriteZeroes implements hypervisor.RestoreSession.
func (s *backupSession) WriteZeroes(ctx context.Context, disk string, off, length int64) error {
	c, _, err := s.client(disk)
	if err != nil {
		return err
	}
	return c.WriteZeroes(ctx, off, length)
}

// restoreSession is a backupSession opened for writing.
type restoreSession struct{ *backupSession }

// Close implements hypervisor.RestoreSession: flush every disk, then
// tear down (the helper QEMU closes the images).
func (s restoreSession) Close(ctx context.Context) error {
	if s.done {
		return nil
	}
	var errs []error
	for _, c := range s.nbd {
		errs = append(errs, c.Flush(ctx))
	}
	s.v.mu.Lock()
	defer s.v.mu.Unlock()
	errs = append(errs, s.teardown(false))
	return errors.Join(errs...)
}
