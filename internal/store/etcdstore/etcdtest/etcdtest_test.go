package etcdtest_test

import (
	"context"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/etcdstore"
	"github.com/vpool/vpool/internal/store/etcdstore/etcdtest"
)

// TestStartClusterWithoutHook covers the path for test binaries without
// MaybeRunMember in TestMain: the member binary is built with go build.
// (This package has no TestMain on purpose.)
func TestStartClusterWithoutHook(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts an etcd member process")
	}
	eps := etcdtest.StartCluster(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := etcdstore.Connect(ctx, eps, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if ok, _, err := s.Txn(ctx, nil, []store.Op{store.Put("/k", []byte("v"))}); err != nil || !ok {
		t.Fatalf("put: ok=%v err=%v", ok, err)
	}
	if kv, err := s.Get(ctx, "/k"); err != nil || string(kv.Value) != "v" {
		t.Fatalf("get: %+v %v", kv, err)
	}
}

// A cluster with TLS and authentication takes a client with the test's
// certificate and the root password, and no other.
func TestStartSecureCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts an etcd member process")
	}
	cl := etcdtest.StartWith(t, 1, etcdtest.Options{TLS: true, Password: "pw-1"})
	ctx := context.Background()
	within := func(d time.Duration) context.Context {
		c, cancel := context.WithTimeout(ctx, d)
		t.Cleanup(cancel)
		return c
	}
	if s, err := etcdstore.ConnectWith(within(5*time.Second), etcdstore.ClientConfig{Endpoints: cl.Endpoints(), TLS: cl.ClientTLS(t)}); err == nil {
		s.Close()
		t.Fatal("a client without the password was accepted")
	}
	// 30 s: the password check (bcrypt) and the TLS handshake took over
	// 5 s on a machine loaded 17 times over (CI, once)
	s, err := etcdstore.ConnectWith(within(30*time.Second), etcdstore.ClientConfig{Endpoints: cl.Endpoints(), TLS: cl.ClientTLS(t), Username: cl.User, Password: cl.Password})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if ok, _, err := s.Txn(ctx, nil, []store.Op{store.Put("/k", []byte("v"))}); err != nil || !ok {
		t.Fatalf("put: ok=%v err=%v", ok, err)
	}
}
