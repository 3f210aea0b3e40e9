package qemu

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// Image copies (vmuser.go, shareable): an image base, kernel or initrd
// that VM users cannot read in place is copied once under StateDir/images
// and shared by the VMs that need it. Each copy is counted as used by the
// VMs whose disks back onto it or whose QEMU was given it; the copy goes
// when the last of them is deleted (or its creation failed), and at start
// every copy no record names is removed (those of VMs deleted before this
// count existed, and copies a crash left half-made). Before, copies were
// never removed: a host that ran many images kept every one of them.

// imageCopies holds which VMs use each copy. mu also serialises making a
// copy against removing it: shareable records the use in the same
// critical section in which it finds or makes the copy, so a copy is
// never removed between being handed out and being used.
type imageCopies struct {
	mu   sync.Mutex
	refs map[string]map[string]bool // copy path → ids of the VMs using it
}

// use records (mu held) that VM id uses the copy at path.
func (c *imageCopies) use(path, id string) {
	if c.refs == nil {
		c.refs = map[string]map[string]bool{}
	}
	if c.refs[path] == nil {
		c.refs[path] = map[string]bool{}
	}
	c.refs[path][id] = true
}

// releaseCopies forgets VM id's uses and removes the copies nobody uses
// any more.
func (d *Driver) releaseCopies(id string) {
	d.copies.mu.Lock()
	defer d.copies.mu.Unlock()
	for path, users := range d.copies.refs {
		if !users[id] {
			continue
		}
		delete(users, id)
		if len(users) > 0 {
			continue
		}
		delete(d.copies.refs, path)
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			d.log.Warn("qemu: removing an image copy no VM uses", "copy", path, "err", err)
			continue
		}
		d.log.Info("qemu: removed an image copy no VM uses", "copy", path)
	}
}

// recountCopies rebuilds the uses from the loaded records — disk bases
// under StateDir/images, and the copies their image's kernel and initrd
// would have now — and removes every other file there. Called once the
// records are loaded, before any VM operation.
func (d *Driver) recountCopies() {
	dir := d.imagesDir()
	d.copies.mu.Lock()
	defer d.copies.mu.Unlock()
	d.copies.refs = nil
	d.mu.Lock()
	for id, v := range d.vms {
		if v.rec == nil {
			continue
		}
		for _, dr := range v.rec.Disks {
			if filepath.Dir(dr.Base) == dir {
				d.copies.use(dr.Base, id)
			}
		}
		if img := v.rec.Config.Image; img != nil {
			for _, src := range []string{img.Kernel, img.Initrd, img.Disk} {
				if src == "" {
					continue
				}
				if st, err := os.Stat(src); err == nil {
					d.copies.use(d.copyPath(src, st), id)
				}
			}
		}
	}
	d.mu.Unlock()
	ents, err := os.ReadDir(dir)
	if err != nil {
		return // none made yet
	}
	for _, e := range ents {
		path := filepath.Join(dir, e.Name())
		if d.copies.refs[path] != nil || e.IsDir() {
			continue
		}
		if err := os.Remove(path); err != nil {
			d.log.Warn("qemu: removing an image copy no VM uses", "copy", path, "err", err)
			continue
		}
		if !strings.HasPrefix(e.Name(), ".tmp-copy-") {
			d.log.Info("qemu: removed an image copy no VM uses", "copy", path)
		}
	}
}
