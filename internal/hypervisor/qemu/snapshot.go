package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/qmp"
)

// Snapshots are external qcow2 overlays (see docs/qemu.md): taking one
// freezes every disk's active layer and puts a new empty layer on top
// (atomically across disks with a QMP transaction when running), so the
// snapshot is the frozen layer. Revert puts a fresh layer on the frozen
// one and (re)starts from it; delete merges a frozen layer into its only
// child with block-stream. No internal snapshots: they do not mix with
// the persistent dirty bitmaps that incremental backup will keep.

// Snapshot takes a crash-consistent disk snapshot of every disk; with
// memory (running VMs only) the device state is saved too, while the
// guest is paused, so a revert resumes the guest where it was.
func (d *Driver) Snapshot(ctx context.Context, id, name string, withMemory bool) (err error) {
	defer d.public(&err, "snapshot", id)
	if err := model.ValidName("snapshot", name); err != nil {
		return fmt.Errorf("qemu: snapshot %s: %w", id, err)
	}
	v, err := d.lock(id)
	if err != nil {
		return err
	}
	defer v.mu.Unlock()
	if findSnap(v.rec, name) >= 0 {
		return fmt.Errorf("qemu: snapshot %s/%s: %w", id, name, hypervisor.ErrExists)
	}
	p := v.proc
	if withMemory && p == nil {
		return fmt.Errorf("qemu: memory snapshot of %s: not running: %w", id, hypervisor.ErrBadState)
	}
	if withMemory && (len(v.rec.Run.HotCPUs) > 0 || len(v.rec.Run.DIMMs) > 0) {
		return fmt.Errorf("qemu: memory snapshot of %s after a live resize: restart it first: %w", id, hypervisor.ErrUnsupported)
	}
	snap := snapRec{Name: name, CreatedAt: d.clock.Now().UTC(), Layers: map[string]int{}}
	rev := &reverter{}
	defer rev.fail()
	resume := false
	if withMemory {
		st, err := p.qmp.QueryStatus(ctx)
		if err != nil {
			return fmt.Errorf("qemu: snapshot %s: %w", id, err)
		}
		if st.Running {
			if err := p.qmp.Stop(ctx); err != nil {
				return fmt.Errorf("qemu: snapshot %s: %w", id, err)
			}
			resume = true
			rev.add(func() {
				ctx, cancel := d.cleanupCtx()
				defer cancel()
				p.qmp.Cont(ctx)
			})
		}
	}
	tops, err := d.newTops(ctx, v, rev)
	if err != nil {
		return fmt.Errorf("qemu: snapshot %s: %w", id, err)
	}
	if p != nil {
		if err := d.pivotLive(ctx, v, p, tops, rev); err != nil {
			return fmt.Errorf("qemu: snapshot %s: %w", id, err)
		}
	}
	if withMemory {
		snap.StateFile = filepath.Join(d.stateDirFor(v.rec), name+".state")
		if err := d.saveMemory(ctx, p, snap.StateFile); err != nil {
			os.Remove(snap.StateFile)
			return fmt.Errorf("qemu: snapshot %s: %w", id, err)
		}
		snap.VCPUs, snap.Memory = v.rec.Config.Spec.VCPUs, v.rec.Config.Spec.Memory
	}
	for i := range v.rec.Disks {
		dr := &v.rec.Disks[i]
		snap.Layers[dr.Name] = dr.Active
		dr.Layers = append(dr.Layers, layerRec{ID: tops[i].id, Parent: dr.Active, File: tops[i].file})
		dr.Active = tops[i].id
		dr.NextLayer = tops[i].id + 1
	}
	v.rec.Snapshots = append(v.rec.Snapshots, snap)
	if err := d.saveRecord(v.rec); err != nil {
		return err
	}
	rev.success()
	if resume {
		if err := p.qmp.Cont(ctx); err != nil {
			return fmt.Errorf("qemu: resuming %s after the snapshot: %w", id, err)
		}
	}
	return nil
}

type newTop struct {
	id   int
	file string
}

