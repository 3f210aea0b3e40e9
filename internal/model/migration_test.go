package model

import (
	"strings"
	"testing"
)

// TestMigrationOptionsPrecedence: the downtime limit is the request's,
// else the VM's, else the cluster policy's, else the default.
func TestMigrationOptionsPrecedence(t *testing.T) {
	ms := func(v int) *int { return &v }
	yes := true
	vmLimit := &VMSpec{Migration: &MigrationSpec{DowntimeLimitMs: 80, AllowPostCopy: true}}
	for _, tc := range []struct {
		name     string
		policy   *Policy
		spec     *VMSpec
		req      *int
		postCopy *bool
		want     MigrationOptions
	}{
		{"defaults", nil, &VMSpec{}, nil, nil, MigrationOptions{DowntimeLimitMs: DefaultDowntimeLimitMs}},
		{"cluster policy", &Policy{MigrationDowntimeLimitMs: 150}, &VMSpec{}, nil, nil, MigrationOptions{DowntimeLimitMs: 150}},
		{"the VM's over the cluster's", &Policy{MigrationDowntimeLimitMs: 150}, vmLimit, nil, nil, MigrationOptions{DowntimeLimitMs: 80, AllowPostCopy: true}},
		{"the request's over all", &Policy{MigrationDowntimeLimitMs: 150}, vmLimit, ms(40), nil, MigrationOptions{DowntimeLimitMs: 40, AllowPostCopy: true}},
		{"a policy without a limit", &Policy{}, &VMSpec{}, nil, &yes, MigrationOptions{DowntimeLimitMs: DefaultDowntimeLimitMs, AllowPostCopy: true}},
	} {
		got, err := tc.policy.MigrationOptions(tc.spec, tc.req, tc.postCopy)
		if err != nil || got != tc.want {
			t.Errorf("%s: %+v, %v; want %+v", tc.name, got, err, tc.want)
		}
	}
	if got, _ := EffectiveMigrationOptions(&VMSpec{}, nil, nil); got.DowntimeLimitMs != DefaultDowntimeLimitMs {
		t.Errorf("EffectiveMigrationOptions without a policy: %+v", got)
	}
	p := DefaultPolicy()
	p.MigrationDowntimeLimitMs = MaxDowntimeLimitMs + 1
	if err := p.Validate(); err == nil || !strings.Contains(err.Error(), "migrationDowntimeLimitMs") {
		t.Errorf("a limit over the maximum: %v, want an error naming migrationDowntimeLimitMs", err)
	}
}
