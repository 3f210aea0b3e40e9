package controller

import (
	"fmt"
	"log/slog"
	"runtime"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
)

// TestBalancerCountWithoutBalancersCopiesNoHost: the balancers pass runs
// on every VM change; with no load balancer anywhere its count of each
// host's balancers copies no host (issue 14: it copied every host and its
// usage on each pass, 1.7 % of the server while placing at 1,000 hosts).
func TestBalancerCountWithoutBalancersCopiesNoHost(t *testing.T) {
	perPass := func(n int) float64 {
		c := newCache(slog.New(slog.DiscardHandler))
		feed := &liveFeed{caches: []*cache{c}}
		r := bareReconciler(c, func() time.Time { return time.Unix(1000, 0) })
		for i := range n {
			feed.putHost(model.Host{Meta: model.Meta{Name: fmt.Sprintf("h%05d", i)}, State: model.HostReady, Driver: "sim",
				Labels: map[string]string{"rack": "r1"}})
		}
		const passes = 20
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		for range passes {
			if err := r.countBalancers(t.Context(), nil); err != nil {
				t.Fatal(err)
			}
		}
		runtime.ReadMemStats(&m1)
		return float64(m1.TotalAlloc-m0.TotalAlloc) / passes
	}
	small, large := perPass(100), perPass(5000)
	t.Logf("bytes allocated per count: %.0f at 100 hosts, %.0f at 5,000", small, large)
	if large > 4<<10 {
		t.Fatalf("counting no balancer over 5,000 hosts allocates %.0f bytes (%.0f at 100 hosts): it still copies every host", large, small)
	}
}

// TestBalancerCountsNameHostsToChange: balancerCounts names the hosts that
// hold a count and those the balancers are on, with what they hold.
func TestBalancerCountsNameHostsToChange(t *testing.T) {
	c := newCache(slog.New(slog.DiscardHandler))
	feed := &liveFeed{caches: []*cache{c}}
	for i, n := range []int{0, 2, 0, 1} {
		feed.putHost(model.Host{Meta: model.Meta{Name: fmt.Sprintf("h%d", i)}, State: model.HostReady, Balancers: n})
	}
	got := c.balancerCounts(map[string]int{"h2": 1, "h3": 1, "gone": 1})
	want := map[string]int{"h1": 2, "h2": 0, "h3": 1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("balancerCounts = %v, want %v", got, want)
	}
}