// newTops creates one empty layer per disk over its active layer.
func (d *Driver) newTops(ctx context.Context, v *vm, rev *reverter) ([]newTop, error) {
	var out []newTop
	for _, dr := range v.rec.Disks {
		var key []byte
		if dr.Encrypted {
			var err error
			if key, err = d.keys.VolumeKey(ctx, v.rec.Config.ID, dr.Name, false); err != nil {
				return nil, err
			}
		}
		t := newTop{id: dr.NextLayer, file: filepath.Join(dr.Dir, fmt.Sprintf("%s.%d.qcow2", dr.Name, dr.NextLayer))}
		if err := d.createLayer(ctx, t.file, dr.Size, dr.layer(dr.Active).File, "qcow2", key); err != nil {
			return nil, err
		}
		rev.add(func() { os.Remove(t.file) })
		if err := d.giveLayer(v.rec, t.file); err != nil { // QMP opens it as the VM's user
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// pivotLive adds the new layers to the running QEMU and makes them the
// active ones in one transaction (all disks or none).
func (d *Driver) pivotLive(ctx context.Context, v *vm, p *process, tops []newTop, rev *reverter) error {
	var actions []qmp.Action
	for i, dr := range v.rec.Disks {
		node := dr.node(tops[i].id)
		args := qmp.Args{
			"driver": "qcow2", "node-name": node, "backing": nil,
			"file": qmp.Args{"driver": "file", "filename": tops[i].file, "node-name": "f" + node},
		}
		if dr.Encrypted {
			args["encrypt"] = qmp.Args{"format": "luks", "key-secret": dr.secretID()}
		}
		if err := p.qmp.BlockdevAdd(ctx, args); err != nil {
			return err
		}
		rev.add(func() {
			ctx, cancel := d.cleanupCtx()
			defer cancel()
			p.qmp.BlockdevDel(ctx, node)
			p.qmp.BlockdevDel(ctx, "f"+node)
		})
		actions = append(actions, qmp.Action{Type: "blockdev-snapshot", Data: qmp.Args{"node": dr.node(dr.Active), "overlay": node}})
	}
	if len(actions) == 0 {
		return nil
	}
	return p.qmp.Transaction(ctx, actions)
}

// saveMemory migrates the paused VM's state into file through an fd.
func (d *Driver) saveMemory(ctx context.Context, p *process, file string) error {
	f, err := os.OpenFile(file, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := resetMigration(ctx, p); err != nil { // a live migration's TLS would apply to this stream
		return err
	}
	if err := p.qmp.Getfd(ctx, "vpool-save", f); err != nil {
		return err
	}
	if err := p.qmp.Execute(ctx, "migrate", qmp.Args{"uri": "fd:vpool-save"}, nil); err != nil {
		return err
	}
	if _, err := waitMigration(ctx, p, nil); err != nil {
		return err
	}
	return f.Sync()
}

// waitMigration polls query-migrate until the migration ends.
func waitMigration(ctx context.Context, p *process, progress func(qmp.MigrationInfo)) (qmp.MigrationInfo, error) {
	for {
		mi, err := p.qmp.QueryMigrate(ctx)
		if err != nil {
			return mi, err
		}
		switch mi.Status {
		case "completed":
			return mi, nil
		case "failed", "cancelled":
			return mi, fmt.Errorf("qemu: migration %s: %s", mi.Status, mi.ErrorDesc)
		}
		if progress != nil {
			progress(mi)
		}
		select {
		case <-ctx.Done():
			return mi, fmt.Errorf("qemu: waiting for migration: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (d *Driver) stateDirFor(rec *record) string {
	if len(rec.Disks) > 0 {
		return rec.Disks[0].Dir
	}
	return d.vmDir(rec.Config.ID)
}

func findSnap(rec *record, name string) int {
	return slices.IndexFunc(rec.Snapshots, func(s snapRec) bool { return s.Name == name })
}

// Snapshots lists the VM's snapshots, oldest first.
func (d *Driver) Snapshots(ctx context.Context, id string) ([]hypervisor.SnapshotInfo, error) {
	v, err := d.lock(id)
	if err != nil {
		return nil, err
	}
	defer v.mu.Unlock()
	out := make([]hypervisor.SnapshotInfo, 0, len(v.rec.Snapshots))
	for _, s := range v.rec.Snapshots {
		out = append(out, hypervisor.SnapshotInfo{Name: s.Name, CreatedAt: s.CreatedAt, Memory: s.StateFile != ""})
	}
	return out, nil
}

// RevertSnapshot discards the current disk state (killing QEMU if it
// runs) and continues from the snapshot: a memory snapshot resumes the
// saved guest; a disk snapshot of a running VM cold-boots from it; a
// stopped VM stays stopped.
func (d *Driver) RevertSnapshot(ctx context.Context, id, name string) (err error) {
	defer d.public(&err, "revert snapshot", id)
	v, err := d.lock(id)
	if err != nil {
		return err
	}
	defer v.mu.Unlock()
	i := findSnap(v.rec, name)
	if i < 0 {
		return fmt.Errorf("qemu: revert %s to %s: %w", id, name, hypervisor.ErrSnapshotFound)
	}
	snap := v.rec.Snapshots[i]
	wasRunning := v.proc != nil
	if err := d.killLocked(ctx, v); err != nil {
		return err
	}
	for j := range v.rec.Disks {
		dr := &v.rec.Disks[j]
		base, ok := snap.Layers[dr.Name]
		if !ok {
			continue // a disk added after the snapshot keeps its state
		}
		var key []byte
		if dr.Encrypted {
			if key, err = d.keys.VolumeKey(ctx, id, dr.Name, false); err != nil {
				return err
			}
		}
		nt := newTop{id: dr.NextLayer, file: filepath.Join(dr.Dir, fmt.Sprintf("%s.%d.qcow2", dr.Name, dr.NextLayer))}
		if err := d.createLayer(ctx, nt.file, dr.Size, dr.layer(base).File, "qcow2", key); err != nil {
			return fmt.Errorf("qemu: revert %s: %w", id, err)
		}
		old := dr.Active
		dr.Layers = append(dr.Layers, layerRec{ID: nt.id, Parent: base, File: nt.file})
		dr.Active, dr.NextLayer = nt.id, nt.id+1
		if !layerReferenced(v.rec, dr, old) && len(dr.children(old)) == 0 {
			os.Remove(dr.layer(old).File)
			dr.Layers = slices.DeleteFunc(dr.Layers, func(l layerRec) bool { return l.ID == old })
		}
	}
	if err := d.saveRecord(v.rec); err != nil {
		return err
	}
	switch {
	case snap.StateFile != "":
		v.rec.Config.Spec.VCPUs, v.rec.Config.Spec.Memory = snap.VCPUs, snap.Memory
		return d.restoreMemory(ctx, v, snap.StateFile)
	case wasRunning:
		return d.startLocked(ctx, v, startOpts{})
	}
	return nil
}

// restoreMemory starts QEMU waiting for an incoming migration and feeds
// it the saved state, then resumes the guest.
func (d *Driver) restoreMemory(ctx context.Context, v *vm, file string) error {
	id := v.rec.Config.ID
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("qemu: revert %s: %w", id, err)
	}
	defer f.Close()
	if err := d.startLocked(ctx, v, startOpts{incoming: "defer"}); err != nil {
		return err
	}
	p := v.proc
	fail := func(err error) error {
		ctx, cancel := d.cleanupCtx()
		defer cancel()
		d.killLocked(ctx, v)
		return fmt.Errorf("qemu: revert %s: %w", id, err)
	}
	if err := p.qmp.Getfd(ctx, "vpool-load", f); err != nil {
		return fail(err)
	}
	if err := p.qmp.Execute(ctx, "migrate-incoming", qmp.Args{"uri": "fd:vpool-load"}, nil); err != nil {
		return fail(err)
	}
	if err := waitIncoming(ctx, p); err != nil {
		return fail(err)
	}
	if err := p.qmp.Cont(ctx); err != nil {
		return fail(err)
	}
	return nil
}

// waitIncoming waits until an incoming migration has loaded (the VM
// leaves the inmigrate state; with -S it is then paused).
func waitIncoming(ctx context.Context, p *process) error {
	for {
		st, err := p.qmp.QueryStatus(ctx)
		if err != nil {
			return err
		}
		if st.Status != "inmigrate" {
			if st.Status == "paused" || st.Status == "running" || st.Status == "prelaunch" {
				return nil
			}
			return fmt.Errorf("qemu: incoming migration ended in state %s", st.Status)
		}
		select {
		case <-p.exited:
			return errors.New("qemu: QEMU exited while loading the migration stream")
		case <-ctx.Done():
			return fmt.Errorf("qemu: waiting for the incoming migration: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func layerReferenced(rec *record, dr *diskRec, layer int) bool {
	for _, s := range rec.Snapshots {
		if l, ok := s.Layers[dr.Name]; ok && l == layer {
			return true
		}
	}
	return false
}

// DeleteSnapshot forgets a snapshot and removes the layers nobody needs
// any more: a frozen layer with no child is deleted, one with a single
// child is merged into it (block-stream, live when the child is in the
// running chain, else in a helper QEMU that only hosts block nodes).
func (d *Driver) DeleteSnapshot(ctx context.Context, id, name string) (err error) {
	defer d.public(&err, "delete snapshot", id)
	v, err := d.lock(id)
	if err != nil {
		return err
	}
	defer v.mu.Unlock()
	i := findSnap(v.rec, name)
	if i < 0 {
		return fmt.Errorf("qemu: delete snapshot %s/%s: %w", id, name, hypervisor.ErrSnapshotFound)
	}
	snap := v.rec.Snapshots[i]
	v.rec.Snapshots = slices.Delete(v.rec.Snapshots, i, i+1)
	if snap.StateFile != "" {
		os.Remove(snap.StateFile)
	}
	if err := d.saveRecord(v.rec); err != nil {
		return err
	}
	for j := range v.rec.Disks {
		if err := d.collectLayers(ctx, v, &v.rec.Disks[j]); err != nil {
			d.saveRecord(v.rec)
			return fmt.Errorf("qemu: delete snapshot %s/%s: %w", id, name, err)
		}
	}
	return d.saveRecord(v.rec)
}

// collectLayers deletes or merges every layer that is neither active nor
// a snapshot, until none is left.
func (d *Driver) collectLayers(ctx context.Context, v *vm, dr *diskRec) error {
	for {
		victim, child := -1, -1
		for _, l := range dr.Layers {
			if l.ID == dr.Active || layerReferenced(v.rec, dr, l.ID) {
				continue
			}
			switch ch := dr.children(l.ID); len(ch) {
			case 0:
				victim = l.ID
			case 1:
				victim, child = l.ID, ch[0]
			}
			if victim >= 0 {
				break
			}
		}
		if victim < 0 {
			return nil
		}
		if child >= 0 {
			if err := d.mergeInto(ctx, v, dr, victim, child); err != nil {
				return err
			}
		}
		l := dr.layer(victim)
		if err := os.Remove(l.File); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		dr.Layers = slices.DeleteFunc(dr.Layers, func(x layerRec) bool { return x.ID == victim })
	}
}

// mergeInto streams layer victim into its only child, so the child's
// backing becomes victim's parent.
func (d *Driver) mergeInto(ctx context.Context, v *vm, dr *diskRec, victim, child int) error {
	parent := dr.layer(victim).Parent
	baseNode := ""
	switch {
	case parent >= 0:
		baseNode = dr.node(parent)
	case dr.Base != "":
		baseNode = dr.baseNode()
	}
	p := v.proc
	live := p != nil && slices.ContainsFunc(dr.chain(), func(l layerRec) bool { return l.ID == child })
	if !live {
		hp, stop, err := d.blockHelper(ctx, v, dr, child)
		if err != nil {
			return err
		}
		defer stop()
		p = hp
	}
	if err := d.streamJob(ctx, p, "stream-"+dr.node(child), dr.node(child), baseNode); err != nil {
		return err
	}
	if live {
		p.qmp.BlockdevDel(ctx, dr.node(victim))
		p.qmp.BlockdevDel(ctx, "f"+dr.node(victim))
	}
	dr.layer(child).Parent = parent
	return nil
}

// streamJob runs block-stream into node down to baseNode and waits. A
// long job may take its time, but QEMU must keep answering: every
// QMPTimeout without the job's end, query-block-jobs must (so a stuck
// QEMU cannot hold the VM's lock forever).
func (d *Driver) streamJob(ctx context.Context, p *process, job, node, baseNode string) error {
	sub := p.qmp.Subscribe("BLOCK_JOB_COMPLETED", "BLOCK_JOB_ERROR")
	defer sub.Close()
	args := qmp.Args{"job-id": job, "device": node}
	if baseNode != "" {
		args["base-node"] = baseNode
	}
	if err := p.qmp.Execute(ctx, "block-stream", args, nil); err != nil {
		return err
	}
	var ev qmp.Event
	for {
		wctx, cancel := context.WithTimeout(ctx, d.cfg.QMPTimeout)
		e, err := sub.Wait(wctx, func(ev qmp.Event) bool {
			var data struct {
				Device string `json:"device"`
			}
			return ev.DecodeData(&data) == nil && data.Device == job
		})
		cancel()
		if err == nil {
			ev = e
			break
		}
		if ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		if _, err := p.qmp.QueryBlockJobs(ctx); err != nil {
			return fmt.Errorf("qemu: block-stream %s: QEMU stopped answering: %w", node, err)
		}
	}
	var data struct {
		Error string `json:"error"`
	}
	ev.DecodeData(&data)
	if ev.Name == "BLOCK_JOB_ERROR" || data.Error != "" {
		return fmt.Errorf("qemu: block-stream %s: %s %s", node, ev.Name, data.Error)
	}
	return nil
}

// blockHelper starts a QEMU with no guest (-machine none) that opens the
// disk's chain up to layer top, for block jobs on a stopped VM: the same
// code path as live, encrypted layers included.
func (d *Driver) blockHelper(ctx context.Context, v *vm, dr *diskRec, top int) (*process, func(), error) {
	id := v.rec.Config.ID
	sub := *dr
	sub.Active = top
	m := Machine{
		Name: id + "-blocks", Accel: "tcg", Type: "none", VCPUs: 1, MaxVCPUs: 1, MemoryMiB: 16,
		QMPSocket:     d.socketPath(id, "blocks.sock"),
		ConsoleSocket: d.socketPath(id, "blocks-console.sock"),
		SerialLog:     filepath.Join(d.vmDir(id), "blocks-serial.log"),
		PidFile:       filepath.Join(d.vmDir(id), "blocks.pid"),
		StartPaused:   true, Sandbox: true,
		Drives: []Drive{{Layers: sub.driveLayers(), NoDevice: true}},
	}
	var files []*os.File
	if dr.Encrypted {
		key, err := d.keys.VolumeKey(ctx, id, dr.Name, false)
		if err != nil {
			return nil, nil, err
		}
		f, err := keyPipe(key)
		if err != nil {
			return nil, nil, err
		}
		defer f.Close()
		files = append(files, f)
		m.Secrets = []Secret{{ID: dr.secretID(), File: "/dev/fd/3"}}
	}
	p, err := d.launch(ctx, v, m, files)
	if err != nil {
		return nil, nil, err
	}
	stop := func() {
		ctx, cancel := d.cleanupCtx()
		defer cancel()
		p.setEnding()
		p.qmp.Quit(ctx)
		if p.wait(ctx, 5*time.Second) != nil {
			p.kill(context.Background())
		}
		p.qmp.Close()
		for _, s := range []string{m.QMPSocket, m.ConsoleSocket, m.PidFile, m.SerialLog} {
			os.Remove(s)
		}
	}
	return p, stop, nil
}
