package state

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// A host speaks with the one certificate its binding names
// (store.HostCertKey): Join writes it, RekeyHost empties it and
// RemoveHost deletes it, each revoking the certificate it replaces
// (store.RevokedKey), so a certificate outlives neither its host nor a
// re-key. The server checks both on every agent request and at the TLS
// handshake.

// Host certificate errors.
var (
	// ErrCertRevoked: the certificate was revoked (host removed or
	// re-keyed).
	ErrCertRevoked = errors.New("state: the host certificate was revoked")
	// ErrCertReplaced: the host's binding names another certificate, or
	// none while a re-key waits for the host to join again.
	ErrCertReplaced = errors.New("state: the host certificate is not the host's current one")
	// ErrNotJoined: no host of this name has joined (or it was removed).
	ErrNotJoined = errors.New("state: the host is not joined")
)

// HostIdentity binds a host name to its one valid certificate.
type HostIdentity struct {
	Host     string    `json:"host"`
	Serial   string    `json:"serial,omitempty"` // hex; empty while Pending
	NotAfter time.Time `json:"notAfter"`
	IssuedAt time.Time `json:"issuedAt"`
	// Pending: re-keyed; no certificate is valid until the host joins
	// again with its re-key token.
	Pending bool `json:"pending,omitempty"`
}

// Revoked is a revoked certificate, kept until it expires.
type Revoked struct {
	Serial    string    `json:"serial"`
	Host      string    `json:"host"`
	NotAfter  time.Time `json:"notAfter"`
	RevokedAt time.Time `json:"revokedAt"`
	Reason    string    `json:"reason"`
}

func revokeOp(id *HostIdentity, now time.Time, reason string) store.Op {
	return store.Put(store.RevokedKey(id.Serial), encode(Revoked{Serial: id.Serial, Host: id.Host, NotAfter: id.NotAfter, RevokedAt: now, Reason: reason}))
}

// HostIdentity returns host's binding and its revision; nil and 0 when
// there is none.
func (r *Repo) HostIdentity(ctx context.Context, host string) (*HostIdentity, int64, error) {
	id := &HostIdentity{}
	rev, err := r.get(ctx, store.HostCertKey(host), id, true)
	if err != nil || rev == 0 {
		return nil, 0, err
	}
	return id, rev, nil
}

// CheckCert says whether serial is host's current certificate:
// ErrNotJoined without a binding, ErrCertReplaced for another one.
func (id *HostIdentity) CheckCert(serial string) error {
	switch {
	case id == nil:
		return ErrNotJoined
	case id.Pending || id.Serial != serial:
		return ErrCertReplaced
	}
	return nil
}

// PKIState is every binding and revocation, as of Revision.
type PKIState struct {
	Bindings map[string]HostIdentity // by host
	Revoked  map[string]Revoked      // by serial
	Revision int64
}

// LoadPKI lists the bindings and revocations.
func (r *Repo) LoadPKI(ctx context.Context) (PKIState, error) {
	kvs, rev, err := r.st.List(ctx, store.PKIPrefix)
	if err != nil {
		return PKIState{}, fmt.Errorf("state: list pki: %w", err)
	}
	ps := PKIState{Bindings: map[string]HostIdentity{}, Revoked: map[string]Revoked{}, Revision: rev}
	for _, kv := range kvs {
		if err := ps.Apply(store.WatchEvent{Type: store.EventPut, KV: kv}); err != nil {
			return PKIState{}, err
		}
	}
	return ps, nil
}

// Apply folds one watch event under store.PKIPrefix into ps.
func (ps *PKIState) Apply(ev store.WatchEvent) error {
	switch {
	case strings.HasPrefix(ev.KV.Key, store.HostCertsPrefix):
		host := strings.TrimPrefix(ev.KV.Key, store.HostCertsPrefix)
		if ev.Type == store.EventDelete {
			delete(ps.Bindings, host)
			return nil
		}
		var id HostIdentity
		if err := decode(ev.KV, &id); err != nil {
			return err
		}
		ps.Bindings[host] = id
	case strings.HasPrefix(ev.KV.Key, store.RevokedPrefix):
		serial := strings.TrimPrefix(ev.KV.Key, store.RevokedPrefix)
		if ev.Type == store.EventDelete {
			delete(ps.Revoked, serial)
			return nil
		}
		var rv Revoked
		if err := decode(ev.KV, &rv); err != nil {
			return err
		}
		ps.Revoked[serial] = rv
	}
	return nil
}

