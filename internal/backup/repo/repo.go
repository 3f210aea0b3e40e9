// Package repo is the backup repository: deduplicated, compressed and
// encrypted fixed-size chunks plus one encrypted index per backup, on a
// Backend: a directory (local disk or NFS, Dir) or a bucket of an
// S3-compatible object store (S3, through minio-go).
//
// Layout:
//
//	vpool-repo.json           Config: id, owning cluster, chunk size, key check
//	chunks/<2 hex>/<64 hex>   a chunk: zstd, then XChaCha20-Poly1305
//	index/<backup id>         a Manifest, sealed the same way
//	locks/<name>              backup (shared) and maintenance (exclusive) locks
//
// A chunk's name is HMAC-SHA256(idKey, plaintext): equal data dedupes,
// and without the key the store learns nothing from names. The sealed
// chunk is bound to its name (additional data), so a blob moved to
// another name fails to open. Both keys derive (HKDF-SHA256) from the
// repository key, 32 random bytes kept by the operator in a key file
// (FormatKey/ParseKey), never in the repository.
//
// It imports the standard library, zstd (klauspost/compress) and
// golang.org/x/crypto; it knows nothing of vpool's store or drivers.
package repo

import (
	"bytes"
	"context"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/crypto/chacha20poly1305"
)

// Sentinel errors; callers test them with errors.Is.
var (
	ErrNotFound = errors.New("repo: not found")
	ErrExists   = errors.New("repo: already exists")
	// ErrWrongKey: the key given does not open this repository.
	ErrWrongKey = errors.New("repo: wrong key for this repository")
	// ErrForeign: the repository belongs to another cluster; it may be
	// read (restore, verify, failover) but not written.
	ErrForeign = errors.New("repo: repository belongs to another cluster")
	// ErrCorrupt: a chunk or index does not match its name or cannot be
	// decrypted.
	ErrCorrupt = errors.New("repo: corrupt data")
	// ErrFull: the backend has no space left; nothing written was
	// committed.
	ErrFull = errors.New("repo: repository is full")
	// ErrBusy: a lock is held (maintenance while a backup runs, or a
	// backup while maintenance runs).
	ErrBusy = errors.New("repo: repository busy")
	// ErrNotRepo: the location holds no repository.
	ErrNotRepo = errors.New("repo: no repository at this location")
	// ErrKeyMismatch: two repositories have different keys (sync copies
	// sealed chunks as they are, so both need the same key).
	ErrKeyMismatch = errors.New("repo: repositories have different keys")
)

// KeySize is the size of a repository key.
const KeySize = 32

// DefaultChunkSize is the fixed chunk size (as Proxmox Backup Server's
// fixed index).
const DefaultChunkSize = 4 << 20

const (
	configName  = "vpool-repo.json"
	keyPrefix   = "vpool-backup-key-v1:"
	blobMagic   = "VPB1"
	checkPrefix = "vpool backup repository "
)

// GenerateKey returns a new random repository key.
func GenerateKey() []byte {
	k := make([]byte, KeySize)
	rand.Read(k)
	return k
}

// FormatKey renders a key as the one-line text of a key file.
func FormatKey(k []byte) string {
	return keyPrefix + base64.StdEncoding.EncodeToString(k) + "\n"
}

// ParseKey reads a key file's text (FormatKey); surrounding space is
// ignored. The error never contains the text.
func ParseKey(text []byte) ([]byte, error) {
	s := strings.TrimSpace(string(text))
	if !strings.HasPrefix(s, keyPrefix) {
		return nil, fmt.Errorf("repo: not a repository key (want a line %q…, as vpool backup repo create writes)", keyPrefix)
	}
	k, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, keyPrefix))
	if err != nil || len(k) != KeySize {
		return nil, errors.New("repo: malformed repository key")
	}
	return k, nil
}

