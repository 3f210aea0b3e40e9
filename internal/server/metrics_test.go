package server

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/memstore"
)

// countingStore counts the listings of every VM record.
type countingStore struct {
	store.Store
	vmScans atomic.Int64
}

func (c *countingStore) List(ctx context.Context, prefix string) ([]store.KV, int64, error) {
	if prefix == store.VMsPrefix {
		c.vmScans.Add(1)
	}
	return c.Store.List(ctx, prefix)
}

// TestMetricsNeedATokenAndDoNotScanPerScrape: /metrics answers no
// anonymous caller, and ten scrapes in a row cost one scan of the VMs.
func TestMetricsNeedATokenAndDoNotScanPerScrape(t *testing.T) {
	ms := memstore.New()
	t.Cleanup(func() { ms.Close() })
	cs := &countingStore{Store: ms}
	ts := startServer(t, cs)
	ts.mustCall(201, "POST", "/api/v1/vms", ts.AdminToken(), vmReq("m"), nil)
	scrape := func(token string) (int, string) {
		req, _ := http.NewRequest("GET", "http://"+ts.Addr()+"/metrics", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := ts.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := scrape(""); code != 401 {
		t.Errorf("anonymous scrape = %d, want 401", code)
	}
	member := ts.tokenFor("default", "member")
	if code, _ := scrape(member); code != 403 {
		t.Errorf("a member's scrape = %d, want 403", code)
	}
	before := cs.vmScans.Load()
	for i := range 10 {
		code, body := scrape(ts.AdminToken())
		if code != 200 || !strings.Contains(body, `vpool_vms{phase="pending"} 1`) {
			t.Fatalf("scrape %d = %d, lacks the VM gauge", i, code)
		}
	}
	if n := cs.vmScans.Load() - before; n > 1 {
		t.Errorf("10 scrapes scanned every VM %d times, want at most 1", n)
	}
}
