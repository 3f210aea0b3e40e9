package state

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// Image errors.
var (
	// ErrImageNotReady says a VM names an image that does not exist or
	// is not ready; the error also carries a *model.FieldError
	// (spec.image) with the fix.
	ErrImageNotReady = errors.New("state: image not ready")
	// ErrImageInUse says VMs still name the image.
	ErrImageInUse = errors.New("state: image in use")
)

// Event kinds of images.
const (
	EventImageImporting = "image.importing"
	EventImageReady     = "image.ready"
	EventImageFailed    = "image.failed"
	EventImageDeleted   = "image.deleted"
)

// ImageObject is the Event.Object of an image.
func ImageObject(name string) string { return "image/" + name }

// DecodeImage decodes a stored image and sets its revision.
func DecodeImage(kv store.KV) (*model.Image, error) {
	im := &model.Image{}
	if err := decode(kv, im); err != nil {
		return nil, err
	}
	im.Revision = kv.ModRev
	return im, nil
}

func encodeImage(im *model.Image) []byte {
	rev := im.Revision
	im.Revision = 0
	b := encode(im)
	im.Revision = rev
	return b
}

// GetImage returns one image (ErrNotFound when absent).
func (r *Repo) GetImage(ctx context.Context, name string) (*model.Image, error) {
	kv, err := r.st.Get(ctx, store.ImageKey(name))
	if err != nil {
		return nil, fmt.Errorf("state: image %s: %w", name, err)
	}
	return DecodeImage(kv)
}

// ListImages returns every image in name order.
func (r *Repo) ListImages(ctx context.Context) ([]*model.Image, error) {
	kvs, _, err := r.st.List(ctx, store.ImagesPrefix)
	if err != nil {
		return nil, fmt.Errorf("state: list images: %w", err)
	}
	out := make([]*model.Image, 0, len(kvs))
	for _, kv := range kvs {
		im, err := DecodeImage(kv)
		if err != nil {
			return nil, err
		}
		out = append(out, im)
	}
	return out, nil
}

func imageEvent(im *model.Image, kind, msg string) store.Op {
	return EventOp(model.Event{Time: im.UpdatedAt, Kind: kind, Object: ImageObject(im.Name), To: string(im.Phase), Message: msg})
}

// CreateImage stores a new image record (normally phase importing). A
// failed image of the same name is replaced; any other is ErrExists.
func (r *Repo) CreateImage(ctx context.Context, im *model.Image) (*model.Image, error) {
	now := r.now()
	c := *im
	c.Project, c.Revision, c.DeletedAt = "", 0, nil
	c.UID, c.CreatedAt, c.UpdatedAt = NewID(), now, now
	key := store.ImageKey(c.Name)
	cond := store.IfAbsent(key)
	if old, err := r.GetImage(ctx, c.Name); err == nil {
		if old.Phase != model.ImageFailed {
			return nil, fmt.Errorf("%w: image %q (%s)", ErrExists, c.Name, old.Phase)
		}
		cond = store.IfRev(key, old.Revision)
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	msg := fmt.Sprintf("image %s: %s", c.Name, c.Phase)
	if c.Phase == model.ImageImporting {
		msg = fmt.Sprintf("image %s importing from %s", c.Name, c.Source)
	}
	ok, rev, err := r.txn(ctx, []store.Cond{cond}, []store.Op{store.Put(key, encodeImage(&c)), imageEvent(&c, EventImageImporting, msg)})
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%w: image %q was created meanwhile", ErrExists, c.Name)
	}
	c.Revision = rev
	return &c, nil
}

// UpdateImage applies fn with compare-and-swap, retrying on conflict; fn
// may return ErrSkip. A change of phase writes an event.
func (r *Repo) UpdateImage(ctx context.Context, name string, fn func(*model.Image) error) (*model.Image, error) {
	key := store.ImageKey(name)
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if err := backoff(ctx, attempt); err != nil {
			return nil, err
		}
		old, err := r.GetImage(ctx, name)
		if err != nil {
			return nil, err
		}
		nv := *old
		nv.Files = append([]model.ImageFile(nil), old.Files...)
		if err := fn(&nv); err != nil {
			if errors.Is(err, ErrSkip) {
				return old, nil
			}
			return nil, err
		}
		nv.Name, nv.UID, nv.CreatedAt, nv.UpdatedAt = old.Name, old.UID, old.CreatedAt, r.now()
		ops := []store.Op{store.Put(key, encodeImage(&nv))}
		switch {
		case nv.Phase == old.Phase:
		case nv.Phase == model.ImageReady && old.Phase == model.ImageImporting:
			ops = append(ops, imageEvent(&nv, EventImageReady, fmt.Sprintf("image %s ready (%s)", nv.Name, imageSummary(&nv))))
		case nv.Phase == model.ImageFailed:
			ops = append(ops, imageEvent(&nv, EventImageFailed, fmt.Sprintf("image %s failed: %s", nv.Name, nv.Error)))
		}
		ok, rev, err := r.txn(ctx, []store.Cond{store.IfRev(key, old.Revision)}, ops)
		if err != nil {
			return nil, err
		}
		if ok {
			nv.Revision = rev
			return &nv, nil
		}
	}
	return nil, fmt.Errorf("%w: image %s", ErrContention, name)
}

