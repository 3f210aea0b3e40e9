package state

import (
	"fmt"
	"testing"

	"github.com/vpool/vpool/internal/model"
)

// An admission batch stays under a MiB whatever its VMs' cloud-init
// seeds (sealed user data of 64 KiB is 87 KiB in the record): etcd
// refuses a transaction over 1.5 MiB, and with it every call in it.
func TestAdmitBatchesFitTheStore(t *testing.T) {
	sealed := &model.CloudInit{UserDataSize: model.MaxUserData, UserDataDigest: "hmac-sha256:00",
		UserDataSealed: &model.SealedValue{KeyID: "0011223344556677", Data: make([]byte, model.MaxUserData+model.SealOverhead)}}
	for _, c := range []struct {
		name      string
		ci        *model.CloudInit
		wantFirst int // calls in the first batch
	}{
		{"no seeds: the operations budget", nil, admitBudget / 4}, // a VM and its event, a usage key and its guard
		{"sealed 64 KiB seeds: the bytes budget", sealed, admitBytes / reqBytes([]*model.VM{{Spec: model.VMSpec{CloudInit: sealed}}})},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := &Repo{}
			a := &admitter{running: 1}
			for i := range 40 {
				vm := &model.VM{Meta: model.Meta{Name: "v", Project: fmt.Sprintf("p%d", i)}, Spec: model.VMSpec{CloudInit: c.ci}}
				a.pending = append(a.pending, &admitReq{repo: r, project: vm.Project, vms: []*model.VM{vm}})
			}
			batch := a.take()
			size := 0
			for _, req := range batch {
				size += reqBytes(req.vms)
			}
			if len(batch) != c.wantFirst || size > admitBytes {
				t.Fatalf("first batch: %d calls, about %d bytes; want %d calls within %d bytes", len(batch), size, c.wantFirst, admitBytes)
			}
		})
	}
}
