package sim

import (
	"context"
	"fmt"
	"maps"
	"sort"
	"sync"

	"github.com/vpool/vpool/internal/hypervisor"
)

// Simulated disks hold what is written to them (WriteDisk, the simulated
// guest) in 64 KiB blocks, and change tracking by checkpoints with the
// semantics of the QEMU driver's persistent dirty bitmaps: see
// hypervisor.Backupper.

// BlockSize is the granularity of simulated disk content and tracking.
const BlockSize = 64 << 10

var _ hypervisor.Backupper = (*Driver)(nil)

// diskData is one disk's content and checkpoints.
type diskData struct {
	Blocks      map[int64][]byte       `json:"blocks,omitempty"`
	Checkpoints map[string]*checkpoint `json:"checkpoints,omitempty"`
}

// checkpoint is a dirty bitmap: the blocks written since it was made.
type checkpoint struct {
	Dirty     map[int64]bool `json:"dirty,omitempty"`
	Recording bool           `json:"recording"`
}

func (v *vm) disk(name string) *diskData {
	if v.Disks == nil {
		v.Disks = map[string]*diskData{}
	}
	d := v.Disks[name]
	if d == nil {
		d = &diskData{Blocks: map[int64][]byte{}, Checkpoints: map[string]*checkpoint{}}
		v.Disks[name] = d
	}
	if d.Blocks == nil {
		d.Blocks = map[int64][]byte{}
	}
	if d.Checkpoints == nil {
		d.Checkpoints = map[string]*checkpoint{}
	}
	for _, c := range d.Checkpoints {
		if c.Dirty == nil { // empty after a reload of the state file
			c.Dirty = map[int64]bool{}
		}
	}
	return d
}

func (v *vm) diskSize(name string) (int64, bool) {
	for _, d := range v.Config.Spec.Disks {
		if d.Name == name {
			return int64(d.Size), true
		}
	}
	return 0, false
}

// writeLocked writes p at off; every recording checkpoint marks the
// blocks. Blocks are replaced, never changed in place, so a session's
// copy of the block map stays as of its point.
func (dd *diskData) writeLocked(p []byte, off int64) {
	for len(p) > 0 {
		b := off / BlockSize
		at := off - b*BlockSize
		n := min(int64(len(p)), BlockSize-at)
		nb := make([]byte, BlockSize)
		if old := dd.Blocks[b]; old != nil {
			copy(nb, old)
		}
		copy(nb[at:], p[:n])
		dd.Blocks[b] = nb
		for _, c := range dd.Checkpoints {
			if c.Recording {
				c.Dirty[b] = true
			}
		}
		p, off = p[n:], off+n
	}
}

// WriteDisk writes data into a disk of a VM as its guest would (the
// simulated guest's disk writes; tests use it).
func (d *Driver) WriteDisk(_ context.Context, id, disk string, off int64, data []byte) error {
	h := d.h
	h.mu.Lock()
	defer h.mu.Unlock()
	v, err := h.getLocked("write disk", id)
	if err != nil {
		return err
	}
	size, ok := v.diskSize(disk)
	if !ok || off < 0 || off+int64(len(data)) > size {
		return fmt.Errorf("sim: write disk %s/%s: range %d+%d outside the disk", id, disk, off, len(data))
	}
	v.disk(disk).writeLocked(data, off)
	return h.saveLocked()
}

func (d *Driver) begin(id string) error {
	if _, busy := d.sessions.LoadOrStore(id, true); busy {
		return fmt.Errorf("sim: %s: a backup or restore of this VM is running: %w", id, hypervisor.ErrBadState)
	}
	return nil
}

type simSession struct {
	d     *Driver
	id    string
	req   hypervisor.BackupRequest
	disks []hypervisor.BackupDisk
	view  map[string]map[int64][]byte // the point in time
	dirty map[string]map[int64]bool   // incremental disks: changes since Since
	write bool

	mu   sync.Mutex
	done bool
}

