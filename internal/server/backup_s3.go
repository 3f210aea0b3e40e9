package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/backup/repo"
	"github.com/vpool/vpool/internal/model"
)

// Where repositories live: a directory under the server's backup
// directories, or a bucket of an S3-compatible object store whose
// credentials are sealed in the store like the repository key.

func credsAAD(name string) []byte { return []byte("vpool backup s3 credentials " + name) }

// sealRepoCredentials seals an object store's access and secret keys,
// bound to the repository's name.
func (s *Server) sealRepoCredentials(name, access, secret string) ([]byte, error) {
	return s.sealBound(credsAAD(name), []byte(access+"\n"+secret))
}

// BackupRepoLocation says where a registered repository lives, with its
// object store's credentials opened (for the backup controller and the
// hosts' jobs).
func (s *Server) BackupRepoLocation(rec *model.BackupRepo) (repo.Location, error) {
	loc := repo.Location{Path: rec.Path, URL: rec.URL}
	if rec.URL == "" {
		return loc, nil
	}
	b, err := s.openBound(credsAAD(rec.Name), rec.SealedCredentials)
	if err != nil {
		return loc, fmt.Errorf("server: the object store credentials of backup repository %s: %w", rec.Name, err)
	}
	access, secret, ok := strings.Cut(string(b), "\n")
	if !ok {
		return loc, fmt.Errorf("server: backup repository %s holds malformed credentials", rec.Name)
	}
	loc.AccessKey, loc.SecretKey = access, secret
	return loc, nil
}

// BackupRepoBackend opens a registered repository's backend.
func (s *Server) BackupRepoBackend(rec *model.BackupRepo) (repo.Backend, error) {
	loc, err := s.BackupRepoLocation(rec)
	if err != nil {
		return nil, err
	}
	return loc.Backend()
}

// newRepoBackend checks where a repository to register lives and
// prepares it: a directory (inside the backup directories, created when
// absent) or a bucket (created when absent). field is the request field
// errors name.
func (s *Server) newRepoBackend(ctx context.Context, req api.BackupRepoCreateRequest) (be repo.Backend, field string, err error) {
	switch {
	case req.Path != "" && req.URL != "":
		return nil, "url", fieldError("url", "give a path or a URL, not both")
	case req.URL != "":
		cfg, err := repo.ParseS3URL(req.URL)
		if err != nil {
			return nil, "url", fieldError("url", "%v", err)
		}
		if req.S3AccessKey == "" || req.S3SecretKey == "" {
			return nil, "s3SecretKey", fieldError("s3SecretKey", "an object store needs s3AccessKey and s3SecretKey (vpool backup repo create reads them from VPOOL_S3_ACCESS_KEY and VPOOL_S3_SECRET_KEY or --s3-credentials-file)")
		}
		cfg.AccessKey, cfg.SecretKey = req.S3AccessKey, req.S3SecretKey
		s3, err := repo.NewS3(cfg)
		if err != nil {
			return nil, "url", fieldError("url", "%v", err)
		}
		if err := s3.MakeBucket(ctx); err != nil {
			return nil, "url", fieldError("url", "the bucket cannot be reached or made: %v", err)
		}
		return s3, "url", nil
	}
	if err := s.allowedRepoPath(req.Path); err != nil {
		return nil, "path", err
	}
	return &repo.Dir{Root: req.Path}, "path", nil
}

// prepareNewRepo readies an empty location for a new repository: a
// directory must be empty or absent; a bucket prefix must hold no
// chunks or indexes.
func prepareNewRepo(ctx context.Context, be repo.Backend, field string) error {
	if d, ok := be.(*repo.Dir); ok {
		if ents, _ := os.ReadDir(d.Root); len(ents) > 0 {
			return fieldError(field, "%s holds files but no backup repository; use an empty directory", quoteField(d.Root))
		}
		if err := os.MkdirAll(d.Root, 0o700); err != nil {
			return fieldError(field, "cannot create the directory: %v", err)
		}
		return nil
	}
	for _, p := range []string{"chunks", "index"} {
		l, err := be.List(ctx, p)
		if err != nil && !errors.Is(err, repo.ErrNotFound) {
			return fieldError(field, "cannot list %s: %v", be, err)
		}
		if len(l) > 0 {
			return fieldError(field, "%s holds backup data but no repository configuration; use an empty prefix", be)
		}
	}
	return nil
}
