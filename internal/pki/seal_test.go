package pki

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestSeal(t *testing.T) {
	now := time.Now()
	ca, _ := NewCA(now)
	key, _ := NewSealKey()
	sealed, err := ca.Seal(key)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalECPrivateKey(ca.Key)
	if bytes.Contains(sealed, der) || bytes.Contains(sealed, ca.keyPEM) || bytes.Contains(sealed, []byte("PRIVATE KEY")) {
		t.Fatal("the sealed bundle holds the private key in the clear")
	}
	if _, err := ParseCA(sealed); err == nil {
		t.Fatal("ParseCA read a key out of a sealed bundle")
	}
	other, _ := NewSealKey()
	otherCA, _ := NewCA(now)
	// the sealed key is bound to its certificate
	swapped := append(append([]byte(nil), otherCA.CertPEM...), sealed[len(ca.CertPEM):]...)
	plain := append(append([]byte(nil), ca.CertPEM...), ca.keyPEM...)
	tests := []struct {
		name   string
		bundle []byte
		key    []byte
		want   error
	}{
		{"right key", sealed, key, nil},
		{"other key", sealed, other, ErrSealKey},
		{"short key", sealed, key[:16], ErrKeyFile},
		{"other certificate", swapped, key, ErrSealKey},
		{"plaintext bundle", plain, key, ErrPlainCAKey},
		{"junk", []byte("junk"), key, ErrBadPEM},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := OpenCA(tt.bundle, tt.key)
			if !errors.Is(err, tt.want) || (tt.want == nil && got.Hash() != ca.Hash()) {
				t.Fatalf("OpenCA: %v, want %v", err, tt.want)
			}
		})
	}
}

func TestSealKeyFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "sub", "ca-seal.key")
	key, _ := NewSealKey()
	if err := WriteSealKey(p, key); err != nil {
		t.Fatal(err)
	}
	got, err := ReadSealKey(p)
	if err != nil || !bytes.Equal(got, key) {
		t.Fatalf("read back %x, %v", got, err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v", fi.Mode().Perm())
	}
	if err := WriteSealKey(p, key); err == nil {
		t.Fatal("an existing key file was replaced")
	}
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadSealKey(p); !errors.Is(err, ErrKeyFile) {
		t.Fatalf("world-readable key file: %v", err)
	}
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("nothex\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadSealKey(bad); !errors.Is(err, ErrKeyFile) {
		t.Fatalf("malformed key file: %v", err)
	}
	if _, err := ReadSealKey(filepath.Join(dir, "missing")); !errors.Is(err, ErrKeyFile) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing key file: %v", err)
	}
}

func TestEnsureLocalTLS(t *testing.T) {
	now := time.Now()
	dir := filepath.Join(t.TempDir(), "tls")
	lt, err := EnsureLocalTLS(dir, "m1", nil, now)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Fatalf("dir mode %v", fi.Mode().Perm())
	}
	for _, f := range []string{lt.CACert, lt.CAKey, lt.MemberCert, lt.MemberKey, lt.ClientCert, lt.ClientKey} {
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f, fi, err)
		}
	}
	read := func(p string) *x509.Certificate {
		b, _ := os.ReadFile(p)
		blk, _ := pem.Decode(b)
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ca, member, client := read(lt.CACert), read(lt.MemberCert), read(lt.ClientCert)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	if _, err := member.Verify(x509.VerifyOptions{Roots: pool, DNSName: "127.0.0.1", KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("member certificate: %v", err)
	}
	if _, err := client.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Fatal("the client certificate can serve")
	}
	// a second start keeps what is current; a new name reissues the member
	if _, err := EnsureLocalTLS(dir, "m1", nil, now); err != nil {
		t.Fatal(err)
	}
	if again := read(lt.MemberCert); !again.Equal(member) || !read(lt.CACert).Equal(ca) {
		t.Fatal("unchanged material was reissued")
	}
	if _, err := EnsureLocalTLS(dir, "m1", []string{"10.0.0.7"}, now); err != nil {
		t.Fatal(err)
	}
	if again := read(lt.MemberCert); again.Equal(member) || len(again.IPAddresses) != 3 || !read(lt.CACert).Equal(ca) {
		t.Fatalf("member after a new name: %v", again.IPAddresses)
	}
	// near its end, a leaf is renewed
	if _, err := EnsureLocalTLS(dir, "m1", nil, now.Add(localLeafTTL-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if read(lt.ClientCert).Equal(client) {
		t.Fatal("a client certificate about to lapse was kept")
	}
	if err := os.Remove(lt.CAKey); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureLocalTLS(dir, "m1", nil, now); err == nil {
		t.Fatal("a CA certificate without its key was replaced silently")
	}
}
