package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"strings"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// uploadImage takes a multipart upload: the "request" part (an
// api.ImageImportRequest without URLs), then the files as parts named
// disk, kernel and initrd. The image is ready when it answers 201; a
// failed upload leaves no record.
func (s *Server) uploadImage(w http.ResponseWriter, r *http.Request) error {
	mr, err := r.MultipartReader()
	if err != nil {
		return badRequest("multipart upload: %v", err)
	}
	part, err := mr.NextPart()
	if err != nil || part.FormName() != api.ImagePartRequest {
		return badRequest("multipart upload: the first part must be %q, the JSON import request", api.ImagePartRequest)
	}
	body, err := io.ReadAll(io.LimitReader(part, MaxBody+1))
	if err != nil {
		return badRequest("multipart upload: reading the request part: %v", err)
	}
	if len(body) > MaxBody {
		return badRequest("multipart upload: the request part is larger than %d bytes", MaxBody)
	}
	var req api.ImageImportRequest
	if he := decodeBytes(body, &req); he != nil {
		return he
	}
	if err := checkImport(&req, false); err != nil {
		return err
	}
	ctx := r.Context()
	im, err := s.repo.CreateImage(ctx, &model.Image{Meta: model.Meta{Name: req.Name}, Description: req.Description,
		Phase: model.ImageImporting, Source: "upload", Cmdline: req.Cmdline, Pool: s.cfg.Images.ID()})
	if err != nil {
		return err
	}
	stored, err := s.receiveParts(r, mr, &req)
	if err == nil {
		err = s.finishUpload(r, req.Name, stored)
	}
	if err != nil {
		s.abortUpload(r, im.Name, stored)
		if errors.Is(err, errUploadInput) {
			return fieldError("files", "%s", strings.TrimPrefix(err.Error(), errUploadInput.Error()+": "))
		}
		return err
	}
	out, err := s.repo.GetImage(ctx, req.Name)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, out)
	return nil
}

// errUploadInput marks an upload refused for what it sent.
var errUploadInput = errors.New("upload")

type uploaded struct {
	files []model.ImageFile
	vsize model.Bytes
}

// receiveParts stores every file part in the pool.
func (s *Server) receiveParts(r *http.Request, mr *multipart.Reader, req *api.ImageImportRequest) (*uploaded, error) {
	out := &uploaded{}
	seen := map[string]bool{}
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return out, fmt.Errorf("%w: reading the upload: %v", errUploadInput, err)
		}
		role := part.FormName()
		switch role {
		case model.ImageDisk, model.ImageKernel, model.ImageInitrd:
		default:
			return out, fmt.Errorf("%w: part %q is not a file role (disk, kernel or initrd)", errUploadInput, role)
		}
		if seen[role] {
			return out, fmt.Errorf("%w: two %s parts", errUploadInput, role)
		}
		seen[role] = true
		want := ""
		if len(out.files) == 0 {
			want = req.SHA256 // the checksum given is the first file's
		}
		mf, vs, err := s.cfg.Images.Put(r.Context(), role, part, 0, want, nil)
		if err != nil {
			return out, fmt.Errorf("%w: %s: %v", errUploadInput, role, strings.TrimPrefix(err.Error(), "imagepool: "))
		}
		out.files = append(out.files, mf)
		out.vsize = max(out.vsize, vs)
	}
	if !seen[model.ImageDisk] && !seen[model.ImageKernel] {
		return out, fmt.Errorf("%w: no disk or kernel part: an image needs one", errUploadInput)
	}
	return out, nil
}

func (s *Server) finishUpload(r *http.Request, name string, up *uploaded) error {
	_, err := s.repo.UpdateImage(r.Context(), name, func(im *model.Image) error {
		im.Files, im.VirtualSize, im.Phase = up.files, up.vsize, model.ImageReady
		return im.Validate()
	})
	return err
}

// abortUpload removes the record and the files no other image shares.
func (s *Server) abortUpload(r *http.Request, name string, up *uploaded) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 10*time.Second)
	defer cancel()
	im := &model.Image{Meta: model.Meta{Name: name}}
	if up != nil {
		im.Files = up.files
	}
	if err := s.repo.ForgetImage(ctx, name); err != nil {
		s.log.Warn("could not remove a failed upload's image record", "image", name, "err", err)
	}
	if err := s.removeImageFiles(ctx, im); err != nil {
		s.log.Warn("files of a failed upload left in the pool", "image", name, "err", err)
	}
}