// Config is the repository's only plaintext file.
type Config struct {
	Version   int       `json:"version"`
	ID        string    `json:"id"`
	Cluster   string    `json:"cluster"`
	ChunkSize int       `json:"chunkSize"`
	CreatedAt time.Time `json:"createdAt"`
	// KeyCheck is a sealed known text bound to ID and Cluster: it opens
	// only with the right key, and a changed ID or Cluster breaks it.
	KeyCheck string `json:"keyCheck"`
	// KeyID names the key (an HMAC of a constant) so two repositories
	// can be seen to share one without either revealing it.
	KeyID string `json:"keyId"`
}

// Options of Open and Create.
type Options struct {
	Key []byte
	// Cluster is the caller's cluster id. Create records it; Open refuses
	// a repository of another cluster unless ReadOnly.
	Cluster  string
	ReadOnly bool
	// ChunkSize for Create (default DefaultChunkSize).
	ChunkSize int
	Logger    *slog.Logger
	Clock     func() time.Time
	// Host and Owner name the lock holder in lock files.
	Host string
}

// Repo is an open repository. It is safe for concurrent use.
type Repo struct {
	be       Backend
	cfg      Config
	idKey    []byte
	aead     aeadCipher
	readOnly bool
	log      *slog.Logger
	now      func() time.Time
	host     string
	enc      *zstd.Encoder
	dec      *zstd.Decoder
}

type aeadCipher interface {
	NonceSize() int
	Overhead() int
	Seal(dst, nonce, plaintext, additionalData []byte) []byte
	Open(dst, nonce, ciphertext, additionalData []byte) ([]byte, error)
}

func deriveKeys(key []byte) (idKey []byte, a aeadCipher, keyID string, err error) {
	if len(key) != KeySize {
		return nil, nil, "", fmt.Errorf("repo: a key is %d bytes, got %d", KeySize, len(key))
	}
	idKey, err = hkdf.Key(sha256.New, key, nil, "vpool backup chunk id", 32)
	if err != nil {
		return nil, nil, "", err
	}
	encKey, err := hkdf.Key(sha256.New, key, nil, "vpool backup seal", chacha20poly1305.KeySize)
	if err != nil {
		return nil, nil, "", err
	}
	a, err = chacha20poly1305.NewX(encKey)
	if err != nil {
		return nil, nil, "", err
	}
	m := hmac.New(sha256.New, idKey)
	m.Write([]byte("vpool backup key id"))
	return idKey, a, hex.EncodeToString(m.Sum(nil)[:8]), nil
}

func (o *Options) defaults() {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	if o.ChunkSize == 0 {
		o.ChunkSize = DefaultChunkSize
	}
}

func newRepo(be Backend, cfg Config, o Options) (*Repo, error) {
	idKey, a, keyID, err := deriveKeys(o.Key)
	if err != nil {
		return nil, err
	}
	if cfg.KeyID != "" && cfg.KeyID != keyID {
		return nil, ErrWrongKey
	}
	cfg.KeyID = keyID
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, fmt.Errorf("repo: zstd: %w", err)
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(256<<20))
	if err != nil {
		return nil, fmt.Errorf("repo: zstd: %w", err)
	}
	return &Repo{be: be, cfg: cfg, idKey: idKey, aead: a, readOnly: o.ReadOnly,
		log: o.Logger, now: o.Clock, host: o.Host, enc: enc, dec: dec}, nil
}