// OpenBackup implements hypervisor.Backupper.
func (d *Driver) OpenBackup(_ context.Context, id string, req hypervisor.BackupRequest) (hypervisor.BackupSession, error) {
	h := d.h
	if err := h.fail("backup", id); err != nil {
		return nil, err
	}
	if req.Checkpoint == "" {
		return nil, fmt.Errorf("sim: backup %s: empty checkpoint", id)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	v, err := h.getLocked("backup", id)
	if err != nil {
		return nil, err
	}
	if err := d.begin(id); err != nil {
		return nil, err
	}
	s := &simSession{d: d, id: id, req: req, view: map[string]map[int64][]byte{}, dirty: map[string]map[int64]bool{}}
	for _, sd := range v.Config.Spec.Disks {
		dd := v.disk(sd.Name)
		bd := hypervisor.BackupDisk{Name: sd.Name, Size: int64(sd.Size)}
		since := dd.Checkpoints[req.Since]
		if req.Since != "" && since != nil {
			for name, c := range dd.Checkpoints { // fold leftovers into Since
				if name != req.Since {
					maps.Copy(since.Dirty, c.Dirty)
					delete(dd.Checkpoints, name)
				}
			}
			bd.Incremental = true
			s.dirty[sd.Name] = maps.Clone(since.Dirty)
			since.Recording = false
		} else {
			if req.Since != "" {
				bd.Reason = "no change tracking since the last backup on this host (the disk was re-created, restored or migrated)"
			}
			clear(dd.Checkpoints)
		}
		dd.Checkpoints[req.Checkpoint] = &checkpoint{Dirty: map[int64]bool{}, Recording: true}
		s.view[sd.Name] = maps.Clone(dd.Blocks)
		s.disks = append(s.disks, bd)
	}
	return s, h.saveLocked()
}

// OpenRestore implements hypervisor.Backupper.
func (d *Driver) OpenRestore(_ context.Context, id string) (hypervisor.RestoreSession, error) {
	h := d.h
	if err := h.fail("restore", id); err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	v, err := h.getLocked("restore", id)
	if err != nil {
		return nil, err
	}
	if v.State == hypervisor.StateRunning || v.State == hypervisor.StatePaused {
		return nil, fmt.Errorf("sim: restore %s: stop the vm first: %w", id, hypervisor.ErrBadState)
	}
	if err := d.begin(id); err != nil {
		return nil, err
	}
	s := &simSession{d: d, id: id, write: true}
	for _, sd := range v.Config.Spec.Disks {
		clear(v.disk(sd.Name).Checkpoints)
		s.disks = append(s.disks, hypervisor.BackupDisk{Name: sd.Name, Size: int64(sd.Size)})
	}
	return simRestore{s}, h.saveLocked()
}

func (s *simSession) Disks() []hypervisor.BackupDisk {
	return append([]hypervisor.BackupDisk(nil), s.disks...)
}

func (s *simSession) disk(name string) (hypervisor.BackupDisk, error) {
	for _, d := range s.disks {
		if d.Name == name {
			return d, nil
		}
	}
	return hypervisor.BackupDisk{}, fmt.Errorf("sim: %s has no disk %q", s.id, name)
}

// Extents lists the dirty blocks (incremental) or the written ones.
func (s *simSession) Extents(_ context.Context, name string) ([]hypervisor.Extent, error) {
	bd, err := s.disk(name)
	if err != nil {
		return nil, err
	}
	var blocks []int64
	if bd.Incremental {
		for b := range s.dirty[name] {
			blocks = append(blocks, b)
		}
	} else {
		for b := range s.view[name] {
			blocks = append(blocks, b)
		}
	}
	sort.Slice(blocks, func(i, j int) bool { return blocks[i] < blocks[j] })
	var out []hypervisor.Extent
	for _, b := range blocks {
		off := b * BlockSize
		n := min(int64(BlockSize), bd.Size-off)
		if k := len(out); k > 0 && out[k-1].Offset+out[k-1].Length == off {
			out[k-1].Length += n
			continue
		}
		out = append(out, hypervisor.Extent{Offset: off, Length: n})
	}
	return out, nil
}

func (s *simSession) ReadAt(_ context.Context, name string, p []byte, off int64) error {
	bd, err := s.disk(name)
	if err != nil {
		return err
	}
	if off < 0 || off+int64(len(p)) > bd.Size {
		return fmt.Errorf("sim: read %s/%s: range outside the disk", s.id, name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return fmt.Errorf("sim: read %s/%s: session closed", s.id, name)
	}
	view := s.view[name]
	for len(p) > 0 {
		b := off / BlockSize
		at := off - b*BlockSize
		n := min(int64(len(p)), BlockSize-at)
		if blk := view[b]; blk != nil {
			copy(p[:n], blk[at:])
		} else {
			clear(p[:n])
		}
		p, off = p[n:], off+n
	}
	return nil
}

// Close settles the checkpoints as the QEMU driver does.
func (s *simSession) Close(_ context.Context, keep bool) error {
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		return nil
	}
	s.done = true
	s.mu.Unlock()
	defer s.d.sessions.Delete(s.id)
	h := s.d.h
	h.mu.Lock()
	defer h.mu.Unlock()
	v, err := h.getLocked("backup", s.id)
	if err != nil {
		return nil // deleted meanwhile: nothing to settle
	}
	for _, bd := range s.disks {
		dd := v.disk(bd.Name)
		cp, since := dd.Checkpoints[s.req.Checkpoint], dd.Checkpoints[s.req.Since]
		switch {
		case keep:
			if bd.Incremental {
				delete(dd.Checkpoints, s.req.Since)
			}
		case bd.Incremental && since != nil:
			if cp != nil {
				maps.Copy(since.Dirty, cp.Dirty)
			}
			since.Recording = true
			delete(dd.Checkpoints, s.req.Checkpoint)
		default:
			delete(dd.Checkpoints, s.req.Checkpoint)
		}
	}
	return h.saveLocked()
}

// simRestore writes straight into the stopped VM's disks.
type simRestore struct{ *simSession }

func (s simRestore) WriteAt(_ context.Context, name string, p []byte, off int64) error {
	bd, err := s.disk(name)
	if err != nil {
		return err
	}
	if off < 0 || off+int64(len(p)) > bd.Size {
		return fmt.Errorf("sim: restore %s/%s: range outside the disk", s.id, name)
	}
	h := s.d.h
	h.mu.Lock()
	defer h.mu.Unlock()
	v, err := h.getLocked("restore", s.id)
	if err != nil {
		return err
	}
	v.disk(name).writeLocked(p, off)
	return nil
}

func (s simRestore) WriteZeroes(_ context.Context, name string, off, length int64) error {
	bd, err := s.disk(name)
	if err != nil {
		return err
	}
	if off < 0 || off+length > bd.Size {
		return fmt.Errorf("sim: restore %s/%s: range outside the disk", s.id, name)
	}
	h := s.d.h
	h.mu.Lock()
	defer h.mu.Unlock()
	v, err := h.getLocked("restore", s.id)
	if err != nil {
		return err
	}
	dd := v.disk(name)
	for b := off / BlockSize; b*BlockSize < off+length; b++ {
		lo, hi := max(off, b*BlockSize), min(off+length, (b+1)*BlockSize)
		if lo == b*BlockSize && hi == (b+1)*BlockSize {
			delete(dd.Blocks, b)
			continue
		}
		dd.writeLocked(make([]byte, hi-lo), lo)
	}
	return nil
}

func (s simRestore) Close(context.Context) error {
	s.mu.Lock()
	s.done = true
	s.mu.Unlock()
	s.d.sessions.Delete(s.id)
	h := s.d.h
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.saveLocked()
}
