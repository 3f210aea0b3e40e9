package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/pki"
)

// Files in Config.StateDir.
const (
	keyFile  = "agent.key"
	certFile = "agent.crt"
	caFile   = "ca.crt"
)

// JoinToken is a parsed "vpool1.<ca-sha256-hex>.<secret>".
type JoinToken struct {
	CAHash string // lowercase hex SHA-256 of the CA certificate (DER)
	Secret string
	Raw    string
}

// ParseJoinToken parses a join token.
func ParseJoinToken(s string) (JoinToken, error) {
	s = strings.TrimSpace(s)
	parts := strings.SplitN(s, ".", 3)
	if len(parts) != 3 || parts[0] != "vpool1" {
		return JoinToken{}, fmt.Errorf("%w: want vpool1.<ca-hash>.<secret>", ErrBadToken)
	}
	h := strings.ToLower(parts[1])
	if b, err := hex.DecodeString(h); err != nil || len(b) != sha256.Size {
		return JoinToken{}, fmt.Errorf("%w: the CA hash is not a hex SHA-256", ErrBadToken)
	}
	if parts[2] == "" {
		return JoinToken{}, fmt.Errorf("%w: empty secret", ErrBadToken)
	}
	return JoinToken{CAHash: h, Secret: parts[2], Raw: s}, nil
}

// CAHashes returns the hashes a join token may pin for a CA certificate:
// the SHA-256 of the certificate (DER) and of its public key (SPKI, as
// kubeadm pins). Both are accepted.
func CAHashes(ca *x509.Certificate) []string {
	a := sha256.Sum256(ca.Raw)
	b := sha256.Sum256(ca.RawSubjectPublicKeyInfo)
	return []string{hex.EncodeToString(a[:]), hex.EncodeToString(b[:])}
}

// identity is what the agent authenticates with.
type identity struct {
	cert tls.Certificate
	ca   *x509.Certificate
	pool *x509.CertPool
	// The PEM bytes it was parsed from, for the driver's migration TLS.
	certPEM, keyPEM, caPEM []byte
}

// loadIdentity reads key, certificate and CA from dir; (nil, nil) when the
// agent has not joined yet.
func loadIdentity(dir string) (*identity, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, certFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("agent: read identity: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, keyFile))
	if err != nil {
		return nil, fmt.Errorf("agent: read identity: %w", err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, caFile))
	if err != nil {
		return nil, fmt.Errorf("agent: read identity: %w", err)
	}
	return parseIdentity(certPEM, keyPEM, caPEM)
}

func parseIdentity(certPEM, keyPEM, caPEM []byte) (*identity, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("agent: identity: %w", err)
	}
	ca, err := firstCert(caPEM)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &identity{cert: cert, ca: ca, pool: pool, certPEM: certPEM, keyPEM: keyPEM, caPEM: caPEM}, nil
}

func firstCert(p []byte) (*x509.Certificate, error) {
	for {
		var b *pem.Block
		b, p = pem.Decode(p)
		if b == nil {
			return nil, errors.New("agent: no PEM certificate in CA data")
		}
		if b.Type == "CERTIFICATE" {
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("agent: parse CA: %w", err)
			}
			return c, nil
		}
	}
}

// expired says whether the client certificate is past (or within a minute
// of) its end.
func (id *identity) expired(now time.Time) bool {
	if id.cert.Leaf == nil {
		return false
	}
	return now.Add(time.Minute).After(id.cert.Leaf.NotAfter)
}

// tlsConfig is the mutual-TLS client configuration: the agent's
// certificate, and the server verified against the cluster CA and by its
// role, so that another host's certificate cannot pass for the server.
func (id *identity) tlsConfig(serverName string) *tls.Config {
	return &tls.Config{
		MinVersion:       tls.VersionTLS12,
		Certificates:     []tls.Certificate{id.cert},
		RootCAs:          id.pool,
		ServerName:       serverName,
		VerifyConnection: pki.VerifyServerConnection,
	}
}

