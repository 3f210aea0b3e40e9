package devenv_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/client"
	"github.com/vpool/vpool/internal/devenv"
	"github.com/vpool/vpool/internal/hypervisor/qemu"
	"github.com/vpool/vpool/internal/hypervisor/sim"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store/memstore"
	"github.com/vpool/vpool/internal/testenv"
)

func hexSum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// TestImagesThroughTheAPI: an upload becomes a ready image; a VM naming a
// missing image is refused at admission (nothing stored, nothing placed);
// a host fetches the image's files into its cache over the agent protocol,
// checksummed; an image in use cannot be deleted; a URL import (from a
// loopback web server) runs in the background and a wrong checksum fails
// it with the reason.
func TestImagesThroughTheAPI(t *testing.T) {
	st := memstore.New()
	t.Cleanup(func() { st.Close() })
	cl := startCluster(t, devenv.ServerConfig{Store: st}, 0)
	cl.fetchImages = true
	cl.hosts["h1"] = sim.MustHost(sim.Config{Name: "h1", CPUs: 8, Memory: 16 * model.GiB})
	cl.startAgent("h1")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	dir := t.TempDir()
	kernel, initrd := []byte("a kernel"), []byte("an initrd")
	kpath, ipath := filepath.Join(dir, "vmlinux"), filepath.Join(dir, "initrd")
	os.WriteFile(kpath, kernel, 0o644)
	os.WriteFile(ipath, initrd, 0o644)
	im, err := cl.c.UploadImage(ctx, api.ImageImportRequest{Name: "tiny", Cmdline: "console=ttyS0"},
		[]client.UploadFile{{Role: model.ImageKernel, Path: kpath}, {Role: model.ImageInitrd, Path: ipath}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if im.Phase != model.ImageReady || im.File(model.ImageKernel).SHA256 != hexSum(kernel) || im.File(model.ImageInitrd).SHA256 != hexSum(initrd) {
		t.Fatalf("uploaded image = %+v", im)
	}

	spec := model.VMSpec{VCPUs: 1, Memory: 256 * model.MiB, Image: "nope", Disks: []model.Disk{{Name: "root", Size: model.GiB}}}
	_, err = cl.c.CreateVM(ctx, api.DefaultProject, api.VMCreateRequest{Name: "bad", Spec: spec})
	var apiErr *api.Error
	if !asAPIError(err, &apiErr) || apiErr.Code != api.CodeInvalidField || apiErr.Field != "spec.image" || !strings.Contains(apiErr.Message, "vpool image list") {
		t.Fatalf("create with a missing image = %v; want invalid_field on spec.image naming 'vpool image list'", err)
	}
	if _, err := cl.c.GetVM(ctx, api.DefaultProject, "bad"); !client.IsNotFound(err) {
		t.Fatalf("the refused VM exists: %v", err)
	}
	if _, err := cl.c.DryRunVM(ctx, api.DefaultProject, api.VMCreateRequest{Name: "bad", Spec: spec}); !client.HasCode(err, api.CodeInvalidField) {
		t.Fatalf("dry run with a missing image = %v, want invalid_field", err)
	}

	spec.Image = "tiny"
	if _, err := cl.c.CreateVM(ctx, api.DefaultProject, api.VMCreateRequest{Name: "web1", Spec: spec}); err != nil {
		t.Fatal(err)
	}
	cl.waitPhase("web1", model.PhaseRunning)
	in, ok := cl.driverInfo("h1", api.DefaultProject, "web1")
	if !ok || in.Config.Image == nil {
		t.Fatalf("the host's VM has no image: %+v", in)
	}
	got, err := os.ReadFile(in.Config.Image.Kernel)
	if err != nil || string(got) != string(kernel) || filepath.Base(in.Config.Image.Kernel) != hexSum(kernel) || in.Config.Image.Cmdline != "console=ttyS0" {
		t.Fatalf("cached kernel %s = %q (%v), image %+v", in.Config.Image.Kernel, got, err, in.Config.Image)
	}
	if err := cl.c.DeleteImage(ctx, "tiny"); !client.HasCode(err, api.CodeConflict) || !strings.Contains(err.Error(), "default/web1") {
		t.Fatalf("delete an image in use = %v, want a conflict naming default/web1", err)
	}

	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(kernel) }))
	defer web.Close()
	if _, err := cl.c.ImportImageURL(ctx, api.ImageImportRequest{Name: "fromweb", KernelURL: web.URL + "/vmlinux"}); err != nil {
		t.Fatal(err)
	}
	if im, err := cl.c.WaitImage(ctx, "fromweb", nil); err != nil || im.Phase != model.ImageReady || im.File(model.ImageKernel).SHA256 != hexSum(kernel) {
		t.Fatalf("URL import = %+v, %v", im, err)
	}
	bad := strings.Repeat("0", 64)
	if _, err := cl.c.ImportImageURL(ctx, api.ImageImportRequest{Name: "badsum", KernelURL: web.URL + "/vmlinux", SHA256: bad}); err != nil {
		t.Fatal(err)
	}
	if im, err := cl.c.WaitImage(ctx, "badsum", nil); err != nil || im.Phase != model.ImageFailed || !strings.Contains(im.Error, bad) {
		t.Fatalf("URL import with a wrong checksum = %+v, %v; want failed naming the checksum", im, err)
	}
	if _, err := cl.c.ImportImageURL(ctx, api.ImageImportRequest{Name: "ftp", KernelURL: "ftp://127.0.0.1/x"}); !client.HasCode(err, api.CodeInvalidField) {
		t.Fatalf("an ftp URL = %v, want invalid_field", err)
	}
}

