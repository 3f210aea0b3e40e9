package state

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

const testSum = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// readyImage stores an image as an import does: importing, then ready.
func readyImage(t *testing.T, r *Repo, name string) *model.Image {
	t.Helper()
	ctx := context.Background()
	if _, err := r.CreateImage(ctx, &model.Image{Meta: model.Meta{Name: name}, Phase: model.ImageImporting, Source: "upload"}); err != nil {
		t.Fatal(err)
	}
	im, err := r.UpdateImage(ctx, name, func(im *model.Image) error {
		im.Phase = model.ImageReady
		im.Files = []model.ImageFile{{Role: model.ImageKernel, Size: 10, SHA256: testSum}}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return im
}

func TestImageAdmission(t *testing.T) {
	r := newRepo(t)
	ctx := context.Background()
	mustProject(t, r, "p", model.Quota{})
	readyImage(t, r, "busybox")
	if _, err := r.CreateImage(ctx, &model.Image{Meta: model.Meta{Name: "half"}, Phase: model.ImageImporting}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		image string
		msg   string // "" = admitted
	}{
		{image: "busybox"},
		{image: ""},
		{image: "debian", msg: `image "debian" does not exist`},
		{image: "half", msg: `image "half" is not ready (importing)`},
	}
	for i, tt := range tests {
		t.Run(tt.image, func(t *testing.T) {
			vm := mkVM("p", "vm"+string(rune('a'+i)), 1, 64*model.MiB)
			vm.Spec.Image = tt.image
			_, err := r.CreateVM(ctx, vm)
			if tt.msg == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var fe *model.FieldError
			if !errors.Is(err, ErrImageNotReady) || !errors.As(err, &fe) || fe.Field != "spec.image" ||
				!strings.Contains(fe.Message, tt.msg) || !strings.Contains(fe.Message, "vpool image list") {
				t.Fatalf("CreateVM = %v; want ErrImageNotReady on spec.image with %q and the fix", err, tt.msg)
			}
			if _, err := r.GetVM(ctx, "p", vm.Name); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("a refused VM was stored: %v", err)
			}
			if u, _, _ := r.GetUsage(ctx, "p"); u.VMs != 2 {
				t.Fatalf("usage counts %d VMs, want the 2 admitted", u.VMs)
			}
		})
	}
}

func TestDeleteImage(t *testing.T) {
	r := newRepo(t)
	ctx := context.Background()
	mustProject(t, r, "p", model.Quota{})
	readyImage(t, r, "busybox")
	vm := mkVM("p", "web1", 1, 64*model.MiB)
	vm.Spec.Image = "busybox"
	if _, err := r.CreateVM(ctx, vm); err != nil {
		t.Fatal(err)
	}
	if _, err := r.DeleteImage(ctx, "busybox"); !errors.Is(err, ErrImageInUse) || !strings.Contains(err.Error(), "p/web1") {
		t.Fatalf("delete an image in use = %v, want ErrImageInUse naming p/web1", err)
	}
	if im, _ := r.GetImage(ctx, "busybox"); im.Phase != model.ImageReady {
		t.Fatalf("after a refused delete the image is %s, want ready", im.Phase)
	}
	if err := r.FinishDeleteVM(ctx, "p", "web1"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.DeleteImage(ctx, "busybox"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.GetImage(ctx, "busybox"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("image still there: %v", err)
	}
	evs, _, _ := r.ListEvents(ctx, 0, "")
	var kinds []string
	for _, e := range evs {
		if strings.HasPrefix(e.Kind, "image.") {
			kinds = append(kinds, e.Kind)
		}
	}
	if got := strings.Join(kinds, ","); got != "image.importing,image.ready,image.deleted" {
		t.Fatalf("image events = %s", got)
	}
}

// A create admitted against a ready image cannot land once the image is
// being deleted: the VM's transaction is guarded on the image's revision.
func TestImageGuardOnCreate(t *testing.T) {
	r := newRepo(t)
	ctx := context.Background()
	mustProject(t, r, "p", model.Quota{})
	readyImage(t, r, "busybox")
	vm := mkVM("p", "web1", 1, 64*model.MiB)
	vm.Spec.Image = "busybox"
	conds, err := r.imageConds(ctx, []*model.VM{vm})
	if err != nil || len(conds) != 1 {
		t.Fatalf("imageConds = %v, %v", conds, err)
	}
	if _, err := r.UpdateImage(ctx, "busybox", func(im *model.Image) error { im.Phase = model.ImageDeleting; return nil }); err != nil {
		t.Fatal(err)
	}
	ok, _, err := r.txn(ctx, conds, []store.Op{store.Put(store.VMKey("p", "web1"), encodeVM(vm))})
	if err != nil || ok {
		t.Fatalf("a create guarded on the old image revision went through (ok %v, err %v)", ok, err)
	}
}

func TestCreateImageReplacesOnlyFailed(t *testing.T) {
	r := newRepo(t)
	ctx := context.Background()
	readyImage(t, r, "busybox")
	if _, err := r.CreateImage(ctx, &model.Image{Meta: model.Meta{Name: "busybox"}, Phase: model.ImageImporting}); !errors.Is(err, ErrExists) {
		t.Fatalf("create over a ready image = %v, want ErrExists", err)
	}
	if _, err := r.CreateImage(ctx, &model.Image{Meta: model.Meta{Name: "cloud"}, Phase: model.ImageImporting}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.UpdateImage(ctx, "cloud", func(im *model.Image) error {
		im.Phase, im.Error = model.ImageFailed, "404"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.CreateImage(ctx, &model.Image{Meta: model.Meta{Name: "cloud"}, Phase: model.ImageImporting}); err != nil {
		t.Fatalf("create over a failed import = %v, want it replaced", err)
	}
}
