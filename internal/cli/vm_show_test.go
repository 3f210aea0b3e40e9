package cli

import (
	"testing"

	"github.com/vpool/vpool/internal/model"
)

func TestCloudInitText(t *testing.T) {
	for _, c := range []struct {
		name string
		ci   *model.CloudInit
		want string
	}{
		{"none", nil, ""},
		{"empty", &model.CloudInit{}, "an empty seed"},
		{"all", &model.CloudInit{Hostname: "web", SSHKeys: []string{"a", "b"}, UserDataSize: 70,
			UserDataDigest: "hmac-sha256:0123456789abcdef0123456789abcdef"},
			"host name web, 2 SSH key(s), user data 70 bytes (hmac-sha256:0123456789abcdef…, write-only)"},
	} {
		if got := cloudInitText(c.ci); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}
