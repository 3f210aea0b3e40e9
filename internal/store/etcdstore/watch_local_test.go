package etcdstore_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/etcdstore"
)

// stalledWatches is a gRPC stream interceptor whose watch streams
// receive their first response (the watch created) and nothing after
// it until release is closed: a client of the member whose goroutines
// wait for a CPU, at the extreme.
func stalledWatches(release <-chan struct{}) grpc.DialOption {
	return grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		cs, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil || method != "/etcdserverpb.Watch/Watch" {
			return cs, err
		}
		return &stalledStream{ClientStream: cs, release: release}, nil
	})
}

type stalledStream struct {
	grpc.ClientStream
	release <-chan struct{}
	created bool // RecvMsg is called by one goroutine of the client
}

func (s *stalledStream) RecvMsg(m any) error {
	if s.created {
		select {
		case <-s.release:
		case <-s.Context().Done():
		}
	}
	s.created = true
	return s.ClientStream.RecvMsg(m)
}

// A watch of the embedded member is the member's own, in process: it
// delivers every write (puts with their values, deletes with the value
// deleted) while the member's gRPC client delivers no watch response at
// all, and the event of revision R is on its way once Revision has
// returned R. Over the client (before), no event came.
func TestEmbeddedWatchIsInProcess(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	defer close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := etcdstore.StartEmbedded(ctx, etcdstore.WithDialOptions(etcdstore.Config{DataDir: t.TempDir(), UnsafeNoFsync: true,
		Plaintext: true, HeartbeatInterval: 10 * time.Millisecond, ElectionTimeout: 100 * time.Millisecond}, stalledWatches(release)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// another client of the member writes, so that nothing of the
	// watching store's own client is involved
	w, err := etcdstore.Connect(ctx, s.Endpoints(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ch := s.Watch(ctx, "/w/", 0)
	ops := [][]store.Op{
		{store.Put("/w/a", []byte("1"))},
		{store.Put("/w/a", []byte("2")), store.Put("/x/other", []byte("no"))},
		{store.Delete("/w/a")},
	}
	want := []store.WatchEvent{
		{Type: store.EventPut, KV: store.KV{Key: "/w/a", Value: []byte("1")}},
		{Type: store.EventPut, KV: store.KV{Key: "/w/a", Value: []byte("2")}},
		{Type: store.EventDelete, KV: store.KV{Key: "/w/a", Value: []byte("2")}},
	}
	for i, op := range ops {
		_, wrote, err := w.Txn(ctx, nil, op)
		if err != nil {
			t.Fatal(err)
		}
		rev, err := s.Revision(ctx)
		if err != nil || rev != wrote {
			t.Fatalf("write %d at %d: Revision = %d, %v", i, wrote, rev, err)
		}
		wait := time.NewTimer(10 * time.Second)
		select {
		case resp := <-ch:
			if resp.Err != nil || len(resp.Events) != 1 {
				t.Fatalf("write %d: watch answered %+v", i, resp)
			}
			got := resp.Events[0]
			if got.Type != want[i].Type || got.KV.Key != want[i].KV.Key || string(got.KV.Value) != string(want[i].KV.Value) || got.Rev != wrote {
				t.Fatalf("write %d at %d: event %+v, want %+v at %d", i, wrote, got, want[i], wrote)
			}
		case <-wait.C:
			t.Fatalf("write %d at %d: no event in 10 s with the member's client stalled (the watch goes through the client)", i, wrote)
		}
		wait.Stop()
	}
}
