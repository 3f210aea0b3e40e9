package qemu

import (
	"bytes"
	bin "encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/testenv"
)

// readISO parses what buildISO wrote, the way a reader does: the volume
// descriptors from sector 16, then the root directory of the primary
// (joliet false) or Joliet (true) tree.
func readISO(t *testing.T, img []byte, joliet bool) (label string, files map[string]string) {
	t.Helper()
	files = map[string]string{}
	for s := 16; ; s++ {
		vd := img[s*sectorSize : (s+1)*sectorSize]
		if string(vd[1:6]) != "CD001" {
			t.Fatalf("sector %d is no volume descriptor", s)
		}
		if vd[0] == 255 {
			t.Fatalf("no %s volume descriptor", map[bool]string{false: "primary", true: "Joliet"}[joliet])
		}
		isJoliet := vd[0] == 2 && string(vd[88:91]) == "%/E"
		if (vd[0] == 1 && !joliet) || (isJoliet && joliet) {
			label = decodeID(vd[40:72], joliet)
			root := vd[156:190]
			ext, size := bin.LittleEndian.Uint32(root[2:]), bin.LittleEndian.Uint32(root[10:])
			if bin.BigEndian.Uint32(root[6:]) != ext {
				t.Fatal("root extent: the two byte orders disagree")
			}
			dir := img[int(ext)*sectorSize : int(ext)*sectorSize+int(size)]
			for off := 0; off < len(dir) && dir[off] != 0; off += int(dir[off]) {
				r := dir[off : off+int(dir[off])]
				id := r[33 : 33+int(r[32])]
				if r[25]&2 != 0 {
					continue // . and ..
				}
				fe, fs := bin.LittleEndian.Uint32(r[2:]), bin.LittleEndian.Uint32(r[10:])
				files[decodeID(id, joliet)] = string(img[int(fe)*sectorSize : int(fe)*sectorSize+int(fs)])
			}
			return label, files
		}
	}
}

func decodeID(b []byte, ucs2 bool) string {
	if !ucs2 {
		return strings.TrimRight(string(b), " ")
	}
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		u = append(u, uint16(b[i])<<8|uint16(b[i+1]))
	}
	return strings.TrimRight(string(utf16.Decode(u)), " \x00")
}

func TestCloudInitSeed(t *testing.T) {
	at := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name     string
		ci       model.CloudInit
		metaHas  []string
		userData string
	}{
		{"hostname and keys", model.CloudInit{Hostname: "web1.example", SSHKeys: []string{"ssh-ed25519 AAAAC3Nza me@laptop", "ssh-rsa AAAAB3 other"}},
			[]string{`instance-id: "uid-1"`, `local-hostname: "web1.example"`, "public-keys:", `  - "ssh-ed25519 AAAAC3Nza me@laptop"`, `  - "ssh-rsa AAAAB3 other"`},
			"#cloud-config\n{}\n"},
		{"user-data as given, host name from the VM", model.CloudInit{UserData: "#!/bin/sh\necho hello > /tmp/x\n"},
			[]string{`local-hostname: "web"`}, "#!/bin/sh\necho hello > /tmp/x\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ci := tt.ci
			cfg := hypervisor.VMConfig{ID: "p.web", Name: "web", UID: "uid-1", Spec: model.VMSpec{CloudInit: &ci}}
			img := buildISO(seedLabel, seedFiles(cfg), at)
			if len(img)%sectorSize != 0 {
				t.Fatalf("image of %d bytes is not whole sectors", len(img))
			}
			label, files := readISO(t, img, true)
			if label != "cidata" {
				t.Errorf("Joliet label %q, want cidata", label)
			}
			for _, want := range tt.metaHas {
				if !strings.Contains(files["meta-data"], want+"\n") {
					t.Errorf("meta-data lacks %q:\n%s", want, files["meta-data"])
				}
			}
			if files["user-data"] != tt.userData {
				t.Errorf("user-data = %q, want %q", files["user-data"], tt.userData)
			}
			plabel, pfiles := readISO(t, img, false)
			if plabel != "cidata" || pfiles["USER_DAT.;1"] != tt.userData || pfiles["META_DAT.;1"] == "" {
				t.Errorf("primary tree: label %q, files %v", plabel, pfiles)
			}
			if again := buildISO(seedLabel, seedFiles(cfg), at); !bytes.Equal(img, again) {
				t.Error("the same seed twice gives different bytes")
			}
			// blkid must see what cloud-init looks for (last: without
			// blkid the checks above have run and the case then skips,
			// or fails under VPOOL_REQUIRE_HEAVY=1).
			blkid := testenv.MustHaveTool(t, "blkid", "apt-get install util-linux")
			p := filepath.Join(t.TempDir(), "seed.iso")
			if err := os.WriteFile(p, img, 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(blkid, "-p", "-o", "export", p).Output()
			if err != nil || !strings.Contains(string(out), "LABEL=cidata") || !strings.Contains(string(out), "TYPE=iso9660") {
				t.Errorf("blkid: %v\n%s", err, out)
			}
		})
	}
}

func TestCloudInitValidation(t *testing.T) {
	for _, tt := range []struct {
		name string
		ci   model.CloudInit
		ok   bool
	}{
		{"fine", model.CloudInit{Hostname: "a.b-c", SSHKeys: []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAID4vpeQQweL+lBLlerWd0ofdQmqkSUOcmk1KIBv/AccB x"}}, true},
		{"not a key", model.CloudInit{SSHKeys: []string{"ssh-ed25519 AAAA x"}}, false},
		{"bad host name", model.CloudInit{Hostname: "under_score"}, false},
		{"two keys in one", model.CloudInit{SSHKeys: []string{"ssh-ed25519 AAAA x\nssh-rsa BBBB y"}}, false},
		{"no key", model.CloudInit{SSHKeys: []string{"garbage"}}, false},
		{"user-data too big", model.CloudInit{UserData: strings.Repeat("x", model.MaxUserData+1)}, false},
	} {
		if err := tt.ci.Validate(); (err == nil) != tt.ok {
			t.Errorf("%s: Validate() = %v", tt.name, err)
		}
	}
}
