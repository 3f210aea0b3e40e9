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
	key, _ := NewSealKey()
	sealed, err := ca.Seal(key)
	if err != nil {
		t.Fatal(err)
	}
	again, err := OpenCA(sealed, key)
	if err != nil || again.Hash() != ca.Hash() || len(ca.Hash()) != 64 || !again.Key.Equal(ca.Key) {
		t.Fatalf("round trip: %v", err)
	}
	_, csr, err := NewKeyAndCSR("evil-name")
	if err != nil {
		t.Fatal(err)
	}
	hc, err := again.IssueHost(csr, "host1", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(hc.PEM)
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName != "host1" {
		t.Fatalf("CN = %q, want the host name, not the CSR's", cert.Subject.CommonName)
	}
	if hc.Serial != SerialHex(cert.SerialNumber) || !hc.NotAfter.Equal(cert.NotAfter) {
		t.Fatalf("issued %+v, certificate serial %s until %v", hc, SerialHex(cert.SerialNumber), cert.NotAfter)
	}
	if h, err := HostOf(cert); err != nil || h != "host1" {
		t.Fatalf("HostOf = %q, %v", h, err)
	}
	_, err = cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		t.Fatalf("client cert does not verify: %v", err)
	}
	// The same certificate serves the host's end of migration streams,
	// under its name in the host name space only.
	_, err = cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: now, DNSName: HostDNSName("host1"),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	if err != nil {
		t.Fatalf("host cert does not verify as a server named %s: %v", HostDNSName("host1"), err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: now, DNSName: "host1"}); err == nil {
		t.Fatal("host cert verifies under the bare host name, which a server may carry")
	}
	if err := CheckServer(cert); !errors.Is(err, ErrRole) {
		t.Fatalf("CheckServer accepted a host certificate: %v", err)
	}
	// QEMU's tls-creds-x509 wants both usages in the critical extension.
	if want := x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment; cert.KeyUsage&want != want {
		t.Fatalf("host cert key usage %b, want digital signature and key encipherment", cert.KeyUsage)
	}
	if _, err := ca.SignCSR([]byte("junk"), "h", time.Hour, now); !errors.Is(err, ErrBadCSR) {
		t.Fatalf("junk CSR: %v", err)
	}
}

func TestServerCertRole(t *testing.T) {
	now := time.Now()
	ca, _ := NewCA(now)
	srv, err := ca.ServerCert([]string{"127.0.0.1", "localhost"}, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckServer(srv.Leaf); err != nil {
		t.Fatalf("server certificate refused: %v", err)
	}
	if _, err := HostOf(srv.Leaf); !errors.Is(err, ErrRole) {
		t.Fatalf("a server certificate passed as a host: %v", err)
	}
	for _, n := range []string{HostDNSName("h1"), "H1.HOST.VPOOL.INVALID."} {
		if _, err := ca.ServerCert([]string{n}, now); !errors.Is(err, ErrRole) {
			t.Errorf("server name %q in the host name space: %v", n, err)
		}
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
	// a host certificate of the right CA is no server
	_, csr, _ := NewKeyAndCSR("h1")
	hc, _ := ca.IssueHost(csr, "h1", time.Hour, now)
	b, _ := pem.Decode(hc.PEM)
	if err := VerifyPinned(ca.Hash())([][]byte{b.Bytes, ca.Cert.Raw}, nil); !errors.Is(err, ErrRole) {
		t.Fatalf("host certificate accepted as the server: %v", err)
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

// A migration certificate verifies as its host's certificate does where
// migration peers check it (chain, host DNS name, both usages) but never
// speaks for the host: HostOf refuses it.
func TestMigrationCertRole(t *testing.T) {
	now := time.Now()
	ca, err := NewCA(now)
	if err != nil {
		t.Fatal(err)
	}
	_, csr, err := NewKeyAndCSR("anything")
	if err != nil {
		t.Fatal(err)
	}
	mc, err := ca.IssueMigration(csr, "host1", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(mc.PEM)
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: now, DNSName: HostDNSName("host1"), KeyUsages: []x509.ExtKeyUsage{u}}); err != nil {
			t.Fatalf("the migration certificate does not verify for %v as %s: %v", u, HostDNSName("host1"), err)
		}
	}
	if _, err := HostOf(cert); !errors.Is(err, ErrRole) {
		t.Fatalf("HostOf accepted a migration certificate: %v", err)
	}
	if err := CheckServer(cert); !errors.Is(err, ErrRole) {
		t.Fatalf("CheckServer accepted a migration certificate: %v", err)
	}
	if want := x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment; cert.KeyUsage&want != want {
		t.Fatalf("key usage %b, want what QEMU's tls-creds-x509 asks", cert.KeyUsage)
	}
}
