package server

import (
	"slices"
	"strings"

	"github.com/vpool/vpool/internal/store"
)

// txnShapes counts the store's transactions by the kinds of key each
// changed (metrics.StoreTxns): the watch brings a transaction's events
// one after the other with one revision, so a transaction is counted
// when the next revision begins. Called from the cache's watch only.
type txnShapes struct {
	rev   int64
	kinds []string
	count func(kinds string)
}

func (t *txnShapes) observe(ev store.WatchEvent) {
	kind, _, _ := strings.Cut(strings.TrimPrefix(ev.KV.Key, store.Root), "/")
	if ev.Rev != t.rev {
		t.flush()
		t.rev = ev.Rev
	}
	if !slices.Contains(t.kinds, kind) {
		t.kinds = append(t.kinds, kind)
	}
}

func (t *txnShapes) flush() {
	if len(t.kinds) == 0 {
		return
	}
	slices.Sort(t.kinds)
	t.count(strings.Join(t.kinds, "+"))
	t.kinds = t.kinds[:0]
}
