package pki

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

func TestSealBytes(t *testing.T) {
	key, _ := NewSealKey()
	other, _ := NewSealKey()
	sealed, err := SealBytes(key, []byte("secret"), []byte("audit"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("secret")) {
		t.Fatal("sealed value holds the plaintext")
	}
	if got, err := OpenBytes(key, sealed, []byte("audit")); err != nil || string(got) != "secret" {
		t.Fatalf("open: %q %v", got, err)
	}
	if _, err := OpenBytes(other, sealed, []byte("audit")); !errors.Is(err, ErrSealKey) {
		t.Fatalf("another key: %v", err)
	}
	if _, err := OpenBytes(key, sealed, []byte("ca")); !errors.Is(err, ErrSealKey) {
		t.Fatalf("another purpose: %v", err)
	}
}

func TestKeyedDigest(t *testing.T) {
	key, _ := NewSealKey()
	other, _ := NewSealKey()
	data := []byte("#cloud-config\npassword: hunter2\n")
	d := func(k []byte, purpose string, b []byte) string {
		t.Helper()
		s, err := KeyedDigest(k, purpose, b)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	a := d(key, "user data", data)
	if !strings.HasPrefix(a, DigestPrefix) || len(a) != len(DigestPrefix)+64 {
		t.Fatalf("digest %q", a)
	}
	plain := sha256.Sum256(data)
	for name, got := range map[string]string{
		"another key":     d(other, "user data", data),
		"another purpose": d(key, "other", data),
		"another text":    d(key, "user data", append(data, ' ')),
	} {
		if got == a {
			t.Errorf("%s gives the same digest", name)
		}
	}
	if d(key, "user data", data) != a {
		t.Error("the same input gives another digest")
	}
	if strings.Contains(a, hex.EncodeToString(plain[:])) {
		t.Error("the digest is the plain SHA-256: anyone can test guesses against it")
	}
	if _, err := KeyedDigest(key[:5], "x", data); !errors.Is(err, ErrKeyFile) {
		t.Errorf("short key: %v", err)
	}
}
