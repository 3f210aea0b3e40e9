package model

import (
	"errors"
	"strings"
	"testing"
)

func TestHAPolicyValidate(t *testing.T) {
	cases := []struct {
		name  string
		p     HAPolicy
		field string
		fix   string
	}{
		{"defaults", HAPolicy{}, "", ""},
		{"explicit defaults", DefaultHAPolicy(), "", ""},
		{"negative", HAPolicy{FenceMillis: -1}, "ha.fenceMillis", "between 0"},
		{"too long", HAPolicy{MarginMillis: MaxHAMillis + 1}, "ha.marginMillis", "between 0"},
		{"heartbeat too fast", HAPolicy{HeartbeatMillis: 50}, "ha.heartbeatMillis", "at least 100"},
		{"suspect within one beat", HAPolicy{HeartbeatMillis: 2000, SuspectMillis: 3000, FenceMillis: 8000}, "ha.suspectMillis", "lower ha.heartbeatMillis"},
		{"fence before suspect", HAPolicy{SuspectMillis: 5000, FenceMillis: 5000}, "ha.fenceMillis", "raise it or lower ha.suspectMillis"},
		{"margin below a heartbeat", HAPolicy{MarginMillis: 500}, "ha.marginMillis", "raise it"},
		{"margin below a tenth of the fence", HAPolicy{SuspectMillis: 10000, FenceMillis: 60000, MarginMillis: 2000}, "ha.marginMillis", "6000"},
		{"fence command at the suspect timeout", HAPolicy{FenceCommandMillis: 4000}, "", ""},
		{"fence command at the fence timeout", HAPolicy{FenceCommandMillis: 6000}, "", ""},
		{"fence command before suspect", HAPolicy{FenceCommandMillis: 3000}, "ha.fenceCommandMillis", "at least ha.suspectMillis (4000 ms)"},
		{"fence command after the fence timeout", HAPolicy{FenceCommandMillis: 7000}, "ha.fenceCommandMillis", "lower it, or 0"},
		{"fence command negative", HAPolicy{FenceCommandMillis: -5}, "ha.fenceCommandMillis", "between 0"},
		{"reserve out of range", HAPolicy{TolerateHostFailures: -1}, "ha.tolerateHostFailures", "between 0"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.p.Validate()
			if c.field == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != c.field || !strings.Contains(fe.Message, c.fix) {
				t.Fatalf("Validate = %v, want field %s with %q", err, c.field, c.fix)
			}
		})
	}
	pol := DefaultPolicy()
	pol.HA = &HAPolicy{FenceMillis: 1}
	if err := pol.Validate(); err == nil || !strings.Contains(err.Error(), "ha.fenceMillis") {
		t.Fatalf("policy with bad HA timings: %v", err)
	}
	spec := VMSpec{VCPUs: 1, Memory: GiB, HA: "sometimes"}
	if err := spec.Validate(); err == nil || !strings.Contains(err.Error(), "spec.ha") {
		t.Fatalf("VM with a bad HA level: %v", err)
	}
}
