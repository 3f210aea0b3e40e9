package qemu

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
)

// ErrBadImage is returned when an image base cannot be used.
var ErrBadImage = errors.New("qemu: bad image")

// img runs qemu-img; files are inherited as fds 3, 4, ...
func (d *Driver) img(ctx context.Context, files []*os.File, args ...string) ([]byte, error) {
	bin, err := binary(d.cfg.QEMUImg)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.ExtraFiles = files
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("qemu: qemu-img %s: %w: %s", args[0], err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// errCPUUsage is qemu-img's complaint when LUKS key derivation, which
// benchmarks the CPU, measured nothing on a loaded host.
const errCPUUsage = "Unable to get accurate CPU usage"

// imageInfo is qemu-img info's answer.
type imageInfo struct {
	VirtualSize int64  `json:"virtual-size"`
	ActualSize  int64  `json:"actual-size"`
	Format      string `json:"format"`
	Backing     string `json:"backing-filename"`
}

func (d *Driver) imageInfo(ctx context.Context, file string) (imageInfo, error) {
	out, err := d.img(ctx, nil, "info", "-U", "--output=json", file)
	if err != nil {
		return imageInfo{}, err
	}
	var ii imageInfo
	if err := json.Unmarshal(out, &ii); err != nil {
		return imageInfo{}, fmt.Errorf("qemu: qemu-img info %s: %w", file, err)
	}
	return ii, nil
}

// createLayer makes a thin qcow2 of size bytes over backing (a file of
// backingFmt, or none). With key, the layer is LUKS-encrypted; the key
// travels on an inherited pipe. The backing file is not opened (-u), so an
// encrypted backing needs no key here and the call takes milliseconds.
func (d *Driver) createLayer(ctx context.Context, file string, size int64, backing, backingFmt string, key []byte) error {
	for attempt := 1; ; attempt++ {
		err := d.createLayerOnce(ctx, file, size, backing, backingFmt, key)
		// A failed benchmark changed nothing; the retry gets a fresh key
		// pipe, since the first run consumed the old one.
		if err == nil || key == nil || attempt == 4 || !strings.Contains(err.Error(), errCPUUsage) {
			return err
		}
	}
}

func (d *Driver) createLayerOnce(ctx context.Context, file string, size int64, backing, backingFmt string, key []byte) error {
	args := []string{"create", "-q", "-f", "qcow2"}
	var files []*os.File
	if key != nil {
		p, err := keyPipe(key)
		if err != nil {
			return err
		}
		defer p.Close()
		files = append(files, p)
		args = append(args, "--object", "secret,id=sec0,file=/dev/fd/3,format=raw",
			"-o", "encrypt.format=luks,encrypt.key-secret=sec0")
		if d.cfg.LUKSIterTime > 0 {
			args = append(args, "-o", "encrypt.iter-time="+strconv.FormatInt(d.cfg.LUKSIterTime.Milliseconds(), 10))
		}
	}
	if backing != "" {
		args = append(args, "-u", "-b", backing, "-F", backingFmt)
	}
	args = append(args, file, strconv.FormatInt(size, 10))
	_, err := d.img(ctx, files, args...)
	return err
}

// pool returns the directory of the named pool.
func (d *Driver) pool(name string) (string, string, error) {
	if name == "" {
		name = "default"
	}
	dir, ok := d.cfg.Pools[name]
	if !ok {
		return "", "", fmt.Errorf("qemu: storage pool %q is not configured on this host", name)
	}
	return name, dir, nil
}

// makeDisks creates the VM's disks: the first disk is a linked clone of
// the image base when the image has one. Every step is pushed on rev.
func (d *Driver) makeDisks(ctx context.Context, cfg hypervisor.VMConfig, rev *reverter) ([]diskRec, error) {
	var out []diskRec
	for i, sd := range cfg.Spec.Disks {
		dr, err := d.makeDisk(ctx, cfg, i, sd, rev)
		if err != nil {
			return nil, err
		}
		out = append(out, dr)
	}
	return out, nil
}

func (d *Driver) makeDisk(ctx context.Context, cfg hypervisor.VMConfig, i int, sd model.Disk, rev *reverter) (diskRec, error) {
	poolName, poolDir, err := d.pool(sd.Pool)
	if err != nil {
		return diskRec{}, err
	}
	name := sd.Name
	if name == "" {
		name = fmt.Sprintf("disk%d", i)
	}
	dir := filepath.Join(poolDir, cfg.ID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return diskRec{}, fmt.Errorf("qemu: %w", err)
	}
	rev.add(func() { os.Remove(dir) }) // only when empty: other disks may share it
	o, ok, err := readOwner(dir)
	switch {
	case err != nil:
		return diskRec{}, err
	case ok && !d.mine(o, cfg.ID, d.localPool(poolDir)):
		// Another host's (shared storage): never write over it.
		return diskRec{}, fmt.Errorf("qemu: pool %s already holds disks of %s owned by %s: %w", poolName, cfg.ID, o, hypervisor.ErrBadState)
	case !ok:
		if err := writeOwner(dir, owner{Host: d.hostID, VM: cfg.ID, Epoch: 1}); err != nil {
			return diskRec{}, err
		}
		rev.add(func() { os.Remove(filepath.Join(dir, ownerFile)) })
	}
	dr := diskRec{Name: name, Index: i, Pool: poolName, Dir: dir, Size: int64(sd.Size), Encrypted: sd.Encrypted, Active: 0, NextLayer: 1}
	if i == 0 && cfg.Image != nil && cfg.Image.Disk != "" {
		ii, err := d.imageInfo(ctx, cfg.Image.Disk)
		if err != nil {
			return diskRec{}, fmt.Errorf("%w: %w", ErrBadImage, err)
		}
		if cfg.Image.Format != "" && cfg.Image.Format != ii.Format {
			return diskRec{}, fmt.Errorf("%w: %s is %s, not %s", ErrBadImage, cfg.Image.Disk, ii.Format, cfg.Image.Format)
		}
		abs, err := filepath.Abs(cfg.Image.Disk)
		if err != nil {
			return diskRec{}, fmt.Errorf("qemu: %w", err)
		}
		// Every VM user must read the base (vmuser.go).
		if abs, err = d.shareable(abs, cfg.ID); err != nil {
			return diskRec{}, err
		}
		dr.Base, dr.BaseFormat = abs, ii.Format
		dr.Size = max(dr.Size, ii.VirtualSize)
	}
	var key []byte
	if dr.Encrypted {
		if key, err = d.keys.VolumeKey(ctx, cfg.ID, name, true); err != nil {
			return diskRec{}, err
		}
	}
	file := filepath.Join(dir, fmt.Sprintf("%s.0.qcow2", name))
	if err := d.createLayer(ctx, file, dr.Size, dr.Base, dr.BaseFormat, key); err != nil {
		return diskRec{}, err
	}
	rev.add(func() { os.Remove(file) })
	dr.Layers = []layerRec{{ID: 0, Parent: -1, File: file}}
	return dr, nil
}

// removeDisks deletes every layer file and the VM's pool directories.
func removeDisks(disks []diskRec) error {
	var errs []error
	for _, dr := range disks {
		for _, l := range dr.Layers {
			if err := os.Remove(l.File); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	for _, dr := range disks {
		if err := os.RemoveAll(dr.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// diskUsage is the space the VM's layers take (allocated blocks).
func diskUsage(disks []diskRec) int64 {
	var n int64
	for _, dr := range disks {
		for _, l := range dr.Layers {
			var st syscall.Stat_t
			if syscall.Stat(l.File, &st) == nil {
				n += st.Blocks * 512
			}
		}
	}
	return n
}

// ResizeDisk grows a disk to size (shrinking is refused: it would cut a
// file system). A running guest sees the new size at once (block_resize);
// a stopped VM's active layer is resized in a helper QEMU, which works
// for encrypted layers too. Not part of hypervisor.Driver.
func (d *Driver) ResizeDisk(ctx context.Context, id, disk string, size model.Bytes) (err error) {
	defer d.public(&err, "resize disk", id)
	v, err := d.lock(id)
	if err != nil {
		return err
	}
	defer v.mu.Unlock()
	var dr *diskRec
	for i := range v.rec.Disks {
		if v.rec.Disks[i].Name == disk {
			dr = &v.rec.Disks[i]
		}
	}
	switch {
	case dr == nil:
		return fmt.Errorf("qemu: resize disk %s/%s: %w", id, disk, hypervisor.ErrNotFound)
	case int64(size) < dr.Size:
		return fmt.Errorf("qemu: resize disk %s/%s: shrinking from %s to %s is not supported: %w",
			id, disk, model.Bytes(dr.Size), size, hypervisor.ErrUnsupported)
	case int64(size) == dr.Size:
		return nil
	case size%512 != 0:
		return fmt.Errorf("qemu: resize disk %s/%s: %d is not a multiple of 512", id, disk, size)
	}
	p := v.proc
	if p == nil {
		hp, stop, err := d.blockHelper(ctx, v, dr, dr.Active)
		if err != nil {
			return fmt.Errorf("qemu: resize disk %s/%s: %w", id, disk, err)
		}
		defer stop()
		p = hp
	}
	if err := p.qmp.Execute(ctx, "block_resize", map[string]any{"node-name": dr.node(dr.Active), "size": int64(size)}, nil); err != nil {
		return fmt.Errorf("qemu: resize disk %s/%s: %w", id, disk, err)
	}
	dr.Size = int64(size)
	for i := range v.rec.Config.Spec.Disks {
		if v.rec.Config.Spec.Disks[i].Name == disk {
			v.rec.Config.Spec.Disks[i].Size = size
		}
	}
	return d.saveRecord(v.rec)
}
