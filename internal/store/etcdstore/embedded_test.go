package etcdstore_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/etcdstore"
)

// The data survives a restart of the member on the same data dir, even
// on other ports.
func TestEmbeddedRestartKeepsData(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	cfg := etcdstore.Config{DataDir: dir, UnsafeNoFsync: true, HeartbeatInterval: 10 * time.Millisecond, ElectionTimeout: 100 * time.Millisecond}
	s, err := etcdstore.StartEmbedded(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, rev, err := s.Txn(ctx, nil, []store.Op{store.Put("/k", []byte("v"))})
	if err != nil {
		t.Fatal(err)
	}
	term, err := s.RaftTerm(ctx)
	if err != nil || term == 0 {
		t.Fatalf("raft term %d, %v", term, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = etcdstore.StartEmbedded(ctx, cfg)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	defer s.Close()
	// the restart elected a leader again: a new term (host HA's fence
	// commands wait a fence timeout after one)
	if after, err := s.RaftTerm(ctx); err != nil || after <= term {
		t.Fatalf("raft term after a restart %d, %v; want above %d", after, err, term)
	}
	kv, err := s.Get(ctx, "/k")
	if err != nil || string(kv.Value) != "v" || kv.ModRev != rev {
		t.Fatalf("after restart: %+v, %v; want v at revision %d", kv, err, rev)
	}
}

// Several members start side by side in one process without port
// collisions, and a unix socket works as client URL (in plaintext).
func TestEmbeddedParallelAndUnix(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(t.TempDir(), "c.sock")
	urls := []string{"", "", "", "unix://" + sock}
	errc := make(chan error, len(urls))
	for _, u := range urls {
		go func() {
			s, err := etcdstore.StartEmbedded(context.Background(), etcdstore.Config{
				DataDir: t.TempDir(), ClientURL: u, UnsafeNoFsync: true, Plaintext: u != "",
				HeartbeatInterval: 10 * time.Millisecond, ElectionTimeout: 100 * time.Millisecond,
			})
			if err != nil {
				errc <- err
				return
			}
			defer s.Close()
			if u != "" && s.Endpoints()[0] != u {
				errc <- errors.New("endpoint " + s.Endpoints()[0] + ", want " + u)
				return
			}
			_, _, err = s.Txn(context.Background(), nil, []store.Op{store.Put("/k", []byte("v"))})
			errc <- err
		}()
	}
	for range urls {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
}

func TestEmbeddedConfigErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  etcdstore.Config
		want string
	}{
		{"no data dir", etcdstore.Config{}, "DataDir is required"},
		{"bad scheme", etcdstore.Config{DataDir: t.TempDir(), ClientURL: "ftp://127.0.0.1:1", Plaintext: true}, "scheme"},
		{"plain url with TLS", etcdstore.Config{DataDir: t.TempDir(), ClientURL: "http://127.0.0.1:0"}, "must be https"},
		{"unix socket with TLS", etcdstore.Config{DataDir: t.TempDir(), PeerURL: "unix:///tmp/x.sock"}, "must be https"},
		{"bad cluster state", etcdstore.Config{DataDir: t.TempDir(), ClusterState: "sideways"}, "sideways"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := etcdstore.StartEmbedded(context.Background(), tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

// etcd's logs go to the injected logger at warn and above, with the
// noise of a normal start and stop left out.
func TestEmbeddedLogsQuiet(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&syncWriter{w: &buf}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := etcdstore.StartEmbedded(context.Background(), etcdstore.Config{
		DataDir: t.TempDir(), Logger: log, UnsafeNoFsync: true,
		HeartbeatInterval: 10 * time.Millisecond, ElectionTimeout: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if line != "" && !strings.Contains(line, "level=DEBUG") {
			t.Errorf("a clean start and stop logged: %s", line)
		}
	}
}

func TestConnectErrors(t *testing.T) {
	t.Parallel()
	if _, err := etcdstore.Connect(context.Background(), nil, nil); err == nil {
		t.Error("connect without endpoints succeeded")
	}
	port, err := etcdstore.FreePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if s, err := etcdstore.Connect(ctx, []string{"http://127.0.0.1:" + strconv.Itoa(port)}, nil); err == nil {
		s.Close()
		t.Error("connect to a port nobody serves succeeded")
	}
}
