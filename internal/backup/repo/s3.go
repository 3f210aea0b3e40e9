package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"sort"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3Config locates a repository in a bucket of an S3-compatible object
// store (AWS S3, MinIO, Ceph RGW, Garage, R2…).
type S3Config struct {
	// Endpoint is host[:port] of the service (no scheme).
	Endpoint string
	// Insecure talks plain HTTP (a store on loopback or a private link).
	Insecure bool
	// Region is the bucket's region (empty: the service's default).
	Region string
	// Bucket holds the repository under Prefix ("" for the whole bucket).
	Bucket, Prefix string
	// AccessKey and SecretKey sign the requests (AWS signature v4). They
	// are never shown by String or in an error.
	AccessKey, SecretKey string
}

// ParseS3URL reads "s3://BUCKET[/PREFIX]?endpoint=HOST:PORT[&insecure=1]
// [&region=R]" into a config without credentials (they never go in a
// URL).
func ParseS3URL(raw string) (S3Config, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return S3Config{}, errors.New("repo: the repository URL does not parse: want s3://BUCKET[/PREFIX]?endpoint=HOST:PORT")
	}
	raw = u.Redacted()
	if u.Scheme != "s3" || u.Host == "" || u.User != nil {
		return S3Config{}, fmt.Errorf("repo: %q is not s3://BUCKET[/PREFIX]?endpoint=HOST:PORT (credentials go in the key file, never the URL)", raw)
	}
	q := u.Query()
	c := S3Config{Bucket: u.Host, Prefix: strings.Trim(u.Path, "/"), Endpoint: q.Get("endpoint"), Region: q.Get("region"),
		Insecure: q.Get("insecure") == "1" || q.Get("insecure") == "true"}
	if c.Endpoint == "" || strings.Contains(c.Endpoint, "/") {
		return S3Config{}, fmt.Errorf("repo: %q: endpoint=HOST:PORT is required (no scheme; insecure=1 for plain HTTP)", raw)
	}
	if c.Prefix != "" && path.Clean(c.Prefix) != c.Prefix {
		return S3Config{}, fmt.Errorf("repo: %q: the prefix must be a clean path", raw)
	}
	return c, nil
}

// URL is the config as ParseS3URL reads it (no credentials).
func (c S3Config) URL() string {
	q := url.Values{"endpoint": {c.Endpoint}}
	if c.Insecure {
		q.Set("insecure", "1")
	}
	if c.Region != "" {
		q.Set("region", c.Region)
	}
	u := url.URL{Scheme: "s3", Host: c.Bucket, Path: "/" + c.Prefix, RawQuery: q.Encode()}
	if c.Prefix == "" {
		u.Path = ""
	}
	return u.String()
}

// S3 is a Backend on an S3-compatible object store. A PUT is atomic and
// durable once answered, so PutLazy is Put and Sync has nothing to do.
// PutIfAbsent is a conditional write (If-None-Match: *), which the
// repository's locks rely on: the store must honour it (AWS S3 since
// 2024, MinIO, Ceph RGW since Squid, Cloudflare R2).
type S3 struct {
	cfg S3Config
	c   *minio.Client
}

var _ Backend = (*S3)(nil)

// NewS3 returns the backend; it makes no request.
func NewS3(cfg S3Config) (*S3, error) {
	c, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:  credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure: !cfg.Insecure,
		Region: cfg.Region,
	})
	if err != nil {
		return nil, fmt.Errorf("repo: s3 endpoint %s: %w", cfg.Endpoint, err)
	}
	return &S3{cfg: cfg, c: c}, nil
}

// MakeBucket creates the bucket when it does not exist.
func (s *S3) MakeBucket(ctx context.Context) error {
	ok, err := s.c.BucketExists(ctx, s.cfg.Bucket)
	if err != nil {
		return s.mapErr("bucket", s.cfg.Bucket, err)
	}
	if ok {
		return nil
	}
	return s.mapErr("make bucket", s.cfg.Bucket, s.c.MakeBucket(ctx, s.cfg.Bucket, minio.MakeBucketOptions{Region: s.cfg.Region}))
}

// String is the location, without credentials.
func (s *S3) String() string { return s.cfg.URL() }

func (s *S3) key(name string) (string, error) {
	clean := path.Clean(name)
	if name == "" || clean != name || strings.HasPrefix(clean, "../") || strings.HasPrefix(clean, "/") || clean == ".." || clean == "." {
		return "", fmt.Errorf("repo: bad blob name %q", name)
	}
	if s.cfg.Prefix == "" {
		return name, nil
	}
	return s.cfg.Prefix + "/" + name, nil
}

