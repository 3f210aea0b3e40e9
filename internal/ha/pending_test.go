package ha

import (
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
)

// Pending counts the VMs asked to run that no host holds yet: placed,
// stopped and deleted VMs take nothing more when placement catches up.
func TestPending(t *testing.T) {
	now := time.Unix(0, 0)
	vm := func(host string, power model.PowerState, deleted bool, vcpus int) *model.VM {
		v := &model.VM{Spec: model.VMSpec{VCPUs: vcpus, Memory: model.Bytes(vcpus) * model.GiB, Power: power}}
		v.Status.Host = host
		if deleted {
			v.DeletedAt = &now
		}
		return v
	}
	got := Pending([]*model.VM{
		vm("", model.PowerRunning, false, 1),   // pending: counts
		vm("", model.PowerRunning, false, 2),   // pending: counts
		vm("h1", model.PowerRunning, false, 4), // placed
		vm("", model.PowerStopped, false, 8),   // stopped
		vm("", model.PowerRunning, true, 16),   // being deleted
	})
	if want := (model.Resources{CPUs: 3, Memory: 3 * model.GiB}); got != want {
		t.Fatalf("Pending = %+v, want %+v", got, want)
	}
}
