package agent_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"log"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/agent"
	"github.com/vpool/vpool/internal/hypervisor/sim"
	"github.com/vpool/vpool/internal/pki"
)

// legacyHostCert is a host certificate as vpool issued them before
// roles: CN and DNS name "localhost", serverAuth and clientAuth, signed
// by the cluster CA. Such certificates live for a year after the
// upgrade; the agent must not take one for the server.
func legacyHostCert(t *testing.T, ca *pki.CA) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(42),
		Subject:      pkix.Name{CommonName: "localhost", Organization: []string{"vpool agents"}},
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		DNSNames:    []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der, ca.Cert.Raw}, PrivateKey: key}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// A host's certificate of the cluster CA cannot pose as the server: not
// at the first contact (the pinned join) and not afterwards.
func TestAgentRefusesAHostCertificateAsServer(t *testing.T) {
	real := newFakeServer(t)
	var tlsErrs syncBuf
	impostor := newFakeServerWith(t, real.ca, legacyHostCert(t, real.ca), log.New(&tlsErrs, "", 0))
	url := strings.Replace(impostor.URL(), "127.0.0.1", "localhost", 1)
	d := sim.MustHost(sim.Config{Name: "h1"}).Driver()

	a, err := agent.New(agent.Config{ServerURL: url, JoinToken: real.token, StateDir: t.TempDir(), HostName: "h1", Driver: d})
	if err != nil {
		t.Fatal(err)
	}
	jctx, jcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer jcancel()
	if err := a.Run(jctx); !errors.Is(err, agent.ErrCAMismatch) || !errors.Is(err, pki.ErrRole) {
		t.Fatalf("join through the impostor: %v", err)
	}

	// joined at the real server, the agent then meets the impostor
	refusals := strings.Count(tlsErrs.String(), "bad certificate")
	dir := t.TempDir()
	r := startAgent(t, real, dir, real.token, d)
	eventually(t, "a heartbeat", func() bool { _, n := real.lastBeat(); return n > 0 })
	r.stop(t)
	b, err := agent.New(agent.Config{ServerURL: url, StateDir: dir, HostName: "h1", Driver: d, HeartbeatInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	eventually(t, "the agent to refuse the impostor's certificate", func() bool {
		return strings.Count(tlsErrs.String(), "bad certificate") > refusals
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, n := impostor.lastBeat(); n != 0 {
		t.Fatalf("the agent sent %d heartbeats to a host posing as the server", n)
	}
}
