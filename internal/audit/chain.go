// Package audit is the audit trail's cryptography: it links records into
// a hash chain (each record holds the SHA-256 of the stored bytes of the
// one before), signs checkpoints and heads with the servers' ed25519 key,
// and verifies a run of records — from the store or from export files —
// naming the first record that was edited, removed, reordered or cut off.
// Records travel and are stored as the exact bytes Link produced, so
// verification never depends on how a reader re-encodes JSON.
//
// It imports only the standard library and internal/model: the CLI
// verifies with it, without trusting the server that served the records.
// The store side (appending, export files, pruning) is internal/auditlog.
package audit

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/vpool/vpool/internal/model"
)

// Genesis is the Prev of the first record of a chain.
var Genesis = hex.EncodeToString(make([]byte, sha256.Size))

// Hash is the hex SHA-256 of a record's stored bytes.
func Hash(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// Link makes rec the record after (seq-1, prev): it sets Seq and Prev and
// returns the bytes to store and their hash.
func Link(rec *model.AuditRecord, seq int64, prev string) ([]byte, string, error) {
	rec.Seq, rec.Prev = seq, prev
	b, err := json.Marshal(rec)
	if err != nil {
		return nil, "", fmt.Errorf("audit: encode record %d: %w", seq, err)
	}
	return b, Hash(b), nil
}

// Signer signs checkpoints and heads with the servers' key.
type Signer struct {
	key   ed25519.PrivateKey
	keyID string
}

// NewSigner wraps an ed25519 private key.
func NewSigner(key ed25519.PrivateKey) *Signer {
	return &Signer{key: key, keyID: KeyID(key.Public().(ed25519.PublicKey))}
}

// KeyID names a public key: the first 8 bytes of its SHA-256, hex.
func KeyID(pub ed25519.PublicKey) string {
	s := sha256.Sum256(pub)
	return hex.EncodeToString(s[:8])
}

// KeyID is the signer's key id.
func (s *Signer) KeyID() string { return s.keyID }

// Public is the signer's public key.
func (s *Signer) Public() ed25519.PublicKey { return s.key.Public().(ed25519.PublicKey) }

// SignedMessage is what a signature covers: a domain string (a
// checkpoint's signature cannot pass for a head's), the sequence number,
// the hash of that record and the time of signing.
func SignedMessage(domain string, seq int64, hash string, at time.Time) []byte {
	return []byte("vpool audit v1\n" + domain + "\n" + strconv.FormatInt(seq, 10) + "\n" + hash + "\n" + at.UTC().Format(time.RFC3339Nano) + "\n")
}

// Signature domains.
const (
	DomainCheckpoint = "checkpoint"
	DomainHead       = "head"
)

// Sign signs (seq, hash) at time at for domain.
func (s *Signer) Sign(domain string, seq int64, hash string, at time.Time) model.AuditSignature {
	at = at.UTC()
	sig := ed25519.Sign(s.key, SignedMessage(domain, seq, hash, at))
	return model.AuditSignature{Seq: seq, Hash: hash, Time: at, KeyID: s.keyID, Sig: base64.StdEncoding.EncodeToString(sig)}
}

// ErrSignature says a signature does not verify with the key.
var ErrSignature = errors.New("audit: bad signature")

// CheckSignature verifies sig for domain with pub.
func CheckSignature(pub ed25519.PublicKey, domain string, sig model.AuditSignature) error {
	raw, err := base64.StdEncoding.DecodeString(sig.Sig)
	if err != nil || len(raw) != ed25519.SignatureSize {
		return fmt.Errorf("%w: malformed", ErrSignature)
	}
	if sig.KeyID != KeyID(pub) {
		return fmt.Errorf("%w: made with key %s, not %s", ErrSignature, sig.KeyID, KeyID(pub))
	}
	if !ed25519.Verify(pub, SignedMessage(domain, sig.Seq, sig.Hash, sig.Time), raw) {
		return ErrSignature
	}
	return nil
}

// ParsePublicKey reads a base64 ed25519 public key.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("audit: %q is not a base64 ed25519 public key", cut(s))
	}
	return ed25519.PublicKey(b), nil
}

// EncodePublicKey is the base64 form ParsePublicKey reads.
func EncodePublicKey(pub ed25519.PublicKey) string { return base64.StdEncoding.EncodeToString(pub) }

func cut(s string) string {
	if len(s) > 60 {
		return s[:60] + "…"
	}
	return s
}

// Peek reads a stored record's sequence number and Prev.
func Peek(raw []byte) (seq int64, prev string, err error) {
	var l link
	if err := json.Unmarshal(raw, &l); err != nil || l.Seq <= 0 {
		return 0, "", fmt.Errorf("audit: not a record")
	}
	return l.Seq, l.Prev, nil
}
