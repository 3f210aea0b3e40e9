// Package imagepool is the server's store of image bytes: files named by
// their SHA-256 in one directory, filled from uploads and http(s) URLs.
// Disk images are checked and converted to a standalone qcow2 by a Tool
// (qemu-img, handed in by the wiring: this package knows no QEMU); kernels
// and initrds are kept as they are. Image records live in the store
// (internal/state); this package holds only bytes.
//
// It imports the standard library and internal/model only.
package imagepool

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/vpool/vpool/internal/model"
)

// Sentinel errors.
var (
	// ErrBadImage says a file cannot be used as the role it was given
	// (not qcow2 or raw, a backing file, a checksum mismatch, too big).
	ErrBadImage = errors.New("imagepool: bad image")
	// ErrNoTool says disk images cannot be taken: no Tool was given.
	ErrNoTool = errors.New("imagepool: no disk image tool (qemu-img) on this server")
	// ErrNotFound says the pool holds no file of that checksum.
	ErrNotFound = errors.New("imagepool: file not found")
)

// Tool checks and converts disk images (qemu.ImageTool implements it).
type Tool interface {
	// Inspect returns the format ("qcow2" or "raw") and the virtual size
	// of a disk image, refusing anything that is not a standalone image
	// of those formats (backing files, external data files).
	Inspect(ctx context.Context, path string) (format string, virtualSize int64, err error)
	// Convert writes src, of format, to dst as a standalone qcow2.
	Convert(ctx context.Context, src, format, dst string) error
}

// DefaultMaxSize bounds one file of an image.
const DefaultMaxSize = 64 * model.GiB

// Config configures a Pool.
type Config struct {
	Dir string // required; created when absent
	// Tool converts disk images; nil takes only kernels and initrds.
	Tool Tool
	// ID names the pool in image records (default: Dir).
	ID string
	// MaxSize bounds one file (default DefaultMaxSize).
	MaxSize model.Bytes
}

// Pool is a directory of content-addressed image files. It is safe for
// concurrent use: files appear by rename, complete or not at all.
type Pool struct {
	cfg Config
}

// New opens (creating) the pool directory.
func New(cfg Config) (*Pool, error) {
	if cfg.Dir == "" {
		return nil, errors.New("imagepool: a directory is needed")
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("imagepool: %w", err)
	}
	cfg.Dir = dir
	if err := os.MkdirAll(filepath.Join(dir, ".tmp"), 0o700); err != nil {
		return nil, fmt.Errorf("imagepool: %w", err)
	}
	if cfg.ID == "" {
		cfg.ID = dir
	}
	if cfg.MaxSize <= 0 {
		cfg.MaxSize = DefaultMaxSize
	}
	return &Pool{cfg: cfg}, nil
}

// ID names the pool in image records.
func (p *Pool) ID() string { return p.cfg.ID }

// Dir is the pool's directory.
func (p *Pool) Dir() string { return p.cfg.Dir }

// CanConvert says whether the pool takes disk images.
func (p *Pool) CanConvert() bool { return p.cfg.Tool != nil }

// Progress receives how far a file has come.
type Progress func(model.ImageProgress)

// Put stores a file of role read from r and returns its record and, for
// a disk, its virtual size. wantSHA, when not empty, is the SHA-256 the
// bytes read must have (a download's published checksum). A disk is
// converted to qcow2; the record's checksum is of the stored file.
func (p *Pool) Put(ctx context.Context, role string, r io.Reader, total int64, wantSHA string, progress Progress) (model.ImageFile, model.Bytes, error) {
	if role == model.ImageDisk && p.cfg.Tool == nil {
		return model.ImageFile{}, 0, ErrNoTool
	}
	tmp, sum, err := p.receive(ctx, r, total, progress)
	if err != nil {
		return model.ImageFile{}, 0, err
	}
	defer os.Remove(tmp)
	if wantSHA != "" && !strings.EqualFold(wantSHA, sum) {
		return model.ImageFile{}, 0, fmt.Errorf("%w: the %s's SHA-256 is %s, not %s as given", ErrBadImage, role, sum, strings.ToLower(wantSHA))
	}
	if role != model.ImageDisk {
		f, err := p.keep(tmp, sum)
		f.Role = role
		return f, 0, err
	}
	format, vsize, err := p.cfg.Tool.Inspect(ctx, tmp)
	if err != nil {
		return model.ImageFile{}, 0, fmt.Errorf("%w: %w", ErrBadImage, err)
	}
	conv := tmp + ".qcow2"
	defer os.Remove(conv)
	if progress != nil {
		progress(model.ImageProgress{Step: "convert", Done: 0, Total: model.Bytes(vsize)})
	}
	if err := p.cfg.Tool.Convert(ctx, tmp, format, conv); err != nil {
		return model.ImageFile{}, 0, fmt.Errorf("imagepool: convert %s to qcow2: %w", format, err)
	}
	if progress != nil {
		progress(model.ImageProgress{Step: "checksum"})
	}
	sum, err = fileSHA256(conv)
	if err != nil {
		return model.ImageFile{}, 0, err
	}
	f, err := p.keep(conv, sum)
	f.Role, f.Format = role, "qcow2"
	return f, model.Bytes(vsize), err
}

