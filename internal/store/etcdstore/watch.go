package etcdstore

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vpool/vpool/internal/store"
)

// errWatchEnded is sent when etcd ends a watch without saying why (for
// example when the member the client talks to goes away).
var errWatchEnded = errors.New("etcdstore: watch ended by etcd")

// Watch implements store.Store. With fromRev 0 it first reads the current
// revision, so every change made after Watch returns is delivered. The
// watch requires a leader: when the cluster loses quorum it ends with an
// error, and the caller resumes from the last revision it saw plus one.
// With an embedded member the watch is the member's own, in process
// (watch_local.go); otherwise it goes over the client.
func (s *Store) Watch(ctx context.Context, prefix string, fromRev int64) <-chan store.WatchResponse {
	if err := s.checkOpen(ctx, "watch"); err != nil {
		out := make(chan store.WatchResponse, 1)
		go sendLast(ctx, out, err)
		return out
	}
	if s.local != nil {
		return s.watchLocal(ctx, prefix, fromRev)
	}
	out := make(chan store.WatchResponse, 16)
	if fromRev <= 0 {
		// A count of one key: the cheapest read that returns the revision.
		resp, err := s.cli.Get(ctx, prefix, clientv3.WithCountOnly())
		if err != nil {
			go sendLast(ctx, out, s.wrap("watch "+prefix, err))
			return out
		}
		fromRev = resp.Header.Revision + 1
	}
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	opts := []clientv3.OpOption{clientv3.WithRev(fromRev), clientv3.WithPrevKV()}
	key := prefix
	if prefix == "" {
		key = "\x00"
		opts = append(opts, clientv3.WithFromKey())
	} else {
		opts = append(opts, clientv3.WithPrefix())
	}
	wch := s.cli.Watch(wctx, key, opts...)
	go func() {
		defer cancel()
		s.pump(ctx, wch, out)
	}()
	return out
}

// sendLast delivers a terminal error and closes out.
func sendLast(ctx context.Context, out chan<- store.WatchResponse, err error) {
	defer close(out)
	if ctx.Err() != nil {
		return
	}
	select {
	case out <- store.WatchResponse{Err: err}:
	case <-ctx.Done():
	}
}

// pump translates etcd watch responses until ctx ends or etcd ends the
// watch.
func (s *Store) pump(ctx context.Context, wch clientv3.WatchChan, out chan<- store.WatchResponse) {
	for {
		var (
			resp clientv3.WatchResponse
			ok   bool
		)
		select {
		case resp, ok = <-wch:
		case <-ctx.Done():
			close(out)
			return
		}
		switch {
		case !ok && s.closed.Load():
			sendLast(ctx, out, fmt.Errorf("etcdstore: watch: %w", store.ErrClosed))
			return
		case !ok:
			sendLast(ctx, out, errWatchEnded)
			return
		case resp.CompactRevision != 0:
			sendLast(ctx, out, fmt.Errorf("etcdstore: watch: %w: revision %d", store.ErrCompacted, resp.CompactRevision))
			return
		case resp.Canceled || resp.Err() != nil:
			sendLast(ctx, out, s.wrap("watch", resp.Err()))
			return
		case len(resp.Events) == 0:
			continue // progress notification
		}
		evs := make([]store.WatchEvent, 0, len(resp.Events))
		for _, ev := range resp.Events {
			evs = append(evs, fromEvent(ev))
		}
		select {
		case out <- store.WatchResponse{Events: evs}:
		case <-ctx.Done():
			close(out)
			return
		}
	}
}

func fromEvent(ev *clientv3.Event) store.WatchEvent {
	we := store.WatchEvent{KV: fromKV(ev.Kv), Rev: ev.Kv.ModRevision}
	if ev.Type == mvccpb.DELETE {
		we.Type = store.EventDelete
		if ev.PrevKv != nil {
			we.KV.Value = ev.PrevKv.Value
			we.KV.CreateRev = ev.PrevKv.CreateRevision
			we.KV.Lease = store.LeaseID(ev.PrevKv.Lease)
		}
	}
	return we
}