// pinnedTLS trusts a server whose presented chain holds a CA matching the
// token's hash and whose leaf that CA signed. It records the CA it found.
func pinnedTLS(tok JoinToken, serverName string, found **x509.Certificate) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Verification is done below against the pinned CA instead of the
		// system roots: the cluster CA is private.
		InsecureSkipVerify: true, //nolint:gosec // verified by VerifyPeerCertificate
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			certs := make([]*x509.Certificate, 0, len(raw))
			for _, r := range raw {
				c, err := x509.ParseCertificate(r)
				if err != nil {
					return fmt.Errorf("agent: server certificate: %w", err)
				}
				certs = append(certs, c)
			}
			if len(certs) == 0 {
				return errors.New("agent: server presented no certificate")
			}
			var ca *x509.Certificate
			for _, c := range certs {
				for _, h := range CAHashes(c) {
					if h == tok.CAHash {
						ca = c
					}
				}
			}
			if ca == nil {
				return fmt.Errorf("%w: no certificate presented by the server has the token's CA hash %.12s…", ErrCAMismatch, tok.CAHash)
			}
			if ca == certs[0] {
				return fmt.Errorf("%w: the server presented the CA as its own certificate", ErrCAMismatch)
			}
			pool := x509.NewCertPool()
			pool.AddCert(ca)
			inter := x509.NewCertPool()
			for _, c := range certs[1:] {
				inter.AddCert(c)
			}
			opts := x509.VerifyOptions{Roots: pool, Intermediates: inter, DNSName: serverName, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
			if _, err := certs[0].Verify(opts); err != nil {
				return fmt.Errorf("%w: %v", ErrCAMismatch, err)
			}
			if err := pki.CheckServer(certs[0]); err != nil {
				return fmt.Errorf("%w: %w", ErrCAMismatch, err)
			}
			*found = ca
			return nil
		},
	}
}

// join exchanges the token and a fresh key's CSR for a client certificate
// and stores key, certificate and CA in the state directory.
func (a *Agent) join(ctx context.Context) (*identity, error) {
	if a.cfg.JoinToken == "" {
		return nil, fmt.Errorf("%w: %s holds no identity; give a join token (vpool host join-token)", ErrNotJoined, a.cfg.StateDir)
	}
	tok, err := ParseJoinToken(a.cfg.JoinToken)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("agent: generate key: %w", err)
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:  pkix.Name{CommonName: a.cfg.HostName},
		DNSNames: []string{a.cfg.HostName},
	}, key)
	if err != nil {
		return nil, fmt.Errorf("agent: create CSR: %w", err)
	}
	req := api.JoinRequest{Host: a.cfg.HostName, CSRPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER}))}
	var resp api.JoinResponse
	pinned, err := a.joinAny(ctx, tok, req, &resp)
	if err != nil {
		return nil, fmt.Errorf("agent: join: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("agent: encode key: %w", err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	caPEM := []byte(resp.CAPEM)
	if pinned != nil {
		// Trust the CA that matched the token, whatever the body says.
		caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: pinned.Raw})
	}
	id, err := parseIdentity([]byte(resp.CertPEM), keyPEM, caPEM)
	if err != nil {
		return nil, err
	}
	if err := writeIdentity(a.cfg.StateDir, []byte(resp.CertPEM), keyPEM, caPEM); err != nil {
		return nil, err
	}
	return id, nil
}

func writeIdentity(dir string, certPEM, keyPEM, caPEM []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("agent: state dir: %w", err)
	}
	// The certificate goes last: its presence means "joined".
	for _, f := range []struct {
		name string
		data []byte
	}{{keyFile, keyPEM}, {caFile, caPEM}, {certFile, certPEM}} {
		p := filepath.Join(dir, f.name)
		tmp := p + ".tmp"
		if err := os.WriteFile(tmp, f.data, 0o600); err != nil {
			return fmt.Errorf("agent: write %s: %w", f.name, err)
		}
		if err := os.Rename(tmp, p); err != nil {
			return fmt.Errorf("agent: write %s: %w", f.name, err)
		}
	}
	return nil
}

// joinAny sends the join to the servers in turn, moving on only when a
// server cannot be reached: a join that left may have been applied. It
// returns the CA that matched the token.
func (a *Agent) joinAny(ctx context.Context, tok JoinToken, req api.JoinRequest, resp *api.JoinResponse) (*x509.Certificate, error) {
	var err error
	for _, srv := range a.servers {
		var pinned *x509.Certificate
		c := &transport{base: srv.base, http: &http.Client{
			Timeout:   30 * time.Second,
			Transport: &http.Transport{TLSClientConfig: pinnedTLS(tok, srv.name, &pinned)},
		}, bearer: tok.Raw}
		err = c.do(ctx, http.MethodPost, api.AgentPrefix+"/join", req, resp)
		c.http.CloseIdleConnections()
		if err == nil {
			return pinned, nil
		}
		if !dialFailed(err) {
			return nil, err
		}
	}
	return nil, err
}

