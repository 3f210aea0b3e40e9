package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
)

// Roles, in the OrganizationalUnit of the certificates the cluster CA
// issues. The CA alone decides the subject (a CSR's is ignored), so a
// host can never hold a certificate of the server role.
const (
	RoleServer = "vpool server"
	RoleHost   = "vpool host"
	// RoleMigration is a host's migration-only certificate (IssueMigration):
	// what its QEMUs hold to secure migration streams, never an identity
	// towards the servers (HostOf refuses it).
	RoleMigration = "vpool migration"
)

// HostNameSuffix makes a host certificate's only DNS name: NAME plus
// this suffix. ".invalid" is reserved (RFC 6761): no server is ever
// reached under such a name, and ServerCert refuses one, so a host
// certificate never matches the name a CLI or agent dials.
const HostNameSuffix = ".host.vpool.invalid"

// HostDNSName is the DNS name of host's certificate.
func HostDNSName(host string) string { return host + HostNameSuffix }

// IsHostName says whether name lies in the host name space.
func IsHostName(name string) bool {
	return strings.HasSuffix(strings.TrimSuffix(strings.ToLower(name), "."), HostNameSuffix)
}

// SerialHex is a certificate serial as lowercase hex, the form the
// revocation list stores.
func SerialHex(n *big.Int) string { return n.Text(16) }

// CheckServer accepts a leaf certificate that carries the server role
// and serverAuth: what the agent listener and the user API present. A
// host certificate (role RoleHost, or a certificate from before roles
// that names a host) is refused with ErrRole.
func CheckServer(leaf *x509.Certificate) error {
	if leaf == nil {
		return fmt.Errorf("%w: no server certificate", ErrRole)
	}
	if !slices.Contains(leaf.Subject.OrganizationalUnit, RoleServer) {
		return fmt.Errorf("%w: the peer's certificate (CN %q) is not a vpool server certificate", ErrRole, leaf.Subject.CommonName)
	}
	if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		return fmt.Errorf("%w: the server certificate lacks serverAuth", ErrRole)
	}
	return nil
}

// VerifyServerConnection is a tls.Config VerifyConnection for clients of
// a vpool server (agents, the CLI): after the usual chain and name
// checks, the leaf must carry the server role.
func VerifyServerConnection(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return fmt.Errorf("%w: the server presented no certificate", ErrRole)
	}
	return CheckServer(cs.PeerCertificates[0])
}

// HostOf returns the host a verified client certificate speaks for: its
// CN. A certificate of the server role is no host, nor is a migration
// certificate (a QEMU that holds its key must not speak for its host).
func HostOf(leaf *x509.Certificate) (string, error) {
	if leaf == nil || leaf.Subject.CommonName == "" {
		return "", errors.New("pki: the client certificate names no host")
	}
	if slices.Contains(leaf.Subject.OrganizationalUnit, RoleServer) {
		return "", fmt.Errorf("%w: a server certificate is no host identity", ErrRole)
	}
	if slices.Contains(leaf.Subject.OrganizationalUnit, RoleMigration) {
		return "", fmt.Errorf("%w: a migration certificate is no host identity", ErrRole)
	}
	return leaf.Subject.CommonName, nil
}
