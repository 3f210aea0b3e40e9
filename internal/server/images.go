package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/imagepool"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
)

// imageEndpoints are the user API of boot images.
func (s *Server) imageEndpoints() []endpoint {
	return []endpoint{
		{method: "GET", path: "/api/v1/images", handle: s.listImages, resp: api.ImageList{}, status: 200},
		{method: "POST", path: "/api/v1/images", handle: s.importImage, req: api.ImageImportRequest{}, resp: model.Image{}, status: 202},
		{method: "GET", path: "/api/v1/images/{name}", handle: s.getImage, resp: model.Image{}, status: 200},
		{method: "DELETE", path: "/api/v1/images/{name}", handle: s.deleteImage, status: 204},
	}
}

// imageAgentEndpoints let hosts fetch image files into their caches.
func (s *Server) imageAgentEndpoints() []agentEndpoint {
	return []agentEndpoint{
		{method: "GET", path: "/agent/v1/images/{name}", handle: s.agentImage, needCert: true, resp: model.Image{}, status: 200},
		{method: "GET", path: "/agent/v1/images/{name}/files/{sha256}", handle: s.agentImageFile, needCert: true, status: 200},
	}
}

func imageNotFound(err error, name string) error {
	if errors.Is(err, store.ErrNotFound) {
		return notFound("image %q not found (list images with 'vpool image list')", name)
	}
	return err
}

func (s *Server) listImages(w http.ResponseWriter, r *http.Request, p *principal) error {
	items, err := s.repo.ListImages(r.Context())
	if err != nil {
		return err
	}
	out := api.ImageList{Items: make([]model.Image, len(items))}
	for i, it := range items {
		out.Items[i] = *it
	}
	reply(w, http.StatusOK, p, out)
	return nil
}

func (s *Server) getImage(w http.ResponseWriter, r *http.Request, p *principal) error {
	name := r.PathValue("name")
	im, err := s.repo.GetImage(r.Context(), name)
	if err != nil {
		return imageNotFound(err, name)
	}
	reply(w, http.StatusOK, p, im)
	return nil
}

