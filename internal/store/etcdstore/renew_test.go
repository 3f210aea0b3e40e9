package etcdstore_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/etcdstore"
)

// TestKeepAliveSharedStream renews live and revoked leases from many
// goroutines at once over the one shared stream: every answer must reach
// the caller that asked (a revoked lease, and only it, says ErrNoLease),
// and renewals keep working after the stream was used by a failing call.
func TestKeepAliveSharedStream(t *testing.T) {
	s, err := etcdstore.StartEmbedded(context.Background(), etcdstore.Config{DataDir: t.TempDir(), UnsafeNoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	const n = 40
	ids := make([]store.LeaseID, n)
	for i := range ids {
		if ids[i], err = s.Grant(ctx, 30); err != nil {
			t.Fatal(err)
		}
	}
	dead := map[int]bool{}
	for i := 0; i < n; i += 5 {
		if err := s.Revoke(ctx, ids[i]); err != nil {
			t.Fatal(err)
		}
		dead[i] = true
	}
	var wg sync.WaitGroup
	errs := make(chan error, n*20)
	for g := range 8 {
		wg.Go(func() {
			for k := range 100 {
				i := (g*7 + k*3) % n
				err := s.KeepAlive(ctx, ids[i])
				switch {
				case dead[i] && !errors.Is(err, store.ErrNoLease):
					errs <- errors.New("a revoked lease renewed: " + errString(err))
				case !dead[i] && err != nil:
					errs <- errors.New("a live lease failed: " + err.Error())
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func errString(err error) string {
	if err == nil {
		return "no error"
	}
	return err.Error()
}
