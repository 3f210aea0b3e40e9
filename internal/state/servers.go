package state

import (
	"context"
	"fmt"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// PurposeServerJoin marks a server join token (vpool cluster member
// add): single use, bound to one server name. Host joins refuse it, and
// server joins refuse every other token.
const PurposeServerJoin = "server-join"

// ServerJoinToken checks the server join token of hash for the server
// name at now and returns its revision, for ConsumeServerJoin.
func (r *Repo) ServerJoinToken(ctx context.Context, hash, name string, now time.Time) (int64, error) {
	tok := &model.Token{}
	rev, err := r.get(ctx, store.TokenKey(hash), tok, true)
	if err != nil {
		return 0, err
	}
	switch {
	case rev == 0 || tok.Purpose != PurposeServerJoin || tok.Uses <= 0:
		return 0, ErrTokenInvalid
	case !tok.ExpiresAt.IsZero() && now.After(tok.ExpiresAt):
		return 0, ErrTokenExpired
	case tok.Host != name:
		return 0, fmt.Errorf("%w (%s), not %s", ErrTokenHost, tok.Host, name)
	}
	return rev, nil
}

// ConsumeServerJoin deletes the server join token of hash if it is still
// at rev: of two joins with one token, one gets ErrTokenInvalid.
func (r *Repo) ConsumeServerJoin(ctx context.Context, hash string, rev int64) error {
	key := store.TokenKey(hash)
	ok, _, err := r.txn(ctx, []store.Cond{store.IfRev(key, rev)}, []store.Op{store.Delete(key)})
	if err != nil {
		return err
	}
	if !ok {
		return ErrTokenInvalid
	}
	return nil
}

// ListServers returns the records of the running servers by name.
func (r *Repo) ListServers(ctx context.Context) (map[string]model.ServerRecord, error) {
	kvs, _, err := r.st.List(ctx, store.ServersPrefix)
	if err != nil {
		return nil, fmt.Errorf("state: list servers: %w", err)
	}
	out := make(map[string]model.ServerRecord, len(kvs))
	for _, kv := range kvs {
		var rec model.ServerRecord
		if err := decode(kv, &rec); err != nil {
			return nil, err
		}
		out[rec.Name] = rec
	}
	return out, nil
}

// PutServer announces a running server, attached to its lease.
func (r *Repo) PutServer(ctx context.Context, rec model.ServerRecord, lease store.LeaseID) error {
	_, _, err := r.txn(ctx, nil, []store.Op{store.PutWithLease(store.ServerKey(rec.Name), encode(rec), lease)})
	return err
}