func (s *Server) deleteImage(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := requireAdmin(p); err != nil {
		return forbidden("images are cluster-wide: deleting one needs an admin token")
	}
	name := r.PathValue("name")
	im, err := s.repo.DeleteImage(r.Context(), name)
	switch {
	case errors.Is(err, state.ErrImageInUse):
		return conflict("%s", strings.TrimPrefix(err.Error(), "state: image in use: "))
	case err != nil:
		return imageNotFound(err, name)
	}
	if s.cfg.Images != nil && im.Pool == s.cfg.Images.ID() {
		if err := s.removeImageFiles(r.Context(), im); err != nil {
			s.log.Warn("image files left in the pool", "image", name, "err", err)
		}
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// removeImageFiles deletes the files of im that no other image shares.
func (s *Server) removeImageFiles(ctx context.Context, im *model.Image) error {
	others, err := s.repo.ListImages(ctx)
	if err != nil {
		return err
	}
	keep := map[string]bool{}
	for _, o := range others {
		if o.Name == im.Name {
			continue
		}
		for _, f := range o.Files {
			keep[f.SHA256] = true
		}
	}
	sums := make([]string, 0, len(im.Files))
	for _, f := range im.Files {
		sums = append(sums, f.SHA256)
	}
	return s.cfg.Images.Remove(sums, keep)
}

// checkImport validates an import request (URLs apply to a JSON import).
func checkImport(req *api.ImageImportRequest, urls bool) error {
	im := model.Image{Meta: model.Meta{Name: req.Name}, Description: req.Description, Cmdline: req.Cmdline}
	if err := im.Validate(); err != nil {
		return err
	}
	if req.SHA256 != "" {
		if err := model.ValidSHA256("sha256", strings.ToLower(req.SHA256)); err != nil {
			return err
		}
	}
	if !urls {
		if req.URL != "" || req.KernelURL != "" || req.InitrdURL != "" {
			return fieldError("url", "an upload carries its files as parts; give no URLs")
		}
		return nil
	}
	if req.URL == "" && req.KernelURL == "" {
		return fieldError("url", "give the URL of a disk image (qcow2 or raw), or a kernelUrl")
	}
	if req.InitrdURL != "" && req.KernelURL == "" {
		return fieldError("initrdUrl", "an initrd needs a kernelUrl")
	}
	for field, u := range map[string]string{"url": req.URL, "kernelUrl": req.KernelURL, "initrdUrl": req.InitrdURL} {
		if u == "" {
			continue
		}
		if err := imagepool.CheckURL(u); err != nil {
			return fieldError(field, "%s", strings.TrimPrefix(err.Error(), "imagepool: "))
		}
	}
	return nil
}

func (s *Server) importImage(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := requireAdmin(p); err != nil {
		return forbidden("images are cluster-wide: importing one needs an admin token")
	}
	if s.cfg.Images == nil {
		return errf(http.StatusNotImplemented, api.CodeUnavailable, "", "this server has no image pool")
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt == "multipart/form-data" {
		return s.uploadImage(w, r)
	}
	var req api.ImageImportRequest
	if he := decodeJSON(w, r, &req); he != nil {
		return he
	}
	if err := checkImport(&req, true); err != nil {
		return err
	}
	if req.URL != "" && !s.cfg.Images.CanConvert() {
		return errf(http.StatusNotImplemented, api.CodeUnavailable, "url", "this server cannot convert disk images: install qemu-img (qemu-utils)")
	}
	srcs := []string{}
	for _, u := range []string{req.URL, req.KernelURL, req.InitrdURL} {
		if u != "" {
			srcs = append(srcs, u)
		}
	}
	im, err := s.repo.CreateImage(r.Context(), &model.Image{Meta: model.Meta{Name: req.Name}, Description: req.Description,
		Phase: model.ImageImporting, Source: strings.Join(srcs, " "), Cmdline: req.Cmdline, Pool: s.cfg.Images.ID()})
	if err != nil {
		return err
	}
	s.imports.Add(1)
	go func() {
		defer s.imports.Done()
		s.runURLImport(req)
	}()
	writeJSON(w, http.StatusAccepted, im)
	return nil
}

// importFile is one file of an import: a URL to fetch or a reader.
type importFile struct {
	role string
	url  string
	r    io.Reader
	sha  string
}

// runURLImport downloads the files of a JSON import and marks the image
// ready or failed. It ends early when the server stops.
func (s *Server) runURLImport(req api.ImageImportRequest) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.drain:
			cancel()
		case <-ctx.Done():
		}
	}()
	files := []importFile{{role: model.ImageDisk, url: req.URL}, {role: model.ImageKernel, url: req.KernelURL}, {role: model.ImageInitrd, url: req.InitrdURL}}
	var got []importFile
	for _, f := range files {
		if f.url != "" {
			got = append(got, f)
		}
	}
	got[0].sha = req.SHA256
	if err := s.storeImageFiles(ctx, req.Name, got); err != nil {
		if ctx.Err() != nil {
			err = errors.New("the server stopped during the import; import it again")
		}
		s.failImport(req.Name, err)
	}
}

// storeImageFiles puts each file in the pool, reporting progress on the
// record, and marks the image ready.
func (s *Server) storeImageFiles(ctx context.Context, name string, files []importFile) error {
	var stored []model.ImageFile
	var vsize model.Bytes
	var last time.Time
	for _, f := range files {
		progress := func(pr model.ImageProgress) {
			if time.Since(last) < time.Second && pr.Step == "download" {
				return
			}
			last = time.Now()
			pr.Step = f.role + " " + pr.Step
			_, _ = s.repo.UpdateImage(ctx, name, func(im *model.Image) error {
				im.Progress = &pr
				return nil
			})
		}
		var mf model.ImageFile
		var vs model.Bytes
		var err error
		if f.url != "" {
			mf, vs, err = s.cfg.Images.Fetch(ctx, nil, f.role, f.url, f.sha, progress)
		} else {
			mf, vs, err = s.cfg.Images.Put(ctx, f.role, f.r, 0, f.sha, progress)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", f.role, err)
		}
		stored = append(stored, mf)
		vsize = max(vsize, vs)
	}
	_, err := s.repo.UpdateImage(ctx, name, func(im *model.Image) error {
		im.Files, im.VirtualSize, im.Progress, im.Error = stored, vsize, nil, ""
		im.Phase = model.ImageReady
		return im.Validate()
	})
	return err
}

// failImport marks an import failed, with a context of its own: the
// import's may have ended.
func (s *Server) failImport(name string, cause error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msg := strings.ReplaceAll(cause.Error(), "imagepool: ", "")
	_, err := s.repo.UpdateImage(ctx, name, func(im *model.Image) error {
		if im.Phase != model.ImageImporting {
			return state.ErrSkip
		}
		im.Phase, im.Error, im.Progress = model.ImageFailed, msg, nil
		return nil
	})
	if err != nil {
		s.log.Warn("could not mark an image import failed", "image", name, "cause", msg, "err", err)
	}
}