func imageSummary(im *model.Image) string {
	var parts []string
	for _, f := range im.Files {
		parts = append(parts, f.Role+" "+f.Size.String())
	}
	return strings.Join(parts, ", ")
}

// DeleteImage removes an image no VM names, and returns the removed
// record. It first moves the image out of ready (so that a VM admitted
// against the ready record can no longer be stored: CreateVMs guards on
// the image's revision), then checks the VMs, then deletes; an image in
// use goes back to ready and the error names the VMs (ErrImageInUse).
func (r *Repo) DeleteImage(ctx context.Context, name string) (*model.Image, error) {
	marked, err := r.UpdateImage(ctx, name, func(im *model.Image) error {
		if im.Phase == model.ImageImporting {
			return fmt.Errorf("%w: image %s is still importing; wait for it to end", ErrImageInUse, name)
		}
		im.Phase = model.ImageDeleting
		return nil
	})
	if err != nil {
		return nil, err
	}
	vms, _, err := r.ListVMs(ctx, "")
	if err != nil {
		return nil, err
	}
	var users []string
	for _, v := range vms {
		if v.Spec.Image == name {
			users = append(users, v.Key())
		}
	}
	if len(users) > 0 {
		sort.Strings(users)
		if _, rerr := r.restoreImage(ctx, marked); rerr != nil {
			return nil, rerr
		}
		more := ""
		if len(users) > 5 {
			more = fmt.Sprintf(" and %d more", len(users)-5)
			users = users[:5]
		}
		return nil, fmt.Errorf("%w: image %s backs VMs %s%s; delete them first", ErrImageInUse, name, strings.Join(users, ", "), more)
	}
	key := store.ImageKey(name)
	marked.UpdatedAt = r.now()
	ok, _, err := r.txn(ctx, []store.Cond{store.IfRev(key, marked.Revision)},
		[]store.Op{store.Delete(key), imageEvent(marked, EventImageDeleted, "image "+name+" deleted")})
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%w: image %s changed while being deleted; try again", ErrContention, name)
	}
	return marked, nil
}

// ForgetImage deletes an image record whatever its phase (an upload that
// failed); no VM can name an image that never was ready.
func (r *Repo) ForgetImage(ctx context.Context, name string) error {
	im, err := r.GetImage(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if im.Phase == model.ImageReady {
		return fmt.Errorf("%w: image %s is ready; delete it with DeleteImage", ErrImageInUse, name)
	}
	im.UpdatedAt = r.now()
	_, _, err = r.txn(ctx, []store.Cond{store.IfRev(store.ImageKey(name), im.Revision)},
		[]store.Op{store.Delete(store.ImageKey(name)), imageEvent(im, EventImageDeleted, "image "+name+" removed: its import failed")})
	return err
}

// restoreImage undoes DeleteImage's mark.
func (r *Repo) restoreImage(ctx context.Context, marked *model.Image) (*model.Image, error) {
	return r.UpdateImage(ctx, marked.Name, func(im *model.Image) error {
		if im.Phase != model.ImageDeleting {
			return ErrSkip
		}
		im.Phase = model.ImageReady
		if im.Error != "" || !im.Bootable() {
			im.Phase = model.ImageFailed
		}
		return nil
	})
}

// imageConds checks that every image the VMs name is ready and returns
// conditions that hold only while those image records stay as read.
func (r *Repo) imageConds(ctx context.Context, vms []*model.VM) ([]store.Cond, error) {
	seen := map[string]bool{}
	var conds []store.Cond
	for _, v := range vms {
		name := v.Spec.Image
		if name == "" || seen[name] {
			continue
		}
		seen[name] = true
		im, err := r.GetImage(ctx, name)
		if err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return nil, imageNotReady("image %q does not exist", name)
			}
			return nil, err
		}
		if im.Phase != model.ImageReady {
			why := string(im.Phase)
			if im.Error != "" {
				why += ": " + im.Error
			}
			return nil, imageNotReady("image %q is not ready (%s)", name, why)
		}
		conds = append(conds, store.IfRev(store.ImageKey(name), im.Revision))
	}
	return conds, nil
}

// CheckImages is the image part of admission without storing anything
// (dry runs): every image the VMs name exists and is ready.
func (r *Repo) CheckImages(ctx context.Context, vms []*model.VM) error {
	_, err := r.imageConds(ctx, vms)
	return err
}

func imageNotReady(format string, args ...any) error {
	return fmt.Errorf("%w: %w", ErrImageNotReady, &model.FieldError{Field: "spec.image",
		Message: fmt.Sprintf(format, args...) + "; list images with 'vpool image list' (GET /api/v1/images), import one with 'vpool image import'"})
}