// Create makes a new repository on be (which must hold none).
func Create(ctx context.Context, be Backend, o Options) (*Repo, error) {
	o.defaults()
	if o.ChunkSize < 64<<10 || o.ChunkSize > 64<<20 || o.ChunkSize&(o.ChunkSize-1) != 0 {
		return nil, fmt.Errorf("repo: chunk size %d is not a power of two between 64 KiB and 64 MiB", o.ChunkSize)
	}
	if o.Cluster == "" {
		return nil, errors.New("repo: a repository needs the id of its cluster")
	}
	var idb [16]byte
	rand.Read(idb[:])
	cfg := Config{Version: 1, ID: hex.EncodeToString(idb[:]), Cluster: o.Cluster, ChunkSize: o.ChunkSize,
		CreatedAt: o.Clock().UTC()}
	r, err := newRepo(be, cfg, o)
	if err != nil {
		return nil, err
	}
	r.cfg.KeyCheck = base64.StdEncoding.EncodeToString(r.seal([]byte(checkPrefix+cfg.ID), checkAAD(cfg)))
	b, _ := json.MarshalIndent(r.cfg, "", "  ")
	if err := be.PutIfAbsent(ctx, configName, append(b, '\n')); err != nil {
		if errors.Is(err, ErrExists) {
			return nil, fmt.Errorf("%w: %s already holds a repository", ErrExists, be)
		}
		return nil, err
	}
	return r, nil
}

func checkAAD(c Config) []byte { return []byte("config:" + c.ID + ":" + c.Cluster) }

// ReadConfig reads a repository's plaintext config (no key needed).
func ReadConfig(ctx context.Context, be Backend) (Config, error) {
	var cfg Config
	b, err := be.Get(ctx, configName)
	if errors.Is(err, ErrNotFound) {
		return cfg, fmt.Errorf("%w: %s", ErrNotRepo, be)
	}
	if err != nil {
		return cfg, err
	}
	if err := json.Unmarshal(b, &cfg); err != nil || cfg.Version != 1 || cfg.ChunkSize <= 0 {
		return cfg, fmt.Errorf("%w: %s has a malformed %s", ErrNotRepo, be, configName)
	}
	return cfg, nil
}

// Open opens the repository on be with o.Key. Errors: ErrNotRepo,
// ErrWrongKey, ErrForeign (another cluster's and not ReadOnly).
func Open(ctx context.Context, be Backend, o Options) (*Repo, error) {
	o.defaults()
	cfg, err := ReadConfig(ctx, be)
	if err != nil {
		return nil, err
	}
	r, err := newRepo(be, cfg, o)
	if err != nil {
		return nil, err
	}
	sealed, err := base64.StdEncoding.DecodeString(cfg.KeyCheck)
	if err != nil {
		return nil, fmt.Errorf("%w: %s has a malformed key check", ErrNotRepo, be)
	}
	plain, err := r.open(sealed, checkAAD(cfg))
	if err != nil || string(plain) != checkPrefix+cfg.ID {
		return nil, fmt.Errorf("%w (or its config was altered)", ErrWrongKey)
	}
	if !o.ReadOnly && cfg.Cluster != o.Cluster {
		return nil, fmt.Errorf("%w: it was created by cluster %s, this is %s; register it read-only to restore from it",
			ErrForeign, cfg.Cluster, o.Cluster)
	}
	return r, nil
}

// Config returns the repository's config.
func (r *Repo) Config() Config { return r.cfg }

// Backend returns the repository's backend.
func (r *Repo) Backend() Backend { return r.be }

// ReadOnly reports whether the repository was opened read-only.
func (r *Repo) ReadOnly() bool { return r.readOnly }

// ChunkSize is the fixed chunk size.
func (r *Repo) ChunkSize() int { return r.cfg.ChunkSize }

// ChunkID names plaintext data: hex HMAC-SHA256 under the id key.
func (r *Repo) ChunkID(data []byte) string {
	m := hmac.New(sha256.New, r.idKey)
	m.Write(data)
	return hex.EncodeToString(m.Sum(nil))
}

func chunkName(id string) string { return "chunks/" + id[:2] + "/" + id }

// bufPool recycles compression and sealing buffers (chunk-sized: the
// allocations and their zeroing showed in profiles).
var bufPool = sync.Pool{New: func() any { return new([]byte) }}

func getBuf(n int) *[]byte {
	b := bufPool.Get().(*[]byte)
	if cap(*b) < n {
		*b = make([]byte, 0, n)
	}
	*b = (*b)[:0]
	return b
}