// failInterruptedImports marks failed the imports into this server's pool
// that a previous run of the server left importing.
func (s *Server) failInterruptedImports(ctx context.Context) error {
	if s.cfg.Images == nil {
		return nil
	}
	ims, err := s.repo.ListImages(ctx)
	if err != nil {
		return err
	}
	for _, im := range ims {
		if im.Phase == model.ImageImporting && im.Pool == s.cfg.Images.ID() {
			s.failImport(im.Name, errors.New("the server restarted during the import; import it again"))
		}
	}
	return nil
}

// --- agent side ---

func (s *Server) agentImage(w http.ResponseWriter, r *http.Request, _ string) error {
	name := r.PathValue("name")
	im, err := s.repo.GetImage(r.Context(), name)
	if err != nil {
		return imageNotFound(err, name)
	}
	writeJSON(w, http.StatusOK, im)
	return nil
}

func (s *Server) agentImageFile(w http.ResponseWriter, r *http.Request, _ string) error {
	name, sum := r.PathValue("name"), r.PathValue("sha256")
	im, err := s.repo.GetImage(r.Context(), name)
	if err != nil {
		return imageNotFound(err, name)
	}
	found := false
	for _, f := range im.Files {
		found = found || f.SHA256 == sum
	}
	if !found || im.Phase != model.ImageReady {
		return notFound("image %q (%s) has no file %s", name, im.Phase, sum)
	}
	if s.cfg.Images == nil {
		return errf(http.StatusServiceUnavailable, api.CodeUnavailable, "", "this server has no image pool; image %q is in pool %s", name, im.Pool)
	}
	f, _, err := s.cfg.Images.Open(sum)
	if errors.Is(err, imagepool.ErrNotFound) {
		return errf(http.StatusServiceUnavailable, api.CodeUnavailable, "",
			"image %q is in pool %s, not in this server's (%s): servers must share one image pool directory", name, im.Pool, s.cfg.Images.ID())
	}
	if err != nil {
		return err
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, sum, im.UpdatedAt, f)
	return nil
}

// LocalFile is a file on the server's own machine, for ImportLocalImage.
type LocalFile struct {
	Role string // disk, kernel or initrd
	Path string
}

// ImportLocalImage imports files the server can read itself (`vpool dev`
// registers the test guest so) and returns the ready image. It fails
// with state.ErrExists when an image of that name exists and is not
// failed.
func (s *Server) ImportLocalImage(ctx context.Context, req api.ImageImportRequest, files []LocalFile) (*model.Image, error) {
	if s.cfg.Images == nil {
		return nil, errors.New("server: no image pool")
	}
	if err := checkImport(&req, false); err != nil {
		return nil, err
	}
	if _, err := s.repo.CreateImage(ctx, &model.Image{Meta: model.Meta{Name: req.Name}, Description: req.Description,
		Phase: model.ImageImporting, Source: "local", Cmdline: req.Cmdline, Pool: s.cfg.Images.ID()}); err != nil {
		return nil, err
	}
	var parts []importFile
	var open []*os.File
	defer func() {
		for _, f := range open {
			f.Close()
		}
	}()
	for _, lf := range files {
		f, err := os.Open(lf.Path)
		if err != nil {
			s.failImport(req.Name, err)
			return nil, fmt.Errorf("server: import %s: %w", req.Name, err)
		}
		open = append(open, f)
		parts = append(parts, importFile{role: lf.Role, r: f})
	}
	if err := s.storeImageFiles(ctx, req.Name, parts); err != nil {
		s.failImport(req.Name, err)
		return nil, fmt.Errorf("server: import %s: %w", req.Name, err)
	}
	return s.repo.GetImage(ctx, req.Name)
}

// fitImages makes the first disk of every VM that boots a disk image at
// least as big as the image (a VM without disks gets one), so that quota
// and placement count the disk the host will make. Admission itself (the
// image exists and is ready) happens in the create's transaction.
func (s *Server) fitImages(ctx context.Context, vms []*model.VM) error {
	sizes := map[string]model.Bytes{}
	for _, vm := range vms {
		name := vm.Spec.Image
		if name == "" {
			continue
		}
		size, ok := sizes[name]
		if !ok {
			im, err := s.repo.GetImage(ctx, name)
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
			if im != nil {
				size = im.VirtualSize
			}
			sizes[name] = size
		}
		switch {
		case size == 0:
		case len(vm.Spec.Disks) == 0:
			vm.Spec.Disks = []model.Disk{{Name: "disk0", Size: size}}
		case vm.Spec.Disks[0].Size < size:
			vm.Spec.Disks[0].Size = size
		}
	}
	return nil
}
