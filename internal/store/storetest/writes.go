package storetest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/store"
)

// WritesSince lists the keys written (put or deleted) after revision
// before up to the store's current revision, leaving out keys under any
// of the skip prefixes. Tests that check "nothing was written" use it
// with store.AuditPrefix skipped: the audit trail writes its batches on
// its own schedule (up to 500 ms after a request), and those are not the
// writes they mean.
func WritesSince(t testing.TB, st store.Store, before int64, skip ...string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, cur, err := st.List(ctx, store.LeaderKey)
	if err != nil {
		t.Fatal(err)
	}
	if cur <= before {
		return nil
	}
	var out []string
	for resp := range st.Watch(ctx, store.Root, before+1) {
		if resp.Err != nil {
			t.Fatal(fmt.Errorf("storetest: watch from %d: %w", before+1, resp.Err))
		}
		for _, ev := range resp.Events {
			if ev.Rev > cur {
				return out
			}
			if !skipped(ev.KV.Key, skip) {
				out = append(out, ev.KV.Key)
			}
			if ev.Rev == cur {
				return out
			}
		}
	}
	t.Fatalf("storetest: the watch ended before revision %d", cur)
	return nil
}

func skipped(key string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(key, p) {
			return true
		}
	}
	return false
}
