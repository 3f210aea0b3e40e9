package pki

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// SealBytes seals any secret with the CA seal key (AES-256-GCM; ad is
// bound as additional data, so a sealed value cannot be moved to another
// purpose): the servers' audit signing key is stored this way, so that
// every server holding ca-seal.key can sign and nobody reading the store
// can. The result is nonce || ciphertext.
func SealBytes(key, plaintext, ad []byte) ([]byte, error) {
	if len(key) != SealKeySize {
		return nil, fmt.Errorf("%w: want %d bytes, got %d", ErrKeyFile, SealKeySize, len(key))
	}
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("pki: nonce: %w", err)
	}
	return aead.Seal(nonce, nonce, plaintext, ad), nil
}

// OpenBytes opens what SealBytes sealed with the same key and ad
// (ErrSealKey when it does not open).
func OpenBytes(key, sealed, ad []byte) ([]byte, error) {
	if len(key) != SealKeySize {
		return nil, fmt.Errorf("%w: want %d bytes, got %d", ErrKeyFile, SealKeySize, len(key))
	}
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	ns := aead.NonceSize()
	if len(sealed) < ns {
		return nil, fmt.Errorf("%w: sealed value too short", ErrBadPEM)
	}
	out, err := aead.Open(nil, sealed[:ns], sealed[ns:], ad)
	if err != nil {
		return nil, ErrSealKey
	}
	return out, nil
}

// DigestPrefix starts every KeyedDigest.
const DigestPrefix = "hmac-sha256:"

// KeyedDigest names data without revealing it, for a purpose: HMAC-SHA256
// of data under a key derived from the seal key and the purpose,
// "hmac-sha256:" + hex. Equal data give equal digests (with the same
// seal key and purpose); unlike a plain hash, nobody without the seal key
// can test a guess against it, so a digest of a low-entropy secret (a
// password in a cloud-config) shown to readers is no oracle for it.
func KeyedDigest(key []byte, purpose string, data []byte) (string, error) {
	if len(key) != SealKeySize {
		return "", fmt.Errorf("%w: want %d bytes, got %d", ErrKeyFile, SealKeySize, len(key))
	}
	d := hmac.New(sha256.New, key)
	d.Write([]byte("vpool keyed digest\x00" + purpose))
	m := hmac.New(sha256.New, d.Sum(nil))
	m.Write(data)
	return DigestPrefix + hex.EncodeToString(m.Sum(nil)), nil
}
