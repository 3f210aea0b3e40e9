package agent

import (
	"context"
	"errors"
	"testing"

	"github.com/vpool/vpool/internal/model"
)

// A VM whose user data reached the host still sealed (the server could
// not open it) is not created: a seed without it would boot a guest
// without its users, keys or set-up. User data in clear goes to the
// driver as it came.
func TestSealedUserDataIsRefused(t *testing.T) {
	a := &Agent{}
	for _, c := range []struct {
		name string
		ci   *model.CloudInit
		want error
	}{
		{"sealed", &model.CloudInit{UserDataSize: 3, UserDataSealed: &model.SealedValue{KeyID: "k", Data: make([]byte, 40)}}, errSealedUserData},
		{"in clear", &model.CloudInit{UserData: "#cloud-config\n", UserDataSize: 14}, nil},
		{"none", nil, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			vm := &model.VM{Meta: model.Meta{Name: "web", Project: "p"}, Spec: model.VMSpec{VCPUs: 1, Memory: 64 * model.MiB, CloudInit: c.ci}}
			cfg, err := a.vmConfig(context.Background(), vm)
			if !errors.Is(err, c.want) {
				t.Fatalf("vmConfig: %v, want %v", err, c.want)
			}
			if err == nil && c.ci != nil && cfg.Spec.CloudInit.UserData != c.ci.UserData {
				t.Fatalf("the driver gets user data %q", cfg.Spec.CloudInit.UserData)
			}
		})
	}
}
