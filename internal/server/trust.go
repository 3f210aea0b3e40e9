package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/vpool/vpool/internal/pki"
	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
)

// trust is the server's view of which host certificates are valid: the
// bindings and revocations under store.PKIPrefix (internal/state,
// hostcerts.go), cached and kept fresh by a watch. The agent listener's
// TLS handshake refuses a revoked certificate (VerifyConnection); every
// agent request checks that the certificate is its host's current one
// (agentWrap), asking the store when the cache cannot confirm it; and a
// heartbeat's host write holds that check in its transaction.
type trust struct {
	repo *state.Repo
	now  func() time.Time

	mu    sync.RWMutex
	ps    state.PKIState
	ready bool
}

func newTrust(repo *state.Repo, now func() time.Time) *trust {
	return &trust{repo: repo, now: now}
}

// load reads the bindings and revocations afresh.
func (t *trust) load(ctx context.Context) (int64, error) {
	ps, err := t.repo.LoadPKI(ctx)
	if err != nil {
		return 0, err
	}
	t.mu.Lock()
	t.ps, t.ready = ps, true
	t.mu.Unlock()
	return ps.Revision, nil
}

// pruneInterval is how often expired revocations are deleted.
const pruneInterval = time.Hour

// run keeps the cache fresh until ctx ends: a watch from the loaded
// revision, reloading when the watch breaks; expired revocations are
// pruned at the start and every pruneInterval.
func (t *trust) run(ctx context.Context, st store.Store, rev int64) {
	go t.pruneLoop(ctx)
	for ctx.Err() == nil {
		for resp := range st.Watch(ctx, store.PKIPrefix, rev+1) {
			if resp.Err != nil {
				break
			}
			t.mu.Lock()
			for _, ev := range resp.Events {
				_ = t.ps.Apply(ev) // an undecodable record is no binding
				rev = max(rev, ev.Rev)
			}
			t.mu.Unlock()
		}
		if ctx.Err() != nil {
			return
		}
		var err error
		if rev, err = t.load(ctx); err != nil {
			// until a load succeeds, confirm every certificate with the store
			t.mu.Lock()
			t.ready = false
			t.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}
}

func (t *trust) pruneLoop(ctx context.Context) {
	tick := time.NewTicker(pruneInterval)
	defer tick.Stop()
	for {
		t.mu.RLock()
		ps := state.PKIState{Revoked: maps.Clone(t.ps.Revoked)}
		t.mu.RUnlock()
		_ = t.repo.PruneRevoked(ctx, ps, t.now()) // retried at the next tick
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// forget drops host's cached binding after this server revoked its
// certificate (re-key, removal), so that the next request of that host
// is checked against the store rather than a cache the revocation's
// watch event has not reached yet: read-your-writes on the server that
// revoked. Other servers follow within their watch's delay.
func (t *trust) forget(host string) {
	t.mu.Lock()
	delete(t.ps.Bindings, host)
	t.mu.Unlock()
}

// revoked says whether the cache lists serial as revoked.
func (t *trust) revoked(serial string) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	_, ok := t.ps.Revoked[serial]
	return ok
}

// check says whether the certificate serial speaks for host now. A
// revocation or a binding that names serial is answered from the cache;
// anything else (no binding cached, or another serial: the cache may lag
// behind a join) from the store.
func (t *trust) check(ctx context.Context, host, serial string) error {
	t.mu.RLock()
	_, revoked := t.ps.Revoked[serial]
	id, bound := t.ps.Bindings[host]
	ready := t.ready
	t.mu.RUnlock()
	switch {
	case revoked:
		return state.ErrCertRevoked
	case ready && bound && id.CheckCert(serial) == nil:
		return nil
	}
	stored, _, err := t.repo.HostIdentity(ctx, host)
	if err != nil {
		return err
	}
	return stored.CheckCert(serial)
}

// verifyConnection is the agent listener's tls.Config VerifyConnection:
// a client certificate (join comes without one) must name a host and be
// absent from the revocation list.
func (t *trust) verifyConnection(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return nil
	}
	leaf := cs.PeerCertificates[0]
	host, err := pki.HostOf(leaf)
	if err != nil {
		return err
	}
	if t.revoked(pki.SerialHex(leaf.SerialNumber)) {
		return fmt.Errorf("server: host %s: %w", host, state.ErrCertRevoked)
	}
	return nil
}

// peerHost returns the host a request's verified client certificate
// speaks for, and the certificate; "" without one.
func peerHost(cs *tls.ConnectionState) (string, *x509.Certificate, error) {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return "", nil, nil
	}
	leaf := cs.VerifiedChains[0][0]
	host, err := pki.HostOf(leaf)
	if err != nil {
		return "", nil, err
	}
	return host, leaf, nil
}

// certRefused is the 403 of a certificate that no longer speaks for its
// host, naming the way back.
func certRefused(host string, err error) error {
	switch {
	case errors.Is(err, state.ErrCertRevoked), errors.Is(err, state.ErrCertReplaced):
		return forbidden("the certificate of host %s was revoked (host removed or re-keyed): join again with a token from `vpool host rekey %s`", host, host)
	case errors.Is(err, state.ErrNotJoined):
		return forbidden("host %s is not joined (it was removed?): join it with a token from `vpool host join-token`", host)
	}
	return err
}
