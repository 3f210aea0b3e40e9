package server

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/memstore"
)

// tokenGetStore counts the store reads of single tokens.
type tokenGetStore struct {
	store.Store
	gets atomic.Int64
}

func (c *tokenGetStore) Get(ctx context.Context, key string) (store.KV, error) {
	if strings.HasPrefix(key, store.TokensPrefix) {
		c.gets.Add(1)
	}
	return c.Store.Get(ctx, key)
}

// TestTokenCheckFromView: once the view holds a token, authenticating
// with it reads nothing from the store; a token revoked behind the
// server's back (another server, straight in the store) is refused as
// soon as the view has the deletion, and an expired cached token is
// refused by the clock.
func TestTokenCheckFromView(t *testing.T) {
	ms := memstore.New()
	t.Cleanup(func() { ms.Close() })
	cs := &tokenGetStore{Store: ms}
	now := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	var clock atomic.Pointer[time.Time]
	clock.Store(&now)
	ts := startServer(t, cs, func(c *Config) { c.Clock = func() time.Time { return *clock.Load() } })
	admin := ts.AdminToken()
	var tok api.TokenCreateResponse
	ts.mustCall(201, "POST", "/api/v1/tokens", admin, api.TokenCreateRequest{Role: model.RoleViewer, Project: "default", TTL: "1h"}, &tok)
	ts.mustCall(200, "GET", "/api/v1/vms", tok.Secret, nil, nil) // may come from the store: the view can lag

	waitView(t, ts, 0)
	before := cs.gets.Load()
	for range 20 {
		ts.mustCall(200, "GET", "/api/v1/vms", tok.Secret, nil, nil)
		ts.mustCall(200, "GET", "/api/v1/vms", admin, nil, nil)
	}
	if n := cs.gets.Load() - before; n != 0 {
		t.Errorf("40 authenticated requests read %d tokens from the store, want 0 (the view holds them)", n)
	}

	// revoked straight in the store, as another server would
	rev, err := state.New(ms, nil).DeleteToken(context.Background(), tok.Token.ID)
	if err != nil {
		t.Fatal(err)
	}
	waitView(t, ts, rev)
	if code, e := ts.call("GET", "/api/v1/vms", tok.Secret, nil, nil); code != http.StatusUnauthorized {
		t.Fatalf("a token revoked in the store: %d %+v, want 401", code, e)
	}

	// an expired token the view holds
	var short api.TokenCreateResponse
	ts.mustCall(201, "POST", "/api/v1/tokens", admin, api.TokenCreateRequest{Role: model.RoleViewer, Project: "default", TTL: "1h"}, &short)
	ts.mustCall(200, "GET", "/api/v1/vms", short.Secret, nil, nil)
	waitView(t, ts, 0)
	later := now.Add(2 * time.Hour)
	clock.Store(&later)
	if code, e := ts.call("GET", "/api/v1/vms", short.Secret, nil, nil); code != http.StatusUnauthorized || !strings.Contains(e.Message, "expired") {
		t.Fatalf("an expired cached token: %d %+v, want 401 expired", code, e)
	}
}

// waitView waits until the server's view applied rev (and the store's
// current revision when rev is behind it).
func waitView(t *testing.T, ts *testServer, rev int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cur, err := ts.view.consistent(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.view.c.WaitRev(ctx, max(rev, cur)); err != nil {
		t.Fatal(err)
	}
}
