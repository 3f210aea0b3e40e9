package model

import (
	"errors"
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

// TestMigrationMultifdChannels: the channels are the VM's, else the
// cluster's, else the host's choice (0); the cluster's give way to a
// migration allowed post-copy, the VM's are refused with it, naming the
// field and the fix; out-of-range values are refused where they are set.
func TestMigrationMultifdChannels(t *testing.T) {
	yes := true
	vm := func(n int, postCopy bool) *VMSpec {
		return &VMSpec{Migration: &MigrationSpec{MultifdChannels: n, AllowPostCopy: postCopy}}
	}
	for _, tc := range []struct {
		name     string
		policy   *Policy
		spec     *VMSpec
		postCopy *bool
		want     int
		errField string
	}{
		{"the host's choice", nil, &VMSpec{}, nil, 0, ""},
		{"the cluster's", &Policy{MigrationMultifdChannels: 4}, &VMSpec{}, nil, 4, ""},
		{"the VM's over the cluster's", &Policy{MigrationMultifdChannels: 4}, vm(1, false), nil, 1, ""},
		{"the VM's two", &Policy{MigrationMultifdChannels: 4}, vm(2, false), nil, 2, ""},
		{"the cluster's give way to the VM's post-copy", &Policy{MigrationMultifdChannels: 4}, vm(0, true), nil, 0, ""},
		{"the cluster's give way to the request's post-copy", &Policy{MigrationMultifdChannels: 4}, &VMSpec{}, &yes, 0, ""},
		{"one stream with post-copy", nil, vm(1, true), nil, 1, ""},
		{"the VM's channels refuse the request's post-copy", nil, vm(2, false), &yes, 0, "allowPostCopy"},
	} {
		got, err := tc.policy.MigrationOptions(tc.spec, nil, tc.postCopy)
		var fe *FieldError
		switch {
		case tc.errField != "":
			if !errors.As(err, &fe) || fe.Field != tc.errField || !strings.Contains(fe.Message, "multifdChannels") {
				t.Errorf("%s: %+v, %v; want an error naming %s and multifdChannels", tc.name, got, err, tc.errField)
			}
		case err != nil || got.MultifdChannels != tc.want:
			t.Errorf("%s: channels %d, %v; want %d", tc.name, got.MultifdChannels, err, tc.want)
		}
	}
	for _, tc := range []struct {
		name  string
		m     MigrationSpec
		field string
	}{
		{"sixteen", MigrationSpec{MultifdChannels: MaxMultifdChannels}, ""},
		{"too many", MigrationSpec{MultifdChannels: MaxMultifdChannels + 1}, "spec.migration.multifdChannels"},
		{"negative", MigrationSpec{MultifdChannels: -1}, "spec.migration.multifdChannels"},
		{"with post-copy", MigrationSpec{MultifdChannels: 2, AllowPostCopy: true}, "spec.migration.multifdChannels"},
	} {
		err := tc.m.validate()
		var fe *FieldError
		if tc.field == "" && err != nil || tc.field != "" && (!errors.As(err, &fe) || fe.Field != tc.field) {
			t.Errorf("%s: %v; want field %q", tc.name, err, tc.field)
		}
	}
	for _, n := range []int{-1, MaxMultifdChannels + 1} {
		p := DefaultPolicy()
		p.MigrationMultifdChannels = n
		var fe *FieldError
		if err := p.Validate(); !errors.As(err, &fe) || fe.Field != "migrationMultifdChannels" {
			t.Errorf("policy channels %d: %v; want an error naming migrationMultifdChannels", n, err)
		}
	}
}
