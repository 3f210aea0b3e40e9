package state

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// HashSecret is the hex SHA-256 of a bearer secret: the only form in
// which a secret is stored.
func HashSecret(secret string) string {
	s := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(s[:])
}

// CreateToken stores t under its Hash (which must be set). ErrExists when
// a token with that hash exists.
func (r *Repo) CreateToken(ctx context.Context, t *model.Token) error {
	if t.Hash == "" {
		return errors.New("state: token without hash")
	}
	if t.ID == "" {
		t.ID = NewID()[:12]
	}
	if t.CreatedAt.IsZero() {
		t.CreatedAt = r.now()
	}
	key := store.TokenKey(t.Hash)
	ok, _, err := r.txn(ctx, []store.Cond{store.IfAbsent(key)}, []store.Op{store.Put(key, encode(t))})
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: token", ErrExists)
	}
	return nil
}

// TokenByHash returns the token stored under hash (ErrNotFound).
func (r *Repo) TokenByHash(ctx context.Context, hash string) (*model.Token, error) {
	t := &model.Token{}
	if _, err := r.get(ctx, store.TokenKey(hash), t, false); err != nil {
		return nil, err
	}
	return t, nil
}

// ListTokens returns every token (with hashes; callers strip them).
func (r *Repo) ListTokens(ctx context.Context) ([]*model.Token, error) {
	kvs, _, err := r.st.List(ctx, store.TokensPrefix)
	if err != nil {
		return nil, fmt.Errorf("state: list tokens: %w", err)
	}
	out := make([]*model.Token, 0, len(kvs))
	for _, kv := range kvs {
		t := &model.Token{}
		if err := decode(kv, t); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// DeleteToken revokes the token with the given ID (ErrNotFound); it
// returns the revision of the deletion (a cache waits for it).
func (r *Repo) DeleteToken(ctx context.Context, id string) (int64, error) {
	toks, err := r.ListTokens(ctx)
	if err != nil {
		return 0, err
	}
	for _, t := range toks {
		if t.ID == id {
			_, rev, err := r.txn(ctx, nil, []store.Op{store.Delete(store.TokenKey(t.Hash))})
			return rev, err
		}
	}
	return 0, fmt.Errorf("state: token %s: %w", id, store.ErrNotFound)
}

// GetPolicy returns the placement policy (model.DefaultPolicy when none
// is stored) and its revision (0 when default).
func (r *Repo) GetPolicy(ctx context.Context) (model.Policy, int64, error) {
	p := model.DefaultPolicy()
	kv, err := r.st.Get(ctx, store.PolicyKey)
	if errors.Is(err, store.ErrNotFound) {
		return p, 0, nil
	}
	if err != nil {
		return p, 0, fmt.Errorf("state: get policy: %w", err)
	}
	p = model.Policy{}
	if err := decode(kv, &p); err != nil {
		return p, 0, err
	}
	return p, kv.ModRev, nil
}

// PutPolicy replaces the placement policy (the caller validates it).
func (r *Repo) PutPolicy(ctx context.Context, p model.Policy) (int64, error) {
	_, rev, err := r.txn(ctx, nil, []store.Op{store.Put(store.PolicyKey, encode(p)),
		EventOp(model.Event{Time: r.now(), Kind: "cluster.policy", Object: "cluster/policy", Message: "placement policy changed"})})
	return rev, err
}

// Join token errors.
var (
	// ErrTokenInvalid: no join token has this secret (never issued,
	// used up, or revoked).
	ErrTokenInvalid = errors.New("state: invalid join token")
	// ErrTokenExpired: the join token's time is over.
	ErrTokenExpired = errors.New("state: the join token has expired")
	// ErrTokenHost: a re-key token presented for another host name.
	ErrTokenHost = errors.New("state: the join token is bound to another host")
	// ErrHostJoined: the name is taken by a joined host; only a re-key
	// token of that name may join it again.
	ErrHostJoined = errors.New("state: a host of this name has joined already")
)

// Join admits host with the join token of hash and records the
// certificate issue makes as the host's only valid one, all in one
// transaction that consumes one use of the token (compare-and-swap on
// it): two joins with a single-use token give one host. A name already
// joined (a certificate binding or a host record) needs a re-key token
// of that name; its old certificate is revoked. issue runs at most once,
// after the checks pass.
func (r *Repo) Join(ctx context.Context, hash, host string, issue func() (HostIdentity, error)) (*HostIdentity, error) {
	var id *HostIdentity
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if err := backoff(ctx, attempt); err != nil {
			return nil, err
		}
		tok := &model.Token{}
		tokKey := store.TokenKey(hash)
		tokRev, err := r.get(ctx, tokKey, tok, true)
		if err != nil {
			return nil, err
		}
		if err := checkJoinToken(tok, tokRev, host, r.now()); err != nil {
			return nil, err
		}
		old, bindRev, err := r.HostIdentity(ctx, host)
		if err != nil {
			return nil, err
		}
		conds := []store.Cond{store.IfRev(tokKey, tokRev), store.IfRev(store.HostCertKey(host), bindRev)}
		if tok.Host == "" {
			// a fresh join: the name must be free of a binding and of a
			// host record (one from before bindings)
			if old != nil {
				return nil, fmt.Errorf("%w: %s", ErrHostJoined, host)
			}
			if _, err := r.st.Get(ctx, store.HostKey(host)); err == nil {
				return nil, fmt.Errorf("%w: %s", ErrHostJoined, host)
			} else if !errors.Is(err, store.ErrNotFound) {
				return nil, fmt.Errorf("state: host %s: %w", host, err)
			}
			conds = append(conds, store.IfAbsent(store.HostKey(host)))
		}
		if id == nil {
			issued, err := issue()
			if err != nil {
				return nil, err
			}
			issued.Host, issued.Pending = host, false
			id = &issued
		}
		ops := []store.Op{store.Put(store.HostCertKey(host), encode(id))}
		if tok.Uses--; tok.Uses > 0 {
			ops = append(ops, store.Put(tokKey, encode(tok)))
		} else {
			ops = append(ops, store.Delete(tokKey))
		}
		if old != nil && old.Serial != "" {
			ops = append(ops, revokeOp(old, r.now(), "re-keyed"))
		}
		ok, _, err := r.txn(ctx, conds, ops)
		if err != nil {
			return nil, err
		}
		if ok {
			return id, nil
		}
	}
	return nil, fmt.Errorf("%w: join %s", ErrContention, host)
}

func checkJoinToken(tok *model.Token, rev int64, host string, now time.Time) error {
	switch {
	case rev == 0 || tok.Purpose != "join" || tok.Uses <= 0:
		return ErrTokenInvalid
	case !tok.ExpiresAt.IsZero() && now.After(tok.ExpiresAt):
		return ErrTokenExpired
	case tok.Host != "" && tok.Host != host:
		return fmt.Errorf("%w (%s), not %s", ErrTokenHost, tok.Host, host)
	}
	return nil
}