func asAPIError(err error, target **api.Error) bool {
	e, ok := err.(*api.Error)
	if ok {
		*target = e
	}
	return ok
}

// TestDiskImageSizesTheFirstDisk: a disk image is converted to qcow2 by
// qemu-img; a VM whose first disk is smaller than the image (or that has
// none) gets one of the image's size, so quota and placement count what
// the host makes.
func TestDiskImageSizesTheFirstDisk(t *testing.T) {
	testenv.MustHaveTool(t, "qemu-img", "apt-get install qemu-utils")
	st := memstore.New()
	t.Cleanup(func() { st.Close() })
	cl := startCluster(t, devenv.ServerConfig{Store: st, ImageTool: qemu.ImageTool{}}, 0)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	raw := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(raw, make([]byte, 8*model.MiB), 0o644); err != nil {
		t.Fatal(err)
	}
	im, err := cl.c.UploadImage(ctx, api.ImageImportRequest{Name: "appliance"}, []client.UploadFile{{Role: model.ImageDisk, Path: raw}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d := im.File(model.ImageDisk); d == nil || d.Format != "qcow2" || im.VirtualSize != 8*model.MiB {
		t.Fatalf("imported disk image: %+v", im)
	}
	for _, tc := range []struct {
		name  string
		disks []model.Disk
		want  model.Bytes
	}{
		{"small", []model.Disk{{Name: "root", Size: model.MiB}}, 8 * model.MiB},
		{"none", nil, 8 * model.MiB},
		{"big", []model.Disk{{Name: "root", Size: model.GiB}}, model.GiB},
	} {
		vm, err := cl.c.CreateVM(ctx, api.DefaultProject, api.VMCreateRequest{Name: tc.name, Spec: model.VMSpec{VCPUs: 1, Memory: 128 * model.MiB,
			Image: "appliance", Disks: tc.disks}})
		if err != nil {
			t.Fatal(err)
		}
		if len(vm.Spec.Disks) == 0 || vm.Spec.Disks[0].Size != tc.want {
			t.Errorf("%s: first disk %+v, want %s", tc.name, vm.Spec.Disks, tc.want)
		}
	}
}
