package fleet

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"

	"github.com/vpool/vpool/internal/pki"
)

// Identities survive a restart in Config.StateDir (one file: the CA and
// every host's key and certificate), so that a fleet of 10,000 hosts
// joins once, not at every start.

const identityFile = "identities.json"

type savedIdentities struct {
	CA    string                  `json:"ca"`
	Hosts map[string]savedHostKey `json:"hosts"`
}

type savedHostKey struct {
	Cert string `json:"cert"`
	Key  string `json:"key"`
}

// loadIdentities gives the hosts named in StateDir's file their client.
func (f *Fleet) loadIdentities() error {
	if f.cfg.StateDir == "" {
		return nil
	}
	b, err := os.ReadFile(filepath.Join(f.cfg.StateDir, identityFile))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("fleet: identities: %w", err)
	}
	var saved savedIdentities
	if err := json.Unmarshal(b, &saved); err != nil {
		return fmt.Errorf("fleet: identities: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(saved.CA)) {
		return fmt.Errorf("fleet: identities: no CA in %s", identityFile)
	}
	for _, h := range f.hosts {
		k, ok := saved.Hosts[h.name]
		if !ok {
			continue
		}
		if err := h.open([]byte(k.Cert), []byte(k.Key), []byte(saved.CA), roots); err != nil {
			return err
		}
		f.joined.Add(1)
	}
	return nil
}

// saveIdentities writes every host's identity into StateDir.
func (f *Fleet) saveIdentities() {
	if f.cfg.StateDir == "" {
		return
	}
	saved := savedIdentities{Hosts: map[string]savedHostKey{}}
	for _, h := range f.hosts {
		if h.client == nil {
			continue
		}
		saved.CA = string(h.caPEM)
		saved.Hosts[h.name] = savedHostKey{Cert: string(h.certPEM), Key: string(h.keyPEM)}
	}
	b, err := json.Marshal(saved)
	if err == nil {
		err = os.MkdirAll(f.cfg.StateDir, 0o700)
	}
	if err == nil {
		tmp := filepath.Join(f.cfg.StateDir, identityFile+".tmp")
		if err = os.WriteFile(tmp, b, 0o600); err == nil {
			err = os.Rename(tmp, filepath.Join(f.cfg.StateDir, identityFile))
		}
	}
	if err != nil {
		f.log.Warn("could not save the fleet's identities; the hosts join again at the next start", "err", err)
	}
}

// open makes the host's client from its key, certificate and the CA.
func (h *host) open(certPEM, keyPEM, caPEM []byte, roots *x509.CertPool) error {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("fleet: %s's certificate: %w", h.name, err)
	}
	h.certPEM, h.keyPEM, h.caPEM = certPEM, keyPEM, caPEM
	h.client = &http.Client{Transport: &http.Transport{ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 1,
		TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}, RootCAs: roots,
			VerifyConnection: pki.VerifyServerConnection}}}
	return nil
}
