package server

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/memstore"
)

// jobsCounting counts the watches and the reads of the backups' and
// restores' prefixes.
type jobsCounting struct {
	store.Store
	watches, lists atomic.Int32
}

func jobsKey(k string) bool {
	return strings.HasPrefix(k, store.BackupsPrefix) || strings.HasPrefix(k, store.RestoresPrefix)
}

func (s *jobsCounting) Watch(ctx context.Context, prefix string, rev int64) <-chan store.WatchResponse {
	if jobsKey(prefix) {
		s.watches.Add(1)
	}
	return s.Store.Watch(ctx, prefix, rev)
}

func (s *jobsCounting) List(ctx context.Context, prefix string) ([]store.KV, int64, error) {
	if jobsKey(prefix) {
		s.lists.Add(1)
	}
	return s.Store.List(ctx, prefix)
}

// The agents' backups long polls share one watch of each prefix and read
// the lists once per change: each poll opened two watches and read both
// prefixes (at 10,000 hosts polling every 10 s, 2,000 of each a second
// with nothing to back up). A change still wakes a waiting poll, which
// answers with it.
func TestBackupPollsShareOneWatch(t *testing.T) {
	mem := memstore.New()
	defer mem.Close()
	st := &jobsCounting{Store: mem}
	ts := startServer(t, st)
	const hosts, rounds = 6, 3
	agents := make([]*testAgent, hosts)
	revs := make([]int64, hosts)
	for i := range agents {
		agents[i] = joinAgent(t, ts, fmt.Sprintf("h%d", i))
		var ab api.AgentBackups
		if code := agents[i].do("GET", "/agent/v1/backups?wait=0s", nil, &ab); code != 200 {
			t.Fatalf("first poll: %d", code)
		}
		revs[i] = ab.Revision
	}
	w0, l0 := st.watches.Load(), st.lists.Load()
	var wg sync.WaitGroup
	for i := range agents {
		wg.Go(func() {
			for range rounds {
				var ab api.AgentBackups
				if code := agents[i].do("GET", fmt.Sprintf("/agent/v1/backups?after=%d&wait=200ms", revs[i]), nil, &ab); code != 200 {
					t.Errorf("poll: %d", code)
					return
				}
			}
		})
	}
	wg.Wait()
	polls := hosts * rounds
	w, l := st.watches.Load()-w0, st.lists.Load()-l0
	t.Logf("%d polls that timed out: %d watches opened, %d lists read", polls, w, l)
	if w > 2 || l > 2 {
		t.Fatalf("%d quiet polls opened %d watches and read the lists %d times: each poll its own", polls, w, l)
	}

	// a change wakes a waiting poll, which answers past it
	done := make(chan api.AgentBackups, 1)
	go func() {
		var ab api.AgentBackups
		agents[0].do("GET", fmt.Sprintf("/agent/v1/backups?after=%d&wait=60s", revs[0]), nil, &ab)
		done <- ab
	}()
	time.Sleep(100 * time.Millisecond) // the poll waits
	b, _ := json.Marshal(model.Backup{Meta: model.Meta{Name: "b1", Project: "default"}, Host: "h0", Phase: model.BackupRunning, Repo: "nosuch"})
	ok, rev, err := mem.Txn(context.Background(), nil, []store.Op{store.Put(store.BackupsPrefix+"default/b1", b)})
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	select {
	case ab := <-done:
		if ab.Revision < rev {
			t.Fatalf("the woken poll answered at revision %d, before the change at %d", ab.Revision, rev)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a backup written did not wake the waiting poll")
	}
}
