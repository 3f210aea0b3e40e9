package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
)

// Shared storage. A pool directory that several hosts see (NFS in
// production, one directory configured in two drivers in tests) already
// holds a migrating VM's disks on the target: <pool>/<id>/ exists, its
// owner record (owner.go) names another host, and each disk has exactly one
// layer file (migration refuses VMs with snapshots, whose deleted layers
// are merged away). The target then adopts those files instead of creating
// disks, the source mirrors only the other disks, and at the switchover the
// target takes ownership (rewrites the owner record, epoch + 1) so the source's clean-up
// leaves the files alone. Until then the files stay the source's: a failed
// migration's Delete on the target does not touch them (ownedDisks).

// incomingMarker in a VM directory marks a VM that is still arriving: a
// driver that finds one at start deletes the VM (the migration that made
// it died with the previous agent).
const incomingMarker = "incoming"

// diskName is the name makeDisk gives the i-th disk.
func diskName(sd model.Disk, i int) string {
	if sd.Name != "" {
		return sd.Name
	}
	return fmt.Sprintf("disk%d", i)
}

// findSharedDisks returns, by spec index, the disks of cfg that already
// exist in a pool directory owned by another host.
func (d *Driver) findSharedDisks(ctx context.Context, cfg hypervisor.VMConfig) (map[int]diskRec, error) {
	if err := checkConfig(cfg); err != nil {
		return nil, err
	}
	out := map[int]diskRec{}
	for i, sd := range cfg.Spec.Disks {
		poolName, poolDir, err := d.pool(sd.Pool)
		if err != nil {
			return nil, err
		}
		dir := filepath.Join(poolDir, cfg.ID)
		o, ok, err := readOwner(dir)
		if err != nil {
			return nil, fmt.Errorf("qemu: migrate in %s: %w", cfg.ID, err)
		}
		if !ok || d.mine(o, cfg.ID, d.localPool(poolDir)) {
			continue // not there, or ours: not shared with the source
		}
		name := diskName(sd, i)
		files, _ := filepath.Glob(filepath.Join(dir, name+".*.qcow2"))
		if len(files) != 1 {
			return nil, fmt.Errorf("qemu: migrate in %s: shared disk %s has %d layer files in %s, want 1: %w",
				cfg.ID, name, len(files), dir, hypervisor.ErrBadState)
		}
		if sd.Encrypted {
			return nil, fmt.Errorf("qemu: migrate in %s: encrypted disk %s on shared storage: %w", cfg.ID, name, hypervisor.ErrUnsupported)
		}
		layer, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(filepath.Base(files[0]), name+"."), ".qcow2"))
		if err != nil {
			return nil, fmt.Errorf("qemu: migrate in %s: odd layer file %s", cfg.ID, files[0])
		}
		dr := diskRec{Name: name, Index: i, Pool: poolName, Dir: dir, Size: int64(sd.Size),
			Layers: []layerRec{{ID: layer, Parent: -1, File: files[0]}}, Active: layer, NextLayer: layer + 1}
		if i == 0 && cfg.Image != nil && cfg.Image.Disk != "" {
			ii, err := d.imageInfo(ctx, cfg.Image.Disk)
			if err != nil {
				return nil, fmt.Errorf("%w: %w", ErrBadImage, err)
			}
			abs, err := filepath.Abs(cfg.Image.Disk)
			if err != nil {
				return nil, fmt.Errorf("qemu: %w", err)
			}
			// Every VM user must read the base (vmuser.go).
			if abs, err = d.shareable(abs, cfg.ID); err != nil {
				return nil, err
			}
			dr.Base, dr.BaseFormat, dr.Size = abs, ii.Format, max(dr.Size, ii.VirtualSize)
		}
		out[i] = dr
	}
	return out, nil
}

// createIncoming is Create for an arriving VM: disks found on shared
// storage are adopted, the others created empty (the mirror fills them).
// It returns the adopted disks' files by disk name.
func (d *Driver) createIncoming(ctx context.Context, cfg hypervisor.VMConfig) (map[string]string, error) {
	shared, err := d.findSharedDisks(ctx, cfg)
	if err != nil {
		d.mu.Lock()
		_, known := d.vms[cfg.ID]
		d.mu.Unlock()
		if !known { // the base copies it took for a VM that is not here
			d.releaseCopies(cfg.ID)
		}
		return nil, err
	}
	if len(shared) == 0 {
		return nil, d.Create(ctx, cfg)
	}
	// Create the local disks only, each under its final name; the record
	// is then fixed to the full configuration and the spec's indexes.
	local := cfg
	local.Spec.Disks = nil
	var localIdx []int
	for i, sd := range cfg.Spec.Disks {
		if _, ok := shared[i]; !ok {
			sd.Name = diskName(sd, i)
			local.Spec.Disks = append(local.Spec.Disks, sd)
			localIdx = append(localIdx, i)
		}
	}
	if _, ok := shared[0]; ok && cfg.Image != nil {
		img := *cfg.Image
		img.Disk, img.Format = "", ""
		local.Image = &img
	}
	if err := d.Create(ctx, local); err != nil {
		return nil, err
	}
	v, err := d.lock(cfg.ID)
	if err != nil {
		return nil, err
	}
	defer v.mu.Unlock()
	disks := make([]diskRec, len(cfg.Spec.Disks))
	for j, dr := range v.rec.Disks {
		dr.Index = localIdx[j]
		disks[dr.Index] = dr
	}
	files := map[string]string{}
	for i, dr := range shared {
		disks[i] = dr
		files[dr.Name] = dr.Layers[0].File
	}
	v.rec.Disks, v.rec.Config = disks, cfg
	if err := d.saveRecord(v.rec); err != nil {
		d.deleteLocked(context.Background(), v)
		return nil, err
	}
	return files, nil
}

