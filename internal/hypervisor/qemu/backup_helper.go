package qemu

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// diskHelper starts a QEMU with no guest (-machine none) that opens every
// disk of a stopped VM (active layers writable, persistent bitmaps
// loaded), for backups and restores: the same QMP and NBD code as a live
// VM. stop quits it, which writes the bitmaps back into the images.
func (d *Driver) diskHelper(ctx context.Context, v *vm) (*process, func(), error) {
	id := v.rec.Config.ID
	m := Machine{
		Name: id + "-disks", Accel: "tcg", Type: "none", VCPUs: 1, MaxVCPUs: 1, MemoryMiB: 16,
		QMPSocket:     d.socketPath(id, "disks.sock"),
		ConsoleSocket: d.socketPath(id, "disks-console.sock"),
		SerialLog:     filepath.Join(d.vmDir(id), "disks-serial.log"),
		PidFile:       filepath.Join(d.vmDir(id), "disks.pid"),
		StartPaused:   true, Sandbox: true,
	}
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for _, dr := range v.rec.Disks {
		m.Drives = append(m.Drives, Drive{Layers: dr.driveLayers(), NoDevice: true})
		if !dr.Encrypted {
			continue
		}
		key, err := d.keys.VolumeKey(ctx, id, dr.Name, false)
		if err != nil {
			return nil, nil, err
		}
		f, err := keyPipe(key)
		if err != nil {
			return nil, nil, err
		}
		files = append(files, f)
		m.Secrets = append(m.Secrets, Secret{ID: dr.secretID(), File: fmt.Sprintf("/dev/fd/%d", 2+len(files))})
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
		if p.wait(ctx, 10*time.Second) != nil {
			p.kill(context.Background())
		}
		p.qmp.Close()
		for _, s := range []string{m.QMPSocket, m.ConsoleSocket, m.PidFile, m.SerialLog} {
			os.Remove(s)
		}
	}
	return p, stop, nil
}