// mapErr turns the store's answers into the package's sentinels; the
// message names the operation and blob, never a credential.
func (s *S3) mapErr(op, name string, err error) error {
	if err == nil {
		return nil
	}
	er := minio.ToErrorResponse(err)
	switch {
	case er.Code == minio.NoSuchKey || er.StatusCode == http.StatusNotFound && er.Code != minio.NoSuchBucket:
		return fmt.Errorf("%w: %s", ErrNotFound, name)
	case er.Code == "PreconditionFailed" || er.StatusCode == http.StatusPreconditionFailed:
		return fmt.Errorf("%w: %s", ErrExists, name)
	case er.Code == "XMinioStorageFull" || er.Code == "QuotaExceeded" || er.Code == "XMinioAdminBucketQuotaExceeded" ||
		er.StatusCode == http.StatusInsufficientStorage:
		return fmt.Errorf("%w: %s %s: %s", ErrFull, op, name, er.Message)
	}
	return fmt.Errorf("repo: s3 %s %s in %s: %w", op, name, s.cfg.Bucket, err)
}

// Put implements Backend.
func (s *S3) Put(ctx context.Context, name string, data []byte) error {
	return s.put(ctx, name, data, minio.PutObjectOptions{})
}

// PutLazy implements Backend: an answered PUT is already durable.
func (s *S3) PutLazy(ctx context.Context, name string, data []byte) error {
	return s.Put(ctx, name, data)
}

// Sync implements Backend: nothing to flush.
func (s *S3) Sync(ctx context.Context) error { return ctx.Err() }

// PutIfAbsent implements Backend through a conditional PUT.
func (s *S3) PutIfAbsent(ctx context.Context, name string, data []byte) error {
	o := minio.PutObjectOptions{}
	o.SetMatchETagExcept("*")
	return s.put(ctx, name, data, o)
}

func (s *S3) put(ctx context.Context, name string, data []byte, o minio.PutObjectOptions) error {
	k, err := s.key(name)
	if err != nil {
		return err
	}
	o.ContentType = "application/octet-stream"
	o.DisableMultipart = true
	_, err = s.c.PutObject(ctx, s.cfg.Bucket, k, bytes.NewReader(data), int64(len(data)), o)
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return s.mapErr("put", name, err)
}

// Get implements Backend.
func (s *S3) Get(ctx context.Context, name string) ([]byte, error) {
	k, err := s.key(name)
	if err != nil {
		return nil, err
	}
	o, err := s.c.GetObject(ctx, s.cfg.Bucket, k, minio.GetObjectOptions{})
	if err != nil {
		return nil, s.mapErr("get", name, err)
	}
	defer o.Close()
	b, err := io.ReadAll(o)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, s.mapErr("get", name, err)
	}
	return b, nil
}

// Stat implements Backend.
func (s *S3) Stat(ctx context.Context, name string) (BlobInfo, error) {
	k, err := s.key(name)
	if err != nil {
		return BlobInfo{}, err
	}
	oi, err := s.c.StatObject(ctx, s.cfg.Bucket, k, minio.StatObjectOptions{})
	if err != nil {
		return BlobInfo{}, s.mapErr("stat", name, err)
	}
	return BlobInfo{Name: name, Size: oi.Size, ModTime: oi.LastModified}, nil
}

// List implements Backend: every object below prefix (a directory).
func (s *S3) List(ctx context.Context, prefix string) ([]BlobInfo, error) {
	p, err := s.key(strings.TrimSuffix(prefix, "/"))
	if err != nil {
		return nil, err
	}
	strip := ""
	if s.cfg.Prefix != "" {
		strip = s.cfg.Prefix + "/"
	}
	var out []BlobInfo
	for oi := range s.c.ListObjects(ctx, s.cfg.Bucket, minio.ListObjectsOptions{Prefix: p + "/", Recursive: true}) {
		if oi.Err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, s.mapErr("list", prefix, oi.Err)
		}
		out = append(out, BlobInfo{Name: strings.TrimPrefix(oi.Key, strip), Size: oi.Size, ModTime: oi.LastModified})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Delete implements Backend; S3 answers a delete of an absent object
// with success.
func (s *S3) Delete(ctx context.Context, name string) error {
	k, err := s.key(name)
	if err != nil {
		return err
	}
	err = s.c.RemoveObject(ctx, s.cfg.Bucket, k, minio.RemoveObjectOptions{})
	if err != nil && errors.Is(s.mapErr("delete", name, err), ErrNotFound) {
		return nil
	}
	return s.mapErr("delete", name, err)
}

// Location is where a repository lives as a cluster records it: a
// directory (Path) or an object store (URL, s3://…, with its
// credentials).
type Location struct {
	Path                 string
	URL                  string
	AccessKey, SecretKey string
}

// Backend opens the location's backend (no request is made).
func (l Location) Backend() (Backend, error) {
	switch {
	case l.URL != "" && l.Path != "":
		return nil, errors.New("repo: a repository has a path or a URL, not both")
	case l.URL != "":
		c, err := ParseS3URL(l.URL)
		if err != nil {
			return nil, err
		}
		c.AccessKey, c.SecretKey = l.AccessKey, l.SecretKey
		return NewS3(c)
	case l.Path != "":
		return &Dir{Root: l.Path}, nil
	}
	return nil, errors.New("repo: a repository needs a path or a URL")
}
