package etcdstore

import (
	"context"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/storage/mvcc"

	"github.com/vpool/vpool/internal/store"
)

// A server's watches of its embedded member are the member's own
// watches on its multi-version store, in process: an event reaches the
// watcher as the member applies it, before the member's revision says
// so (etcd hands a write's events to its synced watchers, then moves
// its revision), so a consistent read that read revision R finds R's
// event already on its way to the cache. Over the member's gRPC client
// (TLS on loopback) an event passed etcd's send loop (which read every
// updated key's previous value back from the database), HTTP/2 and TLS
// both ways, protobuf both ways and three more goroutines of the
// client, each of which waits for a CPU on a loaded server; at 10,000
// hosts a consistent list waited up to seconds for its revision to come
// through (docs/scale.md, "Eighth round: the cache's wait").

// memberWatch is what the in-process watch needs of the embedded member.
type memberWatch struct {
	kv mvcc.WatchableKV
	// leader says whether the member knows a raft leader (a watch of a
	// client that requires one is ended when it has none: below).
	leader func() bool
	// election is the member's election timeout: a watch ends after
	// noLeaderChecks of them without a leader, as etcd ends the gRPC
	// watches that require a leader.
	election time.Duration
}

// noLeaderChecks is etcd's count of election timeouts without a leader
// after which it cancels the watches that require one.
const noLeaderChecks = 3

// watchLocal is Watch on the embedded member's own store.
func (s *Store) watchLocal(ctx context.Context, prefix string, fromRev int64) <-chan store.WatchResponse {
	out := make(chan store.WatchResponse, 16)
	mw := s.local
	if !mw.leader() {
		go sendLast(ctx, out, fmt.Errorf("etcdstore: watch %s: %w: no leader", prefix, store.ErrUnavailable))
		return out
	}
	key, end := []byte(prefix), []byte(clientv3.GetPrefixRangeEnd(prefix))
	if prefix == "" {
		key, end = []byte{0}, []byte{} // every key from the first (etcd's "from key")
	}
	if fromRev < 0 {
		fromRev = 0 // the member's next revision
	}
	ws := mw.kv.NewWatchStream()
	if _, err := ws.Watch(ctx, clientv3.AutoWatchID, key, end, fromRev); err != nil {
		ws.Close()
		go sendLast(ctx, out, fmt.Errorf("etcdstore: watch %s: %w", prefix, err))
		return out
	}
	go func() {
		defer ws.Close()
		s.pumpLocal(ctx, ws, out)
	}()
	return out
}

// pumpLocal translates the member's watch responses until ctx ends, the
// member stops, it has no leader for long, or the watch is compacted.
func (s *Store) pumpLocal(ctx context.Context, ws mvcc.WatchStream, out chan<- store.WatchResponse) {
	tick := time.NewTicker(s.local.election)
	defer tick.Stop()
	noLeader := 0
	for {
		var (
			resp mvcc.WatchResponse
			ok   bool
		)
		select {
		case <-ctx.Done():
			close(out)
			return
		case <-s.stopped:
			if s.closed.Load() {
				sendLast(ctx, out, fmt.Errorf("etcdstore: watch: %w", store.ErrClosed))
			} else {
				sendLast(ctx, out, errWatchEnded)
			}
			return
		case <-tick.C:
			if noLeader = noLeader + 1; s.local.leader() {
				noLeader = 0
			}
			if noLeader >= noLeaderChecks {
				sendLast(ctx, out, fmt.Errorf("etcdstore: watch: %w: no leader", store.ErrUnavailable))
				return
			}
			continue
		case resp, ok = <-ws.Chan():
		}
		switch {
		case !ok:
			sendLast(ctx, out, errWatchEnded)
			return
		case resp.CompactRevision != 0:
			sendLast(ctx, out, fmt.Errorf("etcdstore: watch: %w: revision %d", store.ErrCompacted, resp.CompactRevision))
			return
		case len(resp.Events) == 0:
			continue // progress notification
		}
		evs := make([]store.WatchEvent, 0, len(resp.Events))
		for _, ev := range resp.Events {
			evs = append(evs, s.fromMemberEvent(ctx, ev))
		}
		select {
		case out <- store.WatchResponse{Events: evs}:
		case <-ctx.Done():
			close(out)
			return
		}
	}
}

// fromMemberEvent is fromEvent for the member's own events, which the
// member shares among its watchers (read only). A delete carries the
// deleted value, read from the revision before it (etcd's prevKV, which
// the gRPC watch read for every updated key; only deletes use it).
func (s *Store) fromMemberEvent(ctx context.Context, ev *mvccpb.Event) store.WatchEvent {
	we := store.WatchEvent{KV: fromKV(ev.Kv), Rev: ev.Kv.ModRevision}
	if ev.Type != mvccpb.DELETE {
		return we
	}
	we.Type = store.EventDelete
	res, err := s.local.kv.Range(ctx, ev.Kv.Key, nil, mvcc.RangeOptions{Rev: ev.Kv.ModRevision - 1, Limit: 1})
	if err == nil && len(res.KVs) > 0 {
		prev := res.KVs[0]
		we.KV.Value, we.KV.CreateRev, we.KV.Lease = prev.Value, prev.CreateRevision, store.LeaseID(prev.Lease)
	}
	return we
}
