package pki

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// The cluster CA's private key never sits readable in the store: the
// server seals it (AES-256-GCM, the CA certificate as additional data)
// with a key held outside the store, in a file of the server's data dir
// (0600). Every server of one cluster needs the same file.

// Sealing errors.
var (
	// ErrSealKey: the sealed CA key does not open with this key (another
	// cluster's key file, or a corrupted bundle).
	ErrSealKey = errors.New("pki: the CA key does not open with this key file")
	// ErrPlainCAKey: the bundle holds the CA key in plaintext (stored by
	// a server from before sealing); the server seals it.
	ErrPlainCAKey = errors.New("pki: the CA key is stored in plaintext")
	// ErrKeyFile: the key file is missing, malformed or readable by others.
	ErrKeyFile = errors.New("pki: CA seal key file")
)

// SealKeySize is the size of a seal key: AES-256.
const SealKeySize = 32

// PEM type of the sealed CA key.
const sealedKeyType = "VPOOL SEALED CA KEY"

// NewSealKey returns a fresh random seal key.
func NewSealKey() ([]byte, error) {
	k := make([]byte, SealKeySize)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("pki: seal key: %w", err)
	}
	return k, nil
}

// SealKeyID names a seal key without revealing it: the first 8 bytes of
// its SHA-256, hex; stored beside the sealed key so that a wrong key file
// is named as such.
func SealKeyID(key []byte) string {
	s := sha256.Sum256(append([]byte("vpool seal key id\x00"), key...))
	return hex.EncodeToString(s[:8])
}

// Seal returns the CA as a PEM bundle to store: the certificate and the
// private key encrypted with key.
func (ca *CA) Seal(key []byte) ([]byte, error) {
	if len(key) != SealKeySize {
		return nil, fmt.Errorf("%w: want %d bytes, got %d", ErrKeyFile, SealKeySize, len(key))
	}
	der, err := x509.MarshalECPrivateKey(ca.Key)
	if err != nil {
		return nil, fmt.Errorf("pki: marshal CA key: %w", err)
	}
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("pki: nonce: %w", err)
	}
	sealed := aead.Seal(nonce, nonce, der, ca.Cert.Raw)
	blk := &pem.Block{Type: sealedKeyType, Headers: map[string]string{"Cipher": "AES-256-GCM", "Key-Id": SealKeyID(key)}, Bytes: sealed}
	return append(append([]byte(nil), ca.CertPEM...), pem.EncodeToMemory(blk)...), nil
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	blk, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("pki: cipher: %w", err)
	}
	aead, err := cipher.NewGCM(blk)
	if err != nil {
		return nil, fmt.Errorf("pki: cipher: %w", err)
	}
	return aead, nil
}

// OpenCA reads a sealed bundle (see Seal) with key. A bundle that holds
// the key in plaintext is refused with ErrPlainCAKey (read it with
// ParseCA, then seal it); a key that does not open it gives ErrSealKey.
func OpenCA(bundle, key []byte) (*CA, error) {
	var certBlk, sealed *pem.Block
	plain := false
	for rest := bundle; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		switch b.Type {
		case "CERTIFICATE":
			certBlk = b
		case sealedKeyType:
			sealed = b
		case "EC PRIVATE KEY":
			plain = true
		}
	}
	switch {
	case plain:
		return nil, ErrPlainCAKey
	case certBlk == nil || sealed == nil:
		return nil, fmt.Errorf("%w: a sealed CA bundle needs a CERTIFICATE and a %s", ErrBadPEM, sealedKeyType)
	case len(key) != SealKeySize:
		return nil, fmt.Errorf("%w: want %d bytes, got %d", ErrKeyFile, SealKeySize, len(key))
	}
	cert, err := x509.ParseCertificate(certBlk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: parse CA certificate: %w", err)
	}
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	ns := aead.NonceSize()
	if len(sealed.Bytes) < ns {
		return nil, fmt.Errorf("%w: sealed key too short", ErrBadPEM)
	}
	der, err := aead.Open(nil, sealed.Bytes[:ns], sealed.Bytes[ns:], cert.Raw)
	if err != nil {
		if id := sealed.Headers["Key-Id"]; id != "" && id != SealKeyID(key) {
			return nil, fmt.Errorf("%w: it was sealed with key %s, this file holds key %s", ErrSealKey, id, SealKeyID(key))
		}
		return nil, ErrSealKey
	}
	return ParseCA(append(pem.EncodeToMemory(certBlk), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})...))
}

// ReadSealKey reads a seal key file: 64 hex digits. A file that group or
// others may read is refused: the key opens the cluster CA.
func ReadSealKey(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKeyFile, err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s is readable by others (mode %v); chmod 600 it", ErrKeyFile, path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKeyFile, err)
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(key) != SealKeySize {
		return nil, fmt.Errorf("%w: %s must hold %d hex digits", ErrKeyFile, path, 2*SealKeySize)
	}
	return key, nil
}

// WriteSealKey writes key to path (0600, its directory 0700), refusing to
// replace an existing file.
func WriteSealKey(path string, key []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("%w: %w", ErrKeyFile, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrKeyFile, err)
	}
	if _, err := f.WriteString(hex.EncodeToString(key) + "\n"); err != nil {
		f.Close()
		return fmt.Errorf("%w: %w", ErrKeyFile, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("%w: %w", ErrKeyFile, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("%w: %w", ErrKeyFile, err)
	}
	return nil
}
