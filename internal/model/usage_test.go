package model

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestUsageSampleRoundTrip(t *testing.T) {
	in := UsageSample{Server: "127.0.0.1:8441", At: time.Unix(1.7e9, 0).UTC(), Hosts: []HostSample{{
		Host: "h1", Seen: time.Unix(1.7e9, 5).UTC(), LeaseTTL: 31, Usage: HostUsage{CPUPercent: 12.5, MemoryUsed: GiB},
		VMs: []VMSample{{Key: "p/v1", Usage: VMUsage{CPUPercent: 33.3, CPUTimeNs: 1e12, Memory: 256 * MiB, DiskRead: 1, DiskWrite: 2, NetRx: 3, NetTx: 4}}},
	}}}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `["p/v1",33.3,268435456,1000000000000,1,2,3,4]`) {
		t.Fatalf("a VM sample is not the compact array: %s", b)
	}
	var out UsageSample
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if got, want := out.Hosts[0].VMs[0], in.Hosts[0].VMs[0]; got != want {
		t.Fatalf("round trip: %+v, want %+v", got, want)
	}
	for _, bad := range []string{`["p/v1",1]`, `{"k":"p/v1"}`, `["p/v1","x",0,0,0,0,0,0]`} {
		var s VMSample
		if err := json.Unmarshal([]byte(bad), &s); err == nil {
			t.Errorf("%s decoded", bad)
		}
	}
}
