package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSSHKeyFileIsChecked: a key file line that is not a public key is
// refused before anything is sent, naming the file and the line.
func TestSSHKeyFileIsChecked(t *testing.T) {
	dir := t.TempDir()
	good := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAID4vpeQQweL+lBLlerWd0ofdQmqkSUOcmk1KIBv/AccB me@laptop"
	for _, tt := range []struct {
		name, content, err string
	}{
		{"good", "# my keys\n" + good + "\n\n", ""},
		{"shell", good + "\nx;rm -rf /\n", "line 2"},
		{"truncated", "ssh-ed25519 AAAA me\n", "line 1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, tt.name+".pub")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			o := cloudInitOpts{sshKeys: []string{path}}
			ci, err := o.build(nil)
			if tt.err == "" {
				if err != nil || ci == nil || len(ci.SSHKeys) != 1 || ci.SSHKeys[0] != good {
					t.Fatalf("build() = %+v, %v", ci, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) || !strings.Contains(err.Error(), path) {
				t.Fatalf("build() error = %v, want one naming %s %s", err, path, tt.err)
			}
		})
	}
}