// RekeyHost stores tok, a single-use join token bound to host, and
// revokes host's current certificate at once: the host is refused until
// it joins again with tok. ErrNotFound when no host of that name exists
// or has joined.
func (r *Repo) RekeyHost(ctx context.Context, host string, tok *model.Token) error {
	tok.Host, tok.Purpose, tok.Uses = host, "join", 1
	if tok.CreatedAt.IsZero() {
		tok.CreatedAt = r.now()
	}
	if tok.ID == "" {
		tok.ID = NewID()[:12]
	}
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if err := backoff(ctx, attempt); err != nil {
			return err
		}
		old, rev, err := r.HostIdentity(ctx, host)
		if err != nil {
			return err
		}
		hostKV, err := r.st.Get(ctx, store.HostKey(host))
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("state: host %s: %w", host, err)
		}
		if old == nil && err != nil {
			return fmt.Errorf("state: host %s: %w", host, store.ErrNotFound)
		}
		now := r.now()
		pending := HostIdentity{Host: host, Pending: true, IssuedAt: now}
		conds := []store.Cond{store.IfRev(store.HostCertKey(host), rev), store.IfAbsent(store.TokenKey(tok.Hash))}
		if old == nil {
			conds = append(conds, store.IfRev(store.HostKey(host), hostKV.ModRev))
		}
		ops := []store.Op{store.Put(store.TokenKey(tok.Hash), encode(tok)), store.Put(store.HostCertKey(host), encode(pending)),
			EventOp(model.Event{Time: now, Kind: EventHostRekeyed, Object: HostObject(host), Message: "host " + host + " re-keyed: its certificate is revoked until it joins again"})}
		if old != nil && old.Serial != "" {
			ops = append(ops, revokeOp(old, now, "re-keyed"))
		}
		ok, _, err := r.txn(ctx, conds, ops)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
	}
	return fmt.Errorf("%w: rekey %s", ErrContention, host)
}

// EventHostRekeyed is the event of a re-key.
const EventHostRekeyed = "host.rekeyed"

// RemoveHost forgets a host with no VMs, like DeleteHost, and in the
// same transaction deletes its certificate binding and revokes that
// certificate: the removed host's next request is refused and can never
// bring the host back. A host that joined but never reported has only a
// binding; that goes too. ErrNotFound when neither exists.
func (r *Repo) RemoveHost(ctx context.Context, name string) error {
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if err := backoff(ctx, attempt); err != nil {
			return err
		}
		id, idRev, err := r.HostIdentity(ctx, name)
		if err != nil {
			return err
		}
		var hostRev int64
		if h, err := r.GetHost(ctx, name); err == nil {
			hostRev = h.Revision
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		} else if id == nil {
			return err
		}
		a, err := r.GetAllocation(ctx, name)
		if err != nil {
			return err
		}
		if len(a.VMs) > 0 {
			return fmt.Errorf("%w: host %s holds %d VMs; drain it first", ErrNotEmpty, name, len(a.VMs))
		}
		now := r.now()
		conds := []store.Cond{store.IfRev(store.HostKey(name), hostRev), store.IfRev(store.AllocKey(name), a.Revision),
			store.IfRev(store.HostCertKey(name), idRev)}
		ops := []store.Op{store.Delete(store.HostKey(name)), store.Delete(store.AllocKey(name)), store.Delete(store.AliveKey(name)),
			store.Delete(store.HostCertKey(name)),
			EventOp(model.Event{Time: now, Kind: EventHostGone, Object: HostObject(name), Message: "host " + name + " deleted; its certificate is revoked"})}
		if id != nil && id.Serial != "" {
			ops = append(ops, revokeOp(id, now, "host removed"))
		}
		ok, _, err := r.txn(ctx, conds, ops)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
	}
	return fmt.Errorf("%w: host %s", ErrContention, name)
}

// HeartbeatGuard is UpsertHostGuarded's guard for a heartbeat made with
// the certificate serial (expiring at notAfter): the host's binding must
// name it. A host record from before bindings, with no binding, adopts
// the certificate (trust on first use after an upgrade); with neither a
// binding nor a record the host is not joined (ErrNotJoined), and the
// heartbeat never creates it.
func (r *Repo) HeartbeatGuard(host, serial string, notAfter time.Time) HostGuard {
	return func(ctx context.Context, old *model.Host) ([]store.Cond, []store.Op, error) {
		id, rev, err := r.HostIdentity(ctx, host)
		if err != nil {
			return nil, nil, err
		}
		conds := []store.Cond{store.IfRev(store.HostCertKey(host), rev), store.IfAbsent(store.RevokedKey(serial))}
		switch {
		case id != nil:
			return conds, nil, id.CheckCert(serial)
		case old == nil:
			return nil, nil, ErrNotJoined
		}
		adopt := HostIdentity{Host: host, Serial: serial, NotAfter: notAfter, IssuedAt: r.now()}
		return conds, []store.Op{store.Put(store.HostCertKey(host), encode(adopt))}, nil
	}
}

// PruneRevoked deletes revocations of certificates expired before now:
// the TLS handshake refuses those anyway.
func (r *Repo) PruneRevoked(ctx context.Context, ps PKIState, now time.Time) error {
	for serial, rv := range ps.Revoked {
		if rv.NotAfter.IsZero() || !now.After(rv.NotAfter) {
			continue
		}
		if _, _, err := r.txn(ctx, nil, []store.Op{store.Delete(store.RevokedKey(serial))}); err != nil {
			return err
		}
	}
	return nil
}
