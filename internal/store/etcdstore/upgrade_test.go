package etcdstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/etcdstore"
)

// A member that served plain http (vpool before TLS) starts again on
// its data dir with mutual TLS and keeps its data.
func TestPlaintextMemberRestartsWithTLS(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg := etcdstore.Config{DataDir: t.TempDir(), UnsafeNoFsync: true, HeartbeatInterval: 10 * time.Millisecond, ElectionTimeout: 100 * time.Millisecond}
	plain := cfg
	plain.Plaintext = true
	s, err := etcdstore.StartEmbedded(ctx, plain)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Txn(ctx, nil, []store.Op{store.Put("/k", []byte("v"))}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = etcdstore.StartEmbedded(ctx, cfg)
	if err != nil {
		t.Fatalf("restart with TLS: %v", err)
	}
	defer s.Close()
	if kv, err := s.Get(ctx, "/k"); err != nil || string(kv.Value) != "v" || s.LocalTLS() == nil {
		t.Fatalf("after the restart: %+v %v", kv, err)
	}
}