// receive copies r into a temporary file, hashing it, up to MaxSize.
func (p *Pool) receive(ctx context.Context, r io.Reader, total int64, progress Progress) (string, string, error) {
	f, err := os.CreateTemp(filepath.Join(p.cfg.Dir, ".tmp"), "in-*")
	if err != nil {
		return "", "", fmt.Errorf("imagepool: %w", err)
	}
	name := f.Name()
	h := sha256.New()
	w := &countWriter{ctx: ctx, total: total, progress: progress}
	max := int64(p.cfg.MaxSize)
	n, err := io.Copy(io.MultiWriter(f, h, w), io.LimitReader(r, max+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	switch {
	case err != nil:
		os.Remove(name)
		return "", "", fmt.Errorf("imagepool: receive: %w", err)
	case n > max:
		os.Remove(name)
		return "", "", fmt.Errorf("%w: larger than the pool's limit of %s", ErrBadImage, p.cfg.MaxSize)
	case n == 0:
		os.Remove(name)
		return "", "", fmt.Errorf("%w: the file is empty", ErrBadImage)
	case total > 0 && n != total:
		os.Remove(name)
		return "", "", fmt.Errorf("imagepool: receive: got %d bytes of %d", n, total)
	}
	return name, hex.EncodeToString(h.Sum(nil)), nil
}

// keep moves a complete file to its checksum's name.
func (p *Pool) keep(tmp, sum string) (model.ImageFile, error) {
	st, err := os.Stat(tmp)
	if err != nil {
		return model.ImageFile{}, fmt.Errorf("imagepool: %w", err)
	}
	if err := os.Chmod(tmp, 0o644); err != nil {
		return model.ImageFile{}, fmt.Errorf("imagepool: %w", err)
	}
	if err := os.Rename(tmp, p.path(sum)); err != nil {
		return model.ImageFile{}, fmt.Errorf("imagepool: %w", err)
	}
	return model.ImageFile{Size: model.Bytes(st.Size()), SHA256: sum}, nil
}

func (p *Pool) path(sum string) string { return filepath.Join(p.cfg.Dir, sum) }

// Open returns the file of a checksum and its size.
func (p *Pool) Open(sum string) (*os.File, int64, error) {
	if model.ValidSHA256("sha256", sum) != nil {
		return nil, 0, fmt.Errorf("%w: %q", ErrNotFound, sum)
	}
	f, err := os.Open(p.path(sum))
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, fmt.Errorf("%w: %s is not in pool %s", ErrNotFound, sum, p.cfg.ID)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("imagepool: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("imagepool: %w", err)
	}
	return f, st.Size(), nil
}

// Has says whether the pool holds a file of that checksum.
func (p *Pool) Has(sum string) bool {
	if model.ValidSHA256("sha256", sum) != nil {
		return false
	}
	_, err := os.Stat(p.path(sum))
	return err == nil
}

// Remove deletes the files of the given checksums that keep does not
// name (files are shared between images by checksum).
func (p *Pool) Remove(sums []string, keep map[string]bool) error {
	var errs []error
	for _, s := range sums {
		if keep[s] || model.ValidSHA256("sha256", s) != nil {
			continue
		}
		if err := os.Remove(p.path(s)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("imagepool: remove: %w", err)
	}
	return nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("imagepool: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("imagepool: checksum: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// countWriter reports progress every 4 MiB and stops a copy whose
// context ended.
type countWriter struct {
	ctx      context.Context
	done     int64
	last     int64
	total    int64
	progress Progress
}

func (w *countWriter) Write(b []byte) (int, error) {
	if err := w.ctx.Err(); err != nil {
		return 0, err
	}
	w.done += int64(len(b))
	if w.progress != nil && w.done-w.last >= 4<<20 {
		w.last = w.done
		w.progress(model.ImageProgress{Step: "download", Done: model.Bytes(w.done), Total: model.Bytes(w.total)})
	}
	return len(b), nil
}
