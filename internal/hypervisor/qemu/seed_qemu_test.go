package qemu

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
)

// TestSeedReachesTheGuest boots a VM with a cloud-init seed, as its host
// builds it from the user data the server opened for it, and reads the
// user-data file back through the guest's own CD-ROM device in the
// running QEMU (qemu-io on the cidata device, as QEMU's VM user): the
// document the tenant sent is what the guest's cloud-init reads. A spec
// whose user data is still sealed writes no seed and starts nothing.
func TestSeedReachesTheGuest(t *testing.T) {
	g := heavy(t)
	d := newDriver(t, testConfig(t, shortTempDir(t)))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const doc = "#cloud-config\npassword: seed-reaches-the-guest-4d1c\nruncmd: [echo hello]\n"

	sealed := vmConfig(g, "sealed")
	sealed.Spec.CloudInit = &model.CloudInit{UserDataSize: len(doc), UserDataDigest: "hmac-sha256:00",
		UserDataSealed: &model.SealedValue{KeyID: "0011223344556677", Data: make([]byte, len(doc)+model.SealOverhead)}}
	mustDo(t, "Create sealed", d.Create(ctx, sealed))
	if err := d.Start(ctx, sealed.ID); !errors.Is(err, errSealedSeed) {
		t.Fatalf("Start with sealed user data: %v, want %v", err, errSealedSeed)
	}
	if _, err := os.Stat(filepath.Join(d.vmDir(sealed.ID), "seed.iso")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a seed was written for sealed user data: %v", err)
	}

	vc := vmConfig(g, "seeded")
	vc.Spec.CloudInit = &model.CloudInit{Hostname: "seeded", UserData: doc, UserDataSize: len(doc), UserDataDigest: "hmac-sha256:00"}
	mustDo(t, "Create", d.Create(ctx, vc))
	mustDo(t, "Start", d.Start(ctx, vc.ID))
	waitReady(t, d, vc.ID)

	seed := filepath.Join(d.vmDir(vc.ID), "seed.iso")
	img, err := os.ReadFile(seed)
	mustDo(t, "read the seed", err)
	_, files := readISO(t, img, true)
	if files["user-data"] != doc {
		t.Fatalf("the seed's user-data is %q, want the document", files["user-data"])
	}
	off := bytes.Index(img, []byte(doc))
	if off < 0 || off%sectorSize != 0 {
		t.Fatalf("the document is at offset %d of the seed", off)
	}
	v, err := d.get(vc.ID)
	mustDo(t, "get", err)
	v.mu.Lock()
	p, rec := v.proc, v.rec
	v.mu.Unlock()
	if rec.User != nil {
		checkOwner(t, seed, 0, 0o640) // root's, read-only for the VM's group
	}
	// qemu-io prints on QEMU's standard output: the VM's qemu.log
	var out string
	cmd := "qemu-io -d cidata \"read -v " + strconv.Itoa(off) + " " + strconv.Itoa(sectorSize) + "\""
	mustDo(t, "qemu-io", p.qmp.Execute(ctx, "human-monitor-command", map[string]any{"command-line": cmd}, &out))
	q, err := os.ReadFile(filepath.Join(d.vmDir(vc.ID), "qemu.log"))
	mustDo(t, "read qemu.log", err)
	dump := out + string(q)
	if i := strings.LastIndex(dump, fmt.Sprintf("%08x:", off)); i >= 0 {
		dump = dump[i:]
	}
	if got := hexDump(dump); !bytes.HasPrefix(got, []byte(doc)) {
		t.Fatalf("the guest's CD-ROM reads %q at the user-data file, want the document\n%s", got, tail(dump, 1500))
	}
}

// hexDump decodes the bytes of qemu-io's "read -v" output
// ("00008000:  23 63 6c 6f ...  #clo...").
func hexDump(out string) []byte {
	var b []byte
	for _, line := range strings.Split(out, "\n") {
		_, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		for i, f := range strings.Fields(rest) {
			if i >= 16 || len(f) != 2 {
				break
			}
			x, err := hex.DecodeString(f)
			if err != nil {
				break
			}
			b = append(b, x...)
		}
	}
	return b
}
