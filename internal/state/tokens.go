package state

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

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

// DeleteToken revokes the token with the given ID (ErrNotFound).
func (r *Repo) DeleteToken(ctx context.Context, id string) error {
	toks, err := r.ListTokens(ctx)
	if err != nil {
		return err
	}
	for _, t := range toks {
		if t.ID == id {
			_, _, err := r.txn(ctx, nil, []store.Op{store.Delete(store.TokenKey(t.Hash))})
			return err
		}
	}
	return fmt.Errorf("state: token %s: %w", id, store.ErrNotFound)
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
