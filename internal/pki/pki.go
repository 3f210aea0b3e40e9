// Package pki holds vpool's small certificate authorities: the cluster CA
// (ECDSA P-256) that the server creates on first start, the server
// certificate of the agent listener, the signing of agent CSRs into host
// certificates, the roles that keep the two apart (role.go), the sealing
// of the CA key before it is stored (seal.go), the CA hash pinned by join
// tokens ("vpool1.<ca-sha256-hex>.<secret>"), the agent-side helpers to
// make a key and CSR, and the private CA of an embedded etcd member
// (local.go). It imports only the standard library: storing the CA is the
// server's business, so the agent can use this package without reaching
// the store.
package pki

import (
	"bytes"
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
	"math/big"
	"net"
	"os"
	"strings"
	"time"
)

// Sentinel errors.
var (
	ErrBadPEM       = errors.New("pki: bad PEM")
	ErrBadCSR       = errors.New("pki: bad certificate request")
	ErrBadJoinToken = errors.New("pki: malformed join token (want vpool1.<ca-hash>.<secret>)")
	// ErrRole: a certificate of one role used for another (a host
	// certificate presented as the server's, a server name in the host
	// name space).
	ErrRole = errors.New("pki: wrong certificate role")
)

// CA is the cluster certificate authority.
type CA struct {
	Cert    *x509.Certificate
	Key     *ecdsa.PrivateKey
	CertPEM []byte
	keyPEM  []byte
}

func newSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

// NewCA creates the cluster CA, valid for ten years from now.
func NewCA(now time.Time) (*CA, error) { return newCA("vpool cluster CA", now) }

func newCA(cn string, now time.Time) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: generate CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, fmt.Errorf("pki: serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"vpool"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("pki: create CA: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("pki: marshal CA key: %w", err)
	}
	return ParseCA(append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})...))
}

// ParseCA reads a CA from a plaintext PEM bundle (certificate + EC
// private key): a CA file on disk, or what servers from before sealing
// stored at store.CAKey. The store holds sealed bundles (Seal, OpenCA).
func ParseCA(bundle []byte) (*CA, error) {
	ca := &CA{}
	rest := bundle
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		switch b.Type {
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("pki: parse CA certificate: %w", err)
			}
			ca.Cert, ca.CertPEM = c, pem.EncodeToMemory(b)
		case "EC PRIVATE KEY":
			k, err := x509.ParseECPrivateKey(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("pki: parse CA key: %w", err)
			}
			ca.Key, ca.keyPEM = k, pem.EncodeToMemory(b)
		}
	}
	if ca.Cert == nil || ca.Key == nil {
		return nil, fmt.Errorf("%w: CA bundle needs a CERTIFICATE and an EC PRIVATE KEY", ErrBadPEM)
	}
	return ca, nil
}

// Hash is the hex SHA-256 of the CA certificate's DER, pinned by join
// tokens.
func (ca *CA) Hash() string { return CertHash(ca.Cert.Raw) }

// CertHash is the hex SHA-256 of a certificate's DER.
func CertHash(der []byte) string {
	s := sha256.Sum256(der)
	return hex.EncodeToString(s[:])
}

// Pool returns a cert pool holding only this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// DefaultServerNames are the SANs of a server certificate: loopback,
// localhost and this machine's host name.
func DefaultServerNames() []string {
	names := []string{"127.0.0.1", "::1", "localhost"}
	if h, err := os.Hostname(); err == nil && h != "" {
		names = append(names, h)
	}
	return names
}

// ServerCert issues a TLS server certificate for names (IPs or DNS
// names), valid for one year. It carries the server role (OU
// RoleServer), which agents and the CLI check; a name in the host name
// space (HostNameSuffix) is refused.
func (ca *CA) ServerCert(names []string, now time.Time) (tls.Certificate, error) {
	for _, n := range names {
		if IsHostName(n) {
			return tls.Certificate{}, fmt.Errorf("%w: server name %q is in the host name space %s", ErrRole, n, HostNameSuffix)
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: generate server key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "vpool server", Organization: []string{"vpool"}, OrganizationalUnit: []string{RoleServer}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	addNames(tmpl, names)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: sign server certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der, ca.Cert.Raw}, PrivateKey: key, Leaf: mustParse(der)}, nil
}

func mustParse(der []byte) *x509.Certificate {
	c, _ := x509.ParseCertificate(der)
	return c
}

// HostCert is a host certificate as issued.
type HostCert struct {
	PEM      []byte
	Serial   string // SerialHex of the certificate
	NotAfter time.Time
}

// SignCSR checks a PEM certificate request's signature and issues a host
// certificate for host (see IssueHost); it returns the certificate as PEM.
func (ca *CA) SignCSR(csrPEM []byte, host string, ttl time.Duration, now time.Time) ([]byte, error) {
	hc, err := ca.IssueHost(csrPEM, host, ttl, now)
	if err != nil {
		return nil, err
	}
	return hc.PEM, nil
}

