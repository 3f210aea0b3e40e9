package server

import (
	"fmt"
	"reflect"
	"runtime"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// histSampleOf makes sample i of hosts hosts, each field varying with
// the host and the sample, the names new strings each time (as decoded
// host records give them); every period-th sample drops the last host.
func histSampleOf(i, hosts, period int) api.HistorySample {
	if i%period == period-1 {
		hosts--
	}
	out := api.HistorySample{Time: time.Unix(int64(1000+10*i), 0).UTC(), Hosts: make([]api.HostSample, hosts)}
	states := []model.HostState{model.HostReady, model.HostSuspect, model.HostStandby}
	for h := range hosts {
		out.Hosts[h] = api.HostSample{Host: fmt.Sprintf("host-%05d", h), State: states[(h+i)%len(states)], CPUs: 16 + h%3,
			CPUPercent: float64(h*i%1000) / 10, MemUsed: model.Bytes(h * i * 1024), MemCapacity: 64 * model.GiB,
			Watts: 100 + float64(h%50)/3, VMs: (h + i) % 20}
	}
	return out
}

// TestHistoryRoundTrip: the ring answers what was added, oldest first,
// the last n, one host's, after it wrapped.
func TestHistoryRoundTrip(t *testing.T) {
	var h history
	var all []api.HistorySample
	for i := range api.MaxHistory + 30 {
		s := histSampleOf(i, 5, 7)
		h.add(s)
		all = append(all, s)
	}
	want := all[len(all)-api.MaxHistory:]
	if got := h.last(0, ""); !reflect.DeepEqual(got, want) {
		t.Fatalf("all samples: %d back, first %+v, want %d, first %+v", len(got), got[0], len(want), want[0])
	}
	if got := h.last(3, ""); !reflect.DeepEqual(got, want[len(want)-3:]) {
		t.Fatalf("last 3: %+v", got)
	}
	got := h.last(10, "host-00004")
	for i, s := range want[len(want)-10:] {
		var keep []api.HostSample
		for _, hs := range s.Hosts {
			if hs.Host == "host-00004" {
				keep = append(keep, hs)
			}
		}
		if !reflect.DeepEqual(got[i].Hosts, keep) || !got[i].Time.Equal(s.Time) {
			t.Fatalf("sample %d of host-00004: %+v, want %+v", i, got[i], keep)
		}
	}
	var empty history
	if got := empty.last(0, ""); len(got) != 0 {
		t.Fatalf("an empty ring answered %d samples", len(got))
	}
}

// TestHistoryBytesPerHost: the ring keeps a sample of many hosts in
// about 30 bytes a host while the hosts stay the same (it kept an api.HostSample with its own name and
// state strings, about 110: 0.75 GiB for two hours of 10,000 hosts).
func TestHistoryBytesPerHost(t *testing.T) {
	const hosts, samples = 2000, 60
	perHost := historyBytesPerHost(hosts, samples)
	t.Logf("%.1f bytes a host a sample", perHost)
	if perHost > 40 {
		t.Fatalf("the history keeps %.1f bytes a host a sample, want at most 40", perHost)
	}
}

// BenchmarkHistoryBytesPerHost reports the ring's bytes a host a sample
// at 10,000 hosts.
func BenchmarkHistoryBytesPerHost(b *testing.B) {
	for range b.N {
		b.ReportMetric(historyBytesPerHost(10000, 30), "bytes/host/sample")
	}
}

func historyBytesPerHost(hosts, samples int) float64 {
	var h history
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	for i := range samples {
		h.add(histSampleOf(i, hosts, samples/2)) // what the sampler built is garbage then
	}
	runtime.GC()
	runtime.ReadMemStats(&m1)
	runtime.KeepAlive(&h)
	return float64(int64(m1.HeapAlloc)-int64(m0.HeapAlloc)) / float64(hosts*samples)
}
