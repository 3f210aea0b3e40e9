package server

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/memstore"
)

// A consistent read does not wait for usage samples to be decoded: the
// samples' index decodes them beside the cache, not in its apply. Here
// the decoding of one sample record stops until the test lets it go;
// meanwhile a VM is created and GET and the list's first page see it
// (before, the cache's apply was stuck in the decoding under its write
// lock, and both waited for it: 503 after the cache's 10 s). Once let
// go, the sample is in the index.
func TestConsistentReadsDoNotWaitForSamples(t *testing.T) {
	st := memstore.New()
	defer st.Close()
	ts := startServer(t, st, func(c *Config) { c.UsageSampleInterval = time.Hour })
	release, decoding := make(chan struct{}), make(chan struct{}, 1)
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()
	slow := func(b []byte) (*model.UsageSample, error) {
		select {
		case decoding <- struct{}{}:
		default:
		}
		<-release
		return decodeSample(b)
	}
	ts.view.usage.decode.Store(&slow)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	seen := time.Now().UTC().Truncate(time.Second)
	sample, _ := json.Marshal(model.UsageSample{Server: "elsewhere", At: seen,
		Hosts: []model.HostSample{{Host: "h1", Seen: seen, LeaseTTL: 10, Usage: model.HostUsage{CPUPercent: 42}}}})
	if _, _, err := st.Txn(ctx, nil, []store.Op{store.Put(store.SampleKey("elsewhere", 0), sample)}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-decoding:
	case <-ctx.Done():
		t.Fatal("the sample record was never decoded")
	}

	vm, err := ts.Repo().CreateVM(ctx, &model.VM{Meta: model.Meta{Name: "after-sample", Project: "default"}, Spec: vmReq("").Spec})
	if err != nil {
		t.Fatal(err)
	}
	admin := ts.AdminToken()
	var got model.VM
	ts.mustCall(http.StatusOK, "GET", "/api/v1/vms/after-sample", admin, nil, &got)
	if got.Revision != vm.Revision {
		t.Fatalf("GET after the create at %d: revision %d", vm.Revision, got.Revision)
	}
	var page struct {
		Items []model.VM `json:"items"`
	}
	ts.mustCall(http.StatusOK, "GET", "/api/v1/vms?limit=10", admin, nil, &page)
	if len(page.Items) != 1 || page.Items[0].Name != "after-sample" {
		t.Fatalf("first page after the create: %+v", page.Items)
	}
	if _, _, _, ok := ts.HostUsage("h1"); ok {
		t.Fatal("h1's usage is indexed while its sample is still being decoded")
	}

	close(release)
	released = true
	if err := ts.view.usage.caughtUp(ctx); err != nil {
		t.Fatal(err)
	}
	if u, _, _, ok := ts.HostUsage("h1"); !ok || u.CPUPercent != 42 {
		t.Fatalf("h1's usage once decoded: %+v, %v", u, ok)
	}
}
