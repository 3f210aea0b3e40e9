package server

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/memstore"
)

// electingStore applies VM writes and then answers them as etcd does
// when its leader changes mid-write: "request timed out", outcome
// unknown.
type electingStore struct {
	store.Store
	on atomic.Bool
}

func (s *electingStore) Txn(ctx context.Context, conds []store.Cond, ops []store.Op) (bool, int64, error) {
	ok, rev, err := s.Store.Txn(ctx, conds, ops)
	if err == nil && s.on.Load() {
		for _, op := range ops {
			if strings.HasPrefix(op.Key, store.VMsPrefix) {
				return false, 0, fmt.Errorf("etcdstore: txn: %w: %w", store.ErrUnavailable, errors.New("etcdserver: request timed out"))
			}
		}
	}
	return ok, rev, err
}

// A write whose outcome the store could not tell is 503 unavailable,
// saying to read back before retrying (it was 500 internal), and a read
// back finds what was made.
func TestStoreTimeoutIsUnavailable(t *testing.T) {
	mem := memstore.New()
	defer mem.Close()
	st := &electingStore{Store: mem}
	ts := startServer(t, st)
	st.on.Store(true)
	code, e := ts.call("POST", "/api/v1/vms", ts.AdminToken(), vmReq("v1"), nil)
	st.on.Store(false)
	if code != 503 || e.Code != api.CodeUnavailable || !strings.Contains(e.Message, "read it back") {
		t.Fatalf("create during an election = %d %+v, want 503 unavailable saying to read back", code, e)
	}
	ts.mustCall(200, "GET", "/api/v1/vms/v1", ts.AdminToken(), nil, nil)
}