// seal: magic | nonce | AEAD(zstd(plain)) with aad.
func (r *Repo) seal(plain, aad []byte) []byte {
	out := r.sealInto(nil, plain, aad)
	return out
}

// sealInto seals into dst (reused when large enough).
func (r *Repo) sealInto(dst, plain, aad []byte) []byte {
	cb := getBuf(len(plain) + len(plain)/16 + 64)
	defer bufPool.Put(cb)
	comp := r.enc.EncodeAll(plain, *cb)
	*cb = comp[:0]
	need := len(blobMagic) + r.aead.NonceSize() + len(comp) + r.aead.Overhead()
	out := dst[:0]
	if cap(out) < need {
		out = make([]byte, 0, need)
	}
	out = append(out, blobMagic...)
	nonce := make([]byte, r.aead.NonceSize())
	rand.Read(nonce)
	out = append(out, nonce...)
	return r.aead.Seal(out, nonce, comp, aad)
}

func (r *Repo) open(blob, aad []byte) ([]byte, error) {
	ns := r.aead.NonceSize()
	if len(blob) < len(blobMagic)+ns+r.aead.Overhead() || !bytes.Equal(blob[:len(blobMagic)], []byte(blobMagic)) {
		return nil, fmt.Errorf("%w: not a sealed blob", ErrCorrupt)
	}
	nonce := blob[len(blobMagic) : len(blobMagic)+ns]
	comp, err := r.aead.Open(nil, nonce, blob[len(blobMagic)+ns:], aad)
	if err != nil {
		return nil, fmt.Errorf("%w: authentication failed", ErrCorrupt)
	}
	plain, err := r.dec.DecodeAll(comp, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: decompress: %v", ErrCorrupt, err)
	}
	return plain, nil
}

// HasChunk says whether a chunk is stored.
func (r *Repo) HasChunk(ctx context.Context, id string) (bool, error) {
	_, err := r.be.Stat(ctx, chunkName(id))
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// SealChunk compresses and encrypts plain for storage under id (CPU only;
// safe to run in parallel).
func (r *Repo) SealChunk(id string, plain []byte) []byte { return r.seal(plain, []byte("chunk:"+id)) }

// putChunk seals and stores a chunk, returning the stored size.
func (r *Repo) putChunk(ctx context.Context, id string, plain []byte) (int64, error) {
	sb := getBuf(len(plain) + len(plain)/16 + 128)
	defer bufPool.Put(sb)
	sealed := r.sealInto(*sb, plain, []byte("chunk:"+id))
	*sb = sealed[:0]
	if err := r.putSealed(ctx, id, sealed); err != nil {
		return 0, err
	}
	return int64(len(sealed)), nil
}

// putSealed stores a sealed chunk (it may exist: equal content).
func (r *Repo) putSealed(ctx context.Context, id string, sealed []byte) error {
	if r.readOnly {
		return fmt.Errorf("repo: %s is read-only here", r.be)
	}
	return r.be.PutLazy(ctx, chunkName(id), sealed)
}

// ReadChunk reads, decrypts and checks one chunk: the plaintext's HMAC
// must be its name.
func (r *Repo) ReadChunk(ctx context.Context, id string) ([]byte, error) {
	if len(id) != 64 {
		return nil, fmt.Errorf("%w: bad chunk name %q", ErrCorrupt, id)
	}
	blob, err := r.be.Get(ctx, chunkName(id))
	if err != nil {
		return nil, fmt.Errorf("repo: chunk %s: %w", id, err)
	}
	plain, err := r.open(blob, []byte("chunk:"+id))
	if err != nil {
		return nil, fmt.Errorf("repo: chunk %s: %w", id, err)
	}
	if r.ChunkID(plain) != id {
		return nil, fmt.Errorf("%w: chunk %s: content does not match its name", ErrCorrupt, id)
	}
	return plain, nil
}
