package qemu

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseTick(t *testing.T) {
	for _, tc := range []struct {
		line string
		ok   bool
		n    int64
		up   time.Duration
	}{
		{"TICK 5 12.34", true, 5, 12340 * time.Millisecond},
		{"[  3.1] noise TICK 7 3.50", true, 7, 3500 * time.Millisecond},
		{"TICK 5", false, 0, 0},
		{"TOCK 5 1.0", false, 0, 0},
		{"TICK x 1.0", false, 0, 0},
	} {
		got, ok := ParseTick(tc.line)
		if ok != tc.ok || got.N != tc.n || (got.Uptime-tc.up).Abs() > time.Millisecond {
			t.Errorf("ParseTick(%q) = %+v, %v", tc.line, got, ok)
		}
	}
}

func TestGuestGap(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ticks := func(pairs ...int64) []Tick { // n, ms after t0
		var out []Tick
		for i := 0; i < len(pairs); i += 2 {
			out = append(out, Tick{N: pairs[i], At: t0.Add(time.Duration(pairs[i+1]) * time.Millisecond)})
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		ticks []Tick
		want  time.Duration
	}{
		{"too few", ticks(1, 0, 2, 1000), 0},
		{"steady", ticks(1, 0, 2, 1010, 3, 2020, 4, 3030), 0},
		{"pause of 40ms", ticks(1, 0, 2, 1010, 3, 2060, 4, 3070, 5, 4080), 40 * time.Millisecond},
		{"missing tick at the switch", ticks(1, 0, 2, 1000, 4, 3030, 5, 4030, 6, 5030), 30 * time.Millisecond},
		{"unsorted, duplicates", ticks(3, 2100, 1, 0, 2, 1000, 2, 1000, 4, 3100), 100 * time.Millisecond},
	} {
		if got := GuestGap(tc.ticks); (got - tc.want).Abs() > time.Millisecond {
			t.Errorf("%s: GuestGap = %v, want %v", tc.name, got, tc.want)
		}
	}
	// The target's ticks did not come: the stall lasts at least from the
	// last tick until the target stopped waiting, less one period.
	src := ticks(1, 0, 2, 1000, 3, 2000)
	if got := guestGapAtLeast(src, t0.Add(7*time.Second), time.Second); got != 4*time.Second {
		t.Errorf("last tick at 2 s, the target waited until 7 s: guestGapAtLeast = %v, want 4s", got)
	}
	if got := guestGapAtLeast(append(src, ticks(5, 4100, 6, 5100, 7, 6100)...), time.Time{}, time.Second); (got - 100*time.Millisecond).Abs() > time.Millisecond {
		t.Errorf("every tick came: guestGapAtLeast = %v, want GuestGap's 100ms", got)
	}
}

func TestTickWatcher(t *testing.T) {
	path := filepath.Join(t.TempDir(), "serial.log")
	os.WriteFile(path, []byte("TICK 1 1.00\nboot noise\n"), 0o600)
	w := watchTicks(path, true, time.Now)
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("TICK 2 2.0")
	got := w.waitTicks(1, 50*time.Millisecond)
	if len(got) != 0 {
		t.Fatalf("a partial line or an old tick counted: %+v", got)
	}
	f.WriteString("0\nTICK 3 3.00\n")
	f.Close()
	got = w.waitTicks(2, 5*time.Second)
	w.Stop()
	if len(got) != 2 || got[0].N != 2 || got[1].N != 3 || got[0].At.IsZero() {
		t.Fatalf("ticks = %+v", got)
	}
}

func TestMigAddrRoundTrip(t *testing.T) {
	// The memory port comes in the answer to "prepare" (mig 0 here); an
	// older target's address still names it.
	for _, a := range []migAddr{
		{host: "10.0.0.2", nbd: 2, ctrl: 3, key: "k", tlsName: "host-b"},
		{host: "10.0.0.2", mig: 1, nbd: 2, ctrl: 3, key: "k", machine: "pc-q35-10.0"},
	} {
		got, err := parseMigAddr(a.String())
		if err != nil || got != a {
			t.Fatalf("round trip of %+v: %+v, %v", a, got, err)
		}
	}
	for _, bad := range []string{"tcp://x?mig=1&nbd=2&ctl=3&key=k", "qemu://x?mig=1&nbd=2&ctl=3", "qemu://x?mig=0&nbd=2&ctl=3&key=k", "qemu://?mig=1&nbd=2&ctl=3&key=k"} {
		if _, err := parseMigAddr(bad); err == nil {
			t.Errorf("parseMigAddr(%q) accepted", bad)
		}
	}
}

// testCA makes a cluster CA and, per host, a QEMU TLS directory with a
// certificate for 127.0.0.1 (server and client use).
func testCA(t testing.TB, hosts ...string) map[string]string {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	caT := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "vpool test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caT, caT, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	root := t.TempDir()
	out := map[string]string{}
	for i, h := range hosts {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 2)), Subject: pkix.Name{CommonName: h},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kd, _ := x509.MarshalPKCS8PrivateKey(key)
		dir := filepath.Join(root, h)
		if err := WriteMigrationTLS(dir, caPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd})); err != nil {
			t.Fatal(err)
		}
		out[h] = dir
	}
	return out
}

func TestWriteMigrationTLS(t *testing.T) {
	dirs := testCA(t, "a")
	for _, f := range []string{TLSCACert, TLSServerCert, TLSServerKey, TLSClientCert, TLSClientKey} {
		st, err := os.Stat(filepath.Join(dirs["a"], f))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f, st, err)
		}
	}
	if name, err := tlsServerName(dirs["a"]); err != nil || name != "127.0.0.1" {
		t.Fatalf("tlsServerName = %q, %v", name, err)
	}
	if _, err := controlServerTLS(dirs["a"]); err != nil {
		t.Fatal(err)
	}
	err := WriteMigrationTLS(t.TempDir(), []byte("x"), []byte("y"), []byte("z"))
	if !errors.Is(err, ErrMigrationTLS) || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("bad PEM: %v", err)
	}
}
