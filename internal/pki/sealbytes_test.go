package pki

import (
	"bytes"
	"errors"
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
