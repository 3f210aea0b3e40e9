package repo

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Backend stores named blobs. Names are slash-separated relative paths
// ("chunks/ab/ab12…", "index/<id>"). Writes are atomic: a reader sees a
// whole blob or none. Dir is a directory; S3 an object store bucket
// (conditional put for PutIfAbsent). TestBackendContract holds both to
// this contract and every repository test runs on both.
type Backend interface {
	// Put writes (or replaces) a blob atomically and durably.
	Put(ctx context.Context, name string, data []byte) error
	// PutLazy writes a blob atomically but not yet durably: a later Sync
	// makes it so (chunks: one flush per backup, not per chunk).
	PutLazy(ctx context.Context, name string, data []byte) error
	// Sync makes every earlier write durable.
	Sync(ctx context.Context) error
	// PutIfAbsent writes a blob only when none of that name exists;
	// it returns ErrExists otherwise.
	PutIfAbsent(ctx context.Context, name string, data []byte) error
	// Get reads a blob; ErrNotFound when absent.
	Get(ctx context.Context, name string) ([]byte, error)
	// Stat says whether a blob exists and when it was last written.
	Stat(ctx context.Context, name string) (BlobInfo, error)
	// List returns the names under prefix (a directory), sorted.
	List(ctx context.Context, prefix string) ([]BlobInfo, error)
	// Delete removes a blob; an absent one is not an error.
	Delete(ctx context.Context, name string) error
	// String names the location for messages (no secrets).
	String() string
}

// BlobInfo describes one stored blob.
type BlobInfo struct {
	Name    string
	Size    int64
	ModTime time.Time
}

// Dir is a Backend on a directory: a local disk or an NFS mount shared
// by the hosts and servers of a cluster. Blobs are written to a temporary
// file, synced and renamed into place.
type Dir struct {
	Root string
}

var _ Backend = (*Dir)(nil)

func (d *Dir) path(name string) (string, error) {
	clean := filepath.ToSlash(filepath.Clean(name))
	if name == "" || clean != name || strings.HasPrefix(clean, "../") || strings.HasPrefix(clean, "/") || clean == ".." {
		return "", fmt.Errorf("repo: bad blob name %q", name)
	}
	return filepath.Join(d.Root, filepath.FromSlash(name)), nil
}

// String is the directory.
func (d *Dir) String() string { return d.Root }

// mapErr turns file system errors into the package's sentinels.
func mapErr(op, name string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return fmt.Errorf("%w: %s %s: %v", ErrFull, op, name, err)
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%w: %s", ErrNotFound, name)
	case errors.Is(err, fs.ErrExist):
		return fmt.Errorf("%w: %s", ErrExists, name)
	}
	return fmt.Errorf("repo: %s %s: %w", op, name, err)
}

func (d *Dir) writeTemp(p string, data []byte, durable bool) (string, error) {
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return "", err
	}
	f, err := os.CreateTemp(filepath.Dir(p), ".tmp-*")
	if err != nil {
		return "", err
	}
	_, werr := f.Write(data)
	var serr error
	if durable {
		serr = f.Sync()
	}
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// Put implements Backend.
func (d *Dir) Put(ctx context.Context, name string, data []byte) error {
	return d.put(ctx, name, data, true)
}

// PutLazy implements Backend.
func (d *Dir) PutLazy(ctx context.Context, name string, data []byte) error {
	return d.put(ctx, name, data, false)
}

func (d *Dir) put(ctx context.Context, name string, data []byte, durable bool) error {
	p, err := d.path(name)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	tmp, err := d.writeTemp(p, data, durable)
	if err != nil {
		return mapErr("write", name, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return mapErr("rename", name, err)
	}
	if durable {
		return mapErr("sync", name, syncDir(filepath.Dir(p)))
	}
	return nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// Sync implements Backend: syncfs(2) of the repository's file system.
func (d *Dir) Sync(ctx context.Context) error {
	f, err := os.Open(d.Root)
	if err != nil {
		return mapErr("sync", d.Root, err)
	}
	defer f.Close()
	return mapErr("sync", d.Root, unix.Syncfs(int(f.Fd())))
}

// PutIfAbsent implements Backend: a hard link of the written temporary
// file fails when the name exists (atomic on local file systems and NFS).
func (d *Dir) PutIfAbsent(ctx context.Context, name string, data []byte) error {
	p, err := d.path(name)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	tmp, err := d.writeTemp(p, data, true)
	if err != nil {
		return mapErr("write", name, err)
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, p); err != nil {
		return mapErr("create", name, err)
	}
	return mapErr("sync", name, syncDir(filepath.Dir(p)))
}

// Get implements Backend.
func (d *Dir) Get(ctx context.Context, name string) ([]byte, error) {
	p, err := d.path(name)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(p)
	return b, mapErr("read", name, err)
}

// Stat implements Backend.
func (d *Dir) Stat(ctx context.Context, name string) (BlobInfo, error) {
	p, err := d.path(name)
	if err != nil {
		return BlobInfo{}, err
	}
	st, err := os.Stat(p)
	if err != nil {
		return BlobInfo{}, mapErr("stat", name, err)
	}
	return BlobInfo{Name: name, Size: st.Size(), ModTime: st.ModTime()}, nil
}

// List implements Backend: every regular file below prefix.
func (d *Dir) List(ctx context.Context, prefix string) ([]BlobInfo, error) {
	p, err := d.path(strings.TrimSuffix(prefix, "/"))
	if err != nil {
		return nil, err
	}
	var out []BlobInfo
	err = filepath.WalkDir(p, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if e.IsDir() || strings.HasPrefix(e.Name(), ".tmp-") {
			return nil
		}
		info, err := e.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		rel, _ := filepath.Rel(d.Root, path)
		out = append(out, BlobInfo{Name: filepath.ToSlash(rel), Size: info.Size(), ModTime: info.ModTime()})
		return nil
	})
	if err != nil {
		return nil, mapErr("list", prefix, err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Delete implements Backend.
func (d *Dir) Delete(ctx context.Context, name string) error {
	p, err := d.path(name)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return mapErr("delete", name, err)
	}
	return nil
}
