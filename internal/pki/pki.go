// Package pki holds vpool's small certificate authority: the cluster CA
// (ECDSA P-256) that the server creates on first start, the server
// certificate of the agent listener, the signing of agent CSRs, the CA
// hash pinned by join tokens ("vpool1.<ca-sha256-hex>.<secret>"), and the
// agent-side helpers to make a key and CSR. It imports only the standard
// library: storing the CA is the server's business, so the agent can use
// this package without reaching the store.
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

// NewCA creates a CA valid for ten years from now.
func NewCA(now time.Time) (*CA, error) {
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
		Subject:               pkix.Name{CommonName: "vpool cluster CA", Organization: []string{"vpool"}},
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

// ParseCA reads a CA from its PEM bundle (certificate + EC private key),
// as stored at store.CAKey.
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

// Bundle is the PEM bundle (certificate + key) to store.
func (ca *CA) Bundle() []byte { return append(append([]byte(nil), ca.CertPEM...), ca.keyPEM...) }

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
// names), valid for one year.
func (ca *CA) ServerCert(names []string, now time.Time) (tls.Certificate, error) {
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
		Subject:      pkix.Name{CommonName: "vpool server"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if n != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
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

// SignCSR checks a PEM certificate request's signature and issues a host
// certificate whose CN and only DNS name are host, whatever the CSR asked,
// valid for ttl: clientAuth (the agent's identity towards the server) and
// serverAuth (the host's end of migration streams). It returns the certificate as PEM.
func (ca *CA) SignCSR(csrPEM []byte, host string, ttl time.Duration, now time.Time) ([]byte, error) {
	b, _ := pem.Decode(csrPEM)
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("%w: want a PEM CERTIFICATE REQUEST", ErrBadCSR)
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature: %w", ErrBadCSR, err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, fmt.Errorf("pki: serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: host, Organization: []string{"vpool agents"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(ttl),
		// Key encipherment too: QEMU 9 and later refuse a certificate
		// whose critical key usage lacks it ("usage does not permit key
		// encipherment") for tls-creds-x509, whatever the key type.
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		// serverAuth too: the same certificate secures the host's end of
		// migration streams (QEMU tls-creds), checked against the host name.
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		DNSNames:    []string{host},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("pki: sign client certificate: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
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
// and checks the leaf against it. Agents use it for the first contact,
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
		return nil
	}
}
