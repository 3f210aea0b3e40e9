package state

import (
	"sync"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// VMDecoder decodes each stored version of a VM once per process: the
// server's watch-fed view and the controllers' cache both follow every
// VM write, and the second to see a version takes the first one's
// decoded VM instead of decoding the JSON again. The VMs it returns are
// shared: callers treat them as immutable (copy before changing).
//
// An entry lives until the second reader takes it, a newer version
// replaces it, or a reader sees the VM deleted (Forget): with one reader
// (a server that does not lead) it holds the latest version of each VM,
// the same pointers that reader keeps.
type VMDecoder struct {
	mu sync.Mutex
	m  map[string]*model.VM
}

// NewVMDecoder returns an empty decoder.
func NewVMDecoder() *VMDecoder { return &VMDecoder{m: map[string]*model.VM{}} }

// Decode returns kv's VM (Revision set to its ModRev), decoded by this
// call or by another reader's earlier one. A nil decoder decodes.
func (d *VMDecoder) Decode(kv store.KV) (*model.VM, error) {
	if d == nil {
		return DecodeVM(kv)
	}
	d.mu.Lock()
	if vm := d.m[kv.Key]; vm != nil && vm.Revision == kv.ModRev {
		delete(d.m, kv.Key) // both readers have it now
		d.mu.Unlock()
		return vm, nil
	}
	d.mu.Unlock()
	vm, err := DecodeVM(kv)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	if old := d.m[kv.Key]; old == nil || old.Revision < vm.Revision {
		d.m[kv.Key] = vm
	}
	d.mu.Unlock()
	return vm, nil
}

// Forget drops key's entry up to revision rev (a reader saw the VM
// deleted at rev).
func (d *VMDecoder) Forget(key string, rev int64) {
	if d == nil {
		return
	}
	d.mu.Lock()
	if vm := d.m[key]; vm != nil && vm.Revision <= rev {
		delete(d.m, key)
	}
	d.mu.Unlock()
}

// Len is the number of versions held (tests).
func (d *VMDecoder) Len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.m)
}
