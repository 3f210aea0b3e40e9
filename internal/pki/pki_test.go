package pki

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestCARoundTripAndSign(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	ca, err := NewCA(now)
	if err != nil {
		t.Fatal(err)
	}
	again, err := ParseCA(ca.Bundle())
	if err != nil || again.Hash() != ca.Hash() || len(ca.Hash()) != 64 {
		t.Fatalf("round trip: %v", err)
	}
	_, csr, err := NewKeyAndCSR("evil-name")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := again.SignCSR(csr, "host1", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName != "host1" {
		t.Fatalf("CN = %q, want the host name, not the CSR's", cert.Subject.CommonName)
	}
	_, err = cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		t.Fatalf("client cert does not verify: %v", err)
	}
	// The same certificate serves the host's end of migration streams.
	_, err = cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: now, DNSName: "host1",
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	if err != nil {
		t.Fatalf("host cert does not verify as a server named host1: %v", err)
	}
	// QEMU's tls-creds-x509 wants both usages in the critical extension.
	if want := x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment; cert.KeyUsage&want != want {
		t.Fatalf("host cert key usage %b, want digital signature and key encipherment", cert.KeyUsage)
	}
	if _, err := ca.SignCSR([]byte("junk"), "h", time.Hour, now); !errors.Is(err, ErrBadCSR) {
		t.Fatalf("junk CSR: %v", err)
	}
}

func TestVerifyPinned(t *testing.T) {
	now := time.Now()
	ca, _ := NewCA(now)
	other, _ := NewCA(now)
	srv, _ := ca.ServerCert([]string{"127.0.0.1"}, now)
	if err := VerifyPinned(ca.Hash())(srv.Certificate, nil); err != nil {
		t.Fatalf("good chain refused: %v", err)
	}
	if err := VerifyPinned(other.Hash())(srv.Certificate, nil); err == nil {
		t.Fatal("chain accepted against the wrong pin")
	}
	forged, _ := other.ServerCert([]string{"127.0.0.1"}, now)
	chain := [][]byte{forged.Certificate[0], ca.Cert.Raw}
	if err := VerifyPinned(ca.Hash())(chain, nil); err == nil {
		t.Fatal("leaf from another CA accepted because the pinned CA was appended")
	}
}

func TestJoinToken(t *testing.T) {
	h := strings.Repeat("ab", 32)
	tests := []struct {
		in string
		ok bool
	}{
		{FormatJoinToken(h, "s3cret"), true},
		{"vpool1." + h, false},
		{"vpool2." + h + ".x", false},
		{"vpool1.zz." + "x", false},
		{"vpool1." + strings.Repeat("zz", 32) + ".x", false},
		{"", false},
	}
	for _, tt := range tests {
		ch, sec, err := ParseJoinToken(tt.in)
		if tt.ok != (err == nil) {
			t.Errorf("%q: err %v", tt.in, err)
		}
		if tt.ok && (ch != h || sec != "s3cret") {
			t.Errorf("%q: parsed %q %q", tt.in, ch, sec)
		}
	}
}