// serverName returns the host part of the server URL, for certificate
// verification.
func serverName(u *url.URL) string { return u.Hostname() }

// secureMigrations hands the driver a migration identity for its
// migration streams (hypervisor.MigrationSecurer), so that they are
// mutual TLS from the cluster CA by default: a migration-only key and
// certificate the server issues (migrationIdentity), which the host's
// QEMUs may hold — a QEMU escape that takes it cannot speak for the host
// (docs/security.md VP-11). A server from before migration certificates
// (404) leaves the host's own identity, as before; a server that cannot
// be reached now leaves it until a retry in the background succeeds.
// A host certificate issued before host certificates carried serverAuth
// cannot serve; the agent says so and the driver keeps plain TCP (join
// again with a fresh state dir to fix it). One issued before they carried
// key encipherment works with QEMU 7 only; the agent warns, since QEMU 9
// and later refuse it.
func (a *Agent) secureMigrations(ctx context.Context, id *identity) {
	sec, ok := a.cfg.Driver.(hypervisor.MigrationSecurer)
	if !ok {
		return
	}
	if leaf := id.cert.Leaf; leaf != nil && !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		a.log.Warn("the host certificate predates migration TLS (no serverAuth); migrations of this host stay plain TCP")
		return
	}
	if leaf := id.cert.Leaf; leaf != nil && leaf.KeyUsage&x509.KeyUsageKeyEncipherment == 0 {
		a.log.Warn("the host certificate lacks key encipherment, which QEMU 9 and later require for migration TLS; join again with a fresh state dir")
	}
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	caPEM, certPEM, keyPEM, err := a.migrationIdentity(tctx)
	cancel()
	switch st := httpStatus(err); {
	case err == nil:
		if err := sec.SetMigrationIdentity(caPEM, certPEM, keyPEM); err != nil {
			a.log.Warn("migration TLS not configured", "err", err)
			return
		}
		a.log.Info("migration streams use TLS from the cluster CA, with this host's migration-only certificate")
		return
	case st == http.StatusNotFound || st == http.StatusMethodNotAllowed:
		a.log.Warn("the server issues no migration certificates (an older version): migrations use the host's own key, which a migrating QEMU then holds")
	default:
		a.log.Warn("no migration certificate yet: migrations use the host's own key until one is issued", "err", err)
		go a.retryMigrationIdentity(ctx, sec)
	}
	if err := sec.SetMigrationIdentity(id.caPEM, id.certPEM, id.keyPEM); err != nil {
		a.log.Warn("migration TLS not configured", "err", err)
		return
	}
	a.log.Info("migration streams use TLS from the cluster CA")
}

// migrationIdentity makes a migration-only key and has the server certify
// it (POST /agent/v1/migration-cert): the cluster CA, the certificate and
// the key, PEM. The key never leaves the host; a new one is made at every
// start.
func (a *Agent) migrationIdentity(ctx context.Context) (caPEM, certPEM, keyPEM []byte, err error) {
	keyPEM, csrPEM, err := pki.NewKeyAndCSR(a.cfg.HostName)
	if err != nil {
		return nil, nil, nil, err
	}
	var res api.MigrationCertResponse
	if err := a.client.do(ctx, http.MethodPost, api.AgentPrefix+"/migration-cert", api.MigrationCertRequest{CSRPEM: string(csrPEM)}, &res); err != nil {
		return nil, nil, nil, err
	}
	return []byte(res.CAPEM), []byte(res.CertPEM), keyPEM, nil
}

// retryMigrationIdentity asks for a migration certificate until the
// server issues one (or says it never will), then hands it to the driver.
func (a *Agent) retryMigrationIdentity(ctx context.Context, sec hypervisor.MigrationSecurer) {
	bo := newBackoff(2*time.Second, time.Minute)
	for sleepCtx(ctx, bo.next()) == nil {
		caPEM, certPEM, keyPEM, err := a.migrationIdentity(ctx)
		if st := httpStatus(err); st == http.StatusNotFound || st == http.StatusMethodNotAllowed {
			return
		}
		if err != nil {
			continue
		}
		if err := sec.SetMigrationIdentity(caPEM, certPEM, keyPEM); err != nil {
			a.log.Warn("migration TLS not configured with the migration certificate", "err", err)
			return
		}
		a.log.Info("migration streams now use this host's migration-only certificate")
		return
	}
}
