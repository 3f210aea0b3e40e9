package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// LocalTLS is the TLS material of an embedded etcd member, in one
// directory only its server's user may enter: a private CA (not the
// cluster CA, which signs hosts), the member's certificate for its client
// and peer ports, and the one client certificate the server uses. etcd
// accepts a client only with a certificate of this CA, so a local user
// who can reach the loopback port cannot read or write the store.
type LocalTLS struct {
	Dir        string
	CACert     string // ca.crt
	CAKey      string // ca.key
	MemberCert string // <member>.crt: serverAuth + clientAuth (peers)
	MemberKey  string
	ClientCert string // client.crt: clientAuth, for the server's store client
	ClientKey  string
}

// Validity of local leaf certificates and how early they are renewed
// (at the member's next start).
const (
	localLeafTTL   = 5 * 365 * 24 * time.Hour
	localRenewLeft = 365 * 24 * time.Hour
)

// EnsureLocalTLS makes what is missing of the material in dir (0700;
// files 0600): the CA once, the member's certificate for names (IPs or
// DNS names; loopback and localhost are always added) and the client
// certificate, each again when it lapses within a year or lacks a name.
// Members of one cluster share the CA: copy ca.crt and ca.key into each
// member's dir before its first start.
func EnsureLocalTLS(dir, member string, names []string, now time.Time) (LocalTLS, error) {
	lt := LocalTLS{Dir: dir,
		CACert: filepath.Join(dir, "ca.crt"), CAKey: filepath.Join(dir, "ca.key"),
		MemberCert: filepath.Join(dir, member+".crt"), MemberKey: filepath.Join(dir, member+".key"),
		ClientCert: filepath.Join(dir, "client.crt"), ClientKey: filepath.Join(dir, "client.key")}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return lt, fmt.Errorf("pki: local tls: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return lt, fmt.Errorf("pki: local tls: %w", err)
	}
	ca, err := loadOrCreateLocalCA(lt, now)
	if err != nil {
		return lt, err
	}
	names = append([]string{"127.0.0.1", "::1", "localhost"}, names...)
	if err := ensureLeaf(ca, lt.MemberCert, lt.MemberKey, member, names, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, now); err != nil {
		return lt, err
	}
	if err := ensureLeaf(ca, lt.ClientCert, lt.ClientKey, "vpool-server", nil, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, now); err != nil {
		return lt, err
	}
	return lt, nil
}

func loadOrCreateLocalCA(lt LocalTLS, now time.Time) (*CA, error) {
	certPEM, cerr := os.ReadFile(lt.CACert)
	keyPEM, kerr := os.ReadFile(lt.CAKey)
	if cerr == nil && kerr == nil {
		return ParseCA(append(certPEM, keyPEM...))
	}
	if !errors.Is(cerr, fs.ErrNotExist) || !errors.Is(kerr, fs.ErrNotExist) {
		return nil, fmt.Errorf("pki: local CA in %s: need both ca.crt and ca.key: %w", lt.Dir, errors.Join(cerr, kerr))
	}
	ca, err := newCA("vpool etcd CA", now)
	if err != nil {
		return nil, err
	}
	if err := writePrivate(lt.CAKey, ca.keyPEM); err != nil {
		return nil, err
	}
	return ca, writePrivate(lt.CACert, ca.CertPEM)
}

// ensureLeaf issues certFile/keyFile unless a certificate there is from
// ca, has every name and more than localRenewLeft to live.
func ensureLeaf(ca *CA, certFile, keyFile, cn string, names []string, usage []x509.ExtKeyUsage, now time.Time) error {
	if pair, err := tls.LoadX509KeyPair(certFile, keyFile); err == nil && pair.Leaf != nil && leafCurrent(ca, pair.Leaf, names, now) {
		return nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("pki: generate key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return fmt.Errorf("pki: serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"vpool"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(localLeafTTL),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  usage,
	}
	addNames(tmpl, names)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return fmt.Errorf("pki: sign %s: %w", cn, err)
	}
	kd, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return fmt.Errorf("pki: marshal key: %w", err)
	}
	if err := writePrivate(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})); err != nil {
		return err
	}
	return writePrivate(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func leafCurrent(ca *CA, leaf *x509.Certificate, names []string, now time.Time) bool {
	if leaf.CheckSignatureFrom(ca.Cert) != nil || leaf.NotAfter.Sub(now) < localRenewLeft {
		return false
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			if !slices.ContainsFunc(leaf.IPAddresses, ip.Equal) {
				return false
			}
		} else if n != "" && !slices.Contains(leaf.DNSNames, n) {
			return false
		}
	}
	return true
}

// writePrivate replaces path with data, 0600, through a temporary file.
func writePrivate(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("pki: write %s: %w", filepath.Base(path), err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("pki: write %s: %w", filepath.Base(path), err)
	}
	return nil
}
