package controller

import (
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
)

// TestUsageCache: the newest fresh measurement wins — a heartbeat's
// sample over an older record, the record over an older or stale sample
// or one of another VM of the same name; nothing fresh is no measurement.
func TestUsageCache(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	vm := func(recordCPU float64, observed time.Time) *model.VM {
		v := &model.VM{Meta: model.Meta{Name: "w-1", Project: "p", UID: "u1"}, Spec: model.VMSpec{VCPUs: 2}}
		v.Status.Usage.CPUPercent, v.Status.ObservedAt = recordCPU, observed
		return v
	}
	for _, tc := range []struct {
		name    string
		sample  *usageSample // nil: none
		vm      *model.VM
		want    float64
		wantOK  bool
		nowSkew time.Duration
	}{
		{"no sample: the record", nil, vm(60, t0), 30, true, time.Second},
		{"no sample, stale record", nil, vm(60, t0), 0, false, time.Minute},
		{"a newer sample wins", &usageSample{uid: "u1", cpu: 180, at: t0.Add(3 * time.Second)}, vm(60, t0), 90, true, 4 * time.Second},
		{"an older sample loses", &usageSample{uid: "u1", cpu: 180, at: t0.Add(-time.Second)}, vm(60, t0), 30, true, time.Second},
		{"a stale sample loses", &usageSample{uid: "u1", cpu: 180, at: t0.Add(time.Second)}, vm(60, t0), 0, false, 40 * time.Second},
		{"another VM of the same name", &usageSample{uid: "u0", cpu: 180, at: t0.Add(3 * time.Second)}, vm(60, t0), 30, true, 4 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewUsageCache()
			if s := tc.sample; s != nil {
				c.ObserveVMUsage("p", "w-1", s.uid, model.VMUsage{CPUPercent: s.cpu}, s.at)
			}
			got, ok := c.VMCPU(tc.vm, t0.Add(tc.nowSkew))
			if got != tc.want || ok != tc.wantOK {
				t.Errorf("VMCPU = %v, %v; want %v, %v", got, ok, tc.want, tc.wantOK)
			}
		})
	}
}
