package etcdstore_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/etcdstore"
	"github.com/vpool/vpool/internal/store/etcdstore/etcdtest"
	"github.com/vpool/vpool/internal/store/storetest"
)

func TestMain(m *testing.M) {
	etcdtest.MaybeRunMember() // children started by etcdtest stop here
	os.Exit(m.Run())
}

func connect(t *testing.T, endpoints []string) *etcdstore.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := etcdstore.Connect(ctx, endpoints, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestThreeMemberCluster runs the contract suite against a real
// 3-member cluster of child processes through Connect, then kills -9 one
// member (writes go on with 2 of 3) and a second (writes stop).
func TestThreeMemberCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three etcd processes")
	}
	t.Parallel()
	c := etcdtest.Start(t, 3)
	eps := c.Endpoints()
	t.Run("Contract", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) store.Store { return connect(t, eps) })
	})
	// A client per member as well, to see every member agree.
	s := connect(t, eps)
	put := func(ctx context.Context, key string) error {
		ok, _, err := s.Txn(ctx, nil, []store.Op{store.Put(key, []byte("v"))})
		if err == nil && !ok {
			err = errors.New("txn without conds failed")
		}
		return err
	}
	if err := put(context.Background(), "/kill/before"); err != nil {
		t.Fatal(err)
	}

	if err := c.Members[0].Kill(); err != nil {
		t.Fatal(err)
	}
	// The first write may wait for a new leader; after that, every write
	// succeeds with two members of three.
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		err := put(ctx, "/kill/first")
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no write accepted 30 s after killing one member of three: %v", err)
		}
	}
	for i := 0; i < 20; i++ {
		if err := put(context.Background(), fmt.Sprintf("/kill/after/%02d", i)); err != nil {
			t.Fatalf("write %d with 2 of 3 members: %v", i, err)
		}
	}
	survivor := connect(t, eps[2:])
	kvs, _, err := survivor.List(context.Background(), "/kill/")
	if err != nil || len(kvs) != 22 {
		t.Fatalf("survivor lists %d keys, err %v; want 22", len(kvs), err)
	}

	// With one member of three, there is no quorum: writes fail.
	if err := c.Members[1].Kill(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := put(ctx, "/kill/noquorum"); err == nil {
		t.Fatal("write accepted by one member of three")
	}
}