// takeOwnership makes this driver the owner of the adopted disks; the
// returned func gives them back to their previous owner.
func (d *Driver) takeOwnership(rec *record, shared map[string]string) (restore func(), err error) {
	var errs []error
	prev := map[string][]byte{}
	for _, dr := range rec.Disks {
		if _, ok := shared[dr.Name]; !ok {
			continue
		}
		f := filepath.Join(dr.Dir, ownerFile)
		if _, done := prev[f]; done {
			continue // two disks in one directory
		}
		b, err := os.ReadFile(f)
		if err != nil {
			errs = append(errs, fmt.Errorf("qemu: %w", err))
			continue
		}
		prev[f] = b
		o, _, _ := readOwner(dr.Dir)
		errs = append(errs, writeOwner(dr.Dir, owner{Host: d.hostID, VM: rec.Config.ID, Epoch: o.Epoch + 1}))
	}
	return func() {
		for f, b := range prev {
			writeFileAtomic(f, b, 0o600)
		}
	}, errors.Join(errs...)
}

// ownedDisks drops the disks whose directory another host owns (shared
// storage during or after a migration): their files are not ours to
// delete. A directory without an owner file counts as ours.
func (d *Driver) ownedDisks(id string, disks []diskRec) []diskRec {
	out := make([]diskRec, 0, len(disks))
	for _, dr := range disks {
		if d.ownsDir(dr.Dir, id) {
			out = append(out, dr)
		}
	}
	return out
}

// dropUnfinishedIncoming deletes VMs whose migration never finished
// (their record still carries the incoming marker): the source kept the
// guest, so this copy is garbage. Called by New.
func (d *Driver) dropUnfinishedIncoming() {
	d.mu.Lock()
	var vms []*vm
	for id, v := range d.vms {
		if _, err := os.Stat(filepath.Join(d.vmDir(id), incomingMarker)); err == nil {
			vms = append(vms, v)
		}
	}
	d.mu.Unlock()
	for _, v := range vms {
		v.mu.Lock()
		// Nothing on a shared pool goes at start-up (owner.go): its
		// directories there stay, reported as orphans.
		var local []diskRec
		for _, dr := range v.rec.Disks {
			if d.localPool(filepath.Dir(dr.Dir)) {
				local = append(local, dr)
			} else if d.ownsDir(dr.Dir, v.rec.Config.ID) {
				d.log.Warn("qemu: orphan disk directory on a shared pool left in place; delete it once no host uses it",
					"vm", v.rec.Config.ID, "dir", dr.Dir)
			}
		}
		v.rec.Disks = local
		d.log.Warn("qemu: dropping a VM whose incoming migration never finished", "vm", v.rec.Config.ID)
		if err := d.deleteLocked(context.Background(), v); err != nil {
			d.log.Warn("qemu: dropping unfinished incoming VM", "vm", v.rec.Config.ID, "err", err)
		}
		v.mu.Unlock()
	}
}

// createAdopting is Create for a VM that HA restarted on this host after
// its host failed and was fenced: its disks on shared pools (owned by the
// failed host) are adopted, this host becomes their owner (epoch + 1),
// the others are created. The failed host's driver then refuses to start
// the VM (checkOwnership), and QEMU's image locks refuse a second writer.
func (d *Driver) createAdopting(ctx context.Context, cfg hypervisor.VMConfig) error {
	cfg.AdoptEpoch = 0
	files, err := d.createIncoming(ctx, cfg)
	if err != nil || len(files) == 0 {
		return err
	}
	v, err := d.lock(cfg.ID)
	if err != nil {
		return err
	}
	defer v.mu.Unlock()
	if _, err := d.takeOwnership(v.rec, files); err != nil {
		d.deleteLocked(context.Background(), v)
		return err
	}
	d.log.Info("qemu: adopted the disks of a VM restarted after a host failure", "vm", cfg.ID, "disks", len(files))
	return nil
}

// checkOwnership refuses to start a VM whose disk directory on a shared
// pool another host owns now (HA restarted the VM there).
func (d *Driver) checkOwnership(v *vm) error {
	for _, dr := range v.rec.Disks {
		if o, ok, err := readOwner(dr.Dir); err == nil && ok && !d.mine(o, v.rec.Config.ID, d.localPool(filepath.Dir(dr.Dir))) {
			return fmt.Errorf("qemu: start %s: disk %s is owned by %s now: %w", v.rec.Config.ID, dr.Name, o, hypervisor.ErrBadState)
		}
	}
	return nil
}
