package watchcache

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/memstore"
)

// TestSortedMatchesAMap runs random puts and deletes against the chunked
// list and a plain map, and compares every ordered walk.
func TestSortedMatchesAMap(t *testing.T) {
	for _, n := range []int{10, 3000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, uint64(n)))
			var s sorted
			ref := map[string]bool{}
			for range n * 4 {
				k := fmt.Sprintf("/p/%c/%05d", 'a'+rng.IntN(3), rng.IntN(n))
				if rng.IntN(3) == 0 {
					gone := s.del(k) != nil
					if gone != ref[k] {
						t.Fatalf("del %s: had %v, map says %v", k, gone, ref[k])
					}
					delete(ref, k)
					continue
				}
				replaced := s.put(&Item{Key: k}) != nil
				if replaced != ref[k] {
					t.Fatalf("put %s: replaced %v, map says %v", k, replaced, ref[k])
				}
				ref[k] = true
			}
			if s.len() != len(ref) {
				t.Fatalf("len %d, want %d", s.len(), len(ref))
			}
			for _, prefix := range []string{"/p/", "/p/b/", "/p/z/"} {
				for _, after := range []string{"", "/p/b/00100", "/p/c/99999"} {
					var got, want []string
					s.ascend(prefix, after, func(it *Item) bool { got = append(got, it.Key); return true })
					for k := range ref {
						if strings.HasPrefix(k, prefix) && k > after {
							want = append(want, k)
						}
					}
					sort.Strings(want)
					if strings.Join(got, ",") != strings.Join(want, ",") {
						t.Fatalf("ascend(%s, %s): %d keys, want %d", prefix, after, len(got), len(want))
					}
				}
			}
		})
	}
}

// compactingStore fails the next watch with ErrCompacted when armed, as
// etcd does when a watcher fell behind a compaction.
type compactingStore struct {
	store.Store
	armed atomic.Bool
	lists atomic.Int32
	mu    sync.Mutex
	stop  context.CancelFunc // ends the current watch
}

func (s *compactingStore) List(ctx context.Context, prefix string) ([]store.KV, int64, error) {
	s.lists.Add(1)
	return s.Store.List(ctx, prefix)
}

func (s *compactingStore) Watch(ctx context.Context, prefix string, from int64) <-chan store.WatchResponse {
	if s.armed.CompareAndSwap(true, false) {
		ch := make(chan store.WatchResponse, 1)
		ch <- store.WatchResponse{Err: store.ErrCompacted}
		close(ch)
		return ch
	}
	wctx, cancel := context.WithCancel(ctx)
	s.mu.Lock()
	s.stop = cancel
	s.mu.Unlock()
	return s.Store.Watch(wctx, prefix, from)
}

func put(t *testing.T, st store.Store, kvs ...string) int64 {
	t.Helper()
	var ops []store.Op
	for i := 0; i < len(kvs); i += 2 {
		if kvs[i+1] == "" {
			ops = append(ops, store.Delete(kvs[i]))
		} else {
			ops = append(ops, store.Put(kvs[i], []byte(kvs[i+1])))
		}
	}
	_, rev, err := st.Txn(context.Background(), nil, ops)
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

// TestCacheFollowsTheStore checks listing, watch events, hooks, pages,
// Consistent, and a re-list after the watch fell behind a compaction.
func TestCacheFollowsTheStore(t *testing.T) {
	mem := memstore.New()
	defer mem.Close()
	st := &compactingStore{Store: mem}
	put(t, st, "/r/a/1", "one", "/r/a/2", "two", "/r/b/1", "b1", "/r/other", "x")
	var changes []string
	resets := 0
	a := &Table{Prefix: "/r/a/", Decode: func(kv store.KV) (any, error) { return strings.ToUpper(string(kv.Value)), nil },
		Changed: func(old, cur *Item, _ int64) {
			switch {
			case cur == nil:
				changes = append(changes, "-"+old.Key)
			case old == nil:
				changes = append(changes, "+"+cur.Key)
			default:
				changes = append(changes, "~"+cur.Key)
			}
		},
		Reset: func(int64) { resets++ }}
	b := &Table{Prefix: "/r/b/"}
	c := New(st, "/r/", nil, a, b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := c.WaitSynced(wctx); err != nil {
		t.Fatal(err)
	}
	put(t, st, "/r/a/3", "three", "/r/a/1", "uno", "/r/a/2", "")
	if _, err := c.Consistent(wctx, "/r/other"); err != nil {
		t.Fatal(err)
	}
	c.Read(func(int64) {
		var keys []string
		a.Each("/r/a/", "", func(it *Item) bool { keys = append(keys, it.Key+"="+it.Obj.(string)); return true })
		if got := strings.Join(keys, " "); got != "/r/a/1=UNO /r/a/3=THREE" {
			t.Errorf("table a: %s", got)
		}
		if got := strings.Join(changes, " "); got != "+/r/a/3 ~/r/a/1 -/r/a/2" {
			t.Errorf("changes: %s", got)
		}
		if b.Len() != 1 || b.Get("/r/b/1") == nil {
			t.Errorf("table b has %d items", b.Len())
		}
	})
	// the next watch is refused as compacted: the cache lists again
	lists := st.lists.Load()
	st.armed.Store(true)
	cancelWatch(t, c, st)
	put(t, st, "/r/b/2", "b2")
	if _, err := c.Consistent(wctx, "/r/other"); err != nil {
		t.Fatal(err)
	}
	if st.lists.Load() <= lists || resets < 2 {
		t.Errorf("no re-list after a compacted watch (lists %d → %d, resets %d)", lists, st.lists.Load(), resets)
	}
	c.Read(func(int64) {
		if b.Len() != 2 || a.Len() != 2 {
			t.Errorf("after re-list: a %d, b %d items", a.Len(), b.Len())
		}
	})
	cancel()
	<-done
}

// cancelWatch ends the cache's running watch and waits until the cache
// opened the next one (which the armed store refuses as compacted).
func cancelWatch(t *testing.T, _ *Cache, st *compactingStore) {
	t.Helper()
	st.mu.Lock()
	stop := st.stop
	st.mu.Unlock()
	stop()
	deadline := time.Now().Add(10 * time.Second)
	for st.armed.Load() {
		if time.Now().After(deadline) {
			t.Fatal("the cache never opened a new watch")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