// IssueHost checks a PEM certificate request's signature and issues a
// host certificate, valid for ttl, whatever the CSR asked: CN host, the
// host role (OU RoleHost) and one DNS name, HostDNSName(host), in a name
// space no server certificate may use. It carries clientAuth (the
// agent's identity towards the server) and serverAuth (the host's end of
// migration streams, checked against that DNS name); it can never pass
// for the server, whose certificates carry the server role and the
// server's own names.
func (ca *CA) IssueHost(csrPEM []byte, host string, ttl time.Duration, now time.Time) (HostCert, error) {
	return ca.issueHostRole(csrPEM, host, RoleHost, ttl, now)
}

// IssueMigration is IssueHost for a host's migration-only certificate:
// the same CN, DNS name and usages — so migration peers, old and new,
// verify it as they verify a host certificate — but the migration role
// (OU RoleMigration), which HostOf refuses: the key the host's QEMUs
// hold to secure migration streams can never speak for the host to the
// servers (docs/security.md VP-11). It is never bound to the host name.
func (ca *CA) IssueMigration(csrPEM []byte, host string, ttl time.Duration, now time.Time) (HostCert, error) {
	return ca.issueHostRole(csrPEM, host, RoleMigration, ttl, now)
}

func (ca *CA) issueHostRole(csrPEM []byte, host, role string, ttl time.Duration, now time.Time) (HostCert, error) {
	b, _ := pem.Decode(csrPEM)
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return HostCert{}, fmt.Errorf("%w: want a PEM CERTIFICATE REQUEST", ErrBadCSR)
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return HostCert{}, fmt.Errorf("%w: %w", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return HostCert{}, fmt.Errorf("%w: signature: %w", ErrBadCSR, err)
	}
	serial, err := newSerial()
	if err != nil {
		return HostCert{}, fmt.Errorf("pki: serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: host, Organization: []string{"vpool agents"}, OrganizationalUnit: []string{role}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(ttl),
		// Key encipherment too: QEMU 9 and later refuse a certificate
		// whose critical key usage lacks it ("usage does not permit key
		// encipherment") for tls-creds-x509, whatever the key type.
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		// serverAuth too: the same certificate secures the host's end of
		// migration streams (QEMU tls-creds), checked against its DNS name.
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		DNSNames:    []string{HostDNSName(host)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.Key)
	if err != nil {
		return HostCert{}, fmt.Errorf("pki: sign host certificate: %w", err)
	}
	return HostCert{PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), Serial: SerialHex(serial), NotAfter: tmpl.NotAfter}, nil
}

// NewKeyAndCSR makes an agent key and a CSR for host; both PEM.
func NewKeyAndCSR(host string) (keyPEM, csrPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: generate key: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: host}}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: create CSR: %w", err)
	}
	kd, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: marshal key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// JoinTokenPrefix starts every join token.
const JoinTokenPrefix = "vpool1"

// FormatJoinToken renders "vpool1.<caHash>.<secret>".
func FormatJoinToken(caHash, secret string) string {
	return JoinTokenPrefix + "." + caHash + "." + secret
}

// ParseJoinToken splits a join token into the CA hash and the secret.
func ParseJoinToken(tok string) (caHash, secret string, err error) {
	parts := strings.Split(strings.TrimSpace(tok), ".")
	if len(parts) != 3 || parts[0] != JoinTokenPrefix || len(parts[1]) != 64 || parts[2] == "" {
		return "", "", ErrBadJoinToken
	}
	if _, err := hex.DecodeString(parts[1]); err != nil {
		return "", "", ErrBadJoinToken
	}
	return parts[1], parts[2], nil
}

// VerifyPinned returns a tls.Config VerifyPeerCertificate function that
// accepts a server whose chain includes a CA certificate with caHash,
// and checks the leaf against it and its server role. Agents use it for the first contact,
// before they hold the CA.
func VerifyPinned(caHash string) func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
	return func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
		var ca *x509.Certificate
		for _, raw := range rawCerts {
			if CertHash(raw) == caHash {
				c, err := x509.ParseCertificate(raw)
				if err != nil {
					return fmt.Errorf("pki: pinned CA: %w", err)
				}
				ca = c
			}
		}
		if ca == nil || len(rawCerts) == 0 {
			return errors.New("pki: server did not present the pinned cluster CA")
		}
		leaf, err := x509.ParseCertificate(rawCerts[0])
		if err != nil {
			return fmt.Errorf("pki: server certificate: %w", err)
		}
		if bytes.Equal(leaf.Raw, ca.Raw) {
			return errors.New("pki: server presented the CA as its own certificate")
		}
		pool := x509.NewCertPool()
		pool.AddCert(ca)
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			return fmt.Errorf("pki: server certificate not signed by the pinned CA: %w", err)
		}
		return CheckServer(leaf)
	}
}

// addNames puts names on a certificate template: IP addresses as IP SANs,
// anything else (but "") as DNS names.
func addNames(tmpl *x509.Certificate, names []string) {
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if n != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
}
