package etcdstore_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/vpool/vpool/internal/store"
)

// GetApplied answers what Get answers for a key written at or before
// atLeast — its value, its revisions, or ErrNotFound once deleted — in
// process from the embedded member, and still answers (through Get) when
// atLeast is past what the member applied.
func TestGetAppliedSeesWritesUpToItsRevision(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := startFast(t)
	var last int64
	for i := range 10 {
		_, rev, err := s.Txn(ctx, nil, []store.Op{store.Put("/a/k", fmt.Appendf(nil, "v%d", i)), store.Put(fmt.Sprintf("/a/o%d", i), []byte("x"))})
		if err != nil {
			t.Fatal(err)
		}
		last = rev
		for _, atLeast := range []int64{rev, rev + 1_000_000} {
			got, err := s.GetApplied(ctx, "/a/k", atLeast)
			want, _ := s.Get(ctx, "/a/k")
			if err != nil || string(got.Value) != fmt.Sprintf("v%d", i) || got.ModRev != rev || got.CreateRev != want.CreateRev {
				t.Fatalf("write %d at %d: GetApplied(%d) = %+v, %v; Get = %+v", i, rev, atLeast, got, err, want)
			}
		}
	}
	_, rev, err := s.Txn(ctx, nil, []store.Op{store.Delete("/a/k")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetApplied(ctx, "/a/k", rev); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted at %d (last put %d): GetApplied = %v, want ErrNotFound", rev, last, err)
	}
	if _, err := s.GetApplied(ctx, "/a/never", 1); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("never written: GetApplied = %v, want ErrNotFound", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetApplied(ctx, "/a/k", 1); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("GetApplied of a closed store: %v, want ErrClosed", err)
	}
}
