package main

import (
	"errors"
	"math"
	"net/http/httptest"
	"runtime/debug"
	"testing"
)

func TestMemoryLimit(t *testing.T) {
	total := func() (int64, error) { return 8 << 30, nil }
	noTotal := func() (int64, error) { return 0, errors.New("no /proc") }
	tests := []struct {
		flag, env string
		total     func() (int64, error)
		want      int64
		bad       bool
	}{
		{flag: "", want: 0},
		{flag: "off", want: math.MaxInt64},
		{flag: "3GiB", want: 3 << 30},
		{flag: "", env: "3GiB", want: 3 << 30},
		{flag: "2GiB", env: "3GiB", want: 2 << 30},
		{flag: "50%", total: total, want: 4 << 30},
		{flag: "", env: "25%", total: total, want: 2 << 30},
		{flag: "50%", total: noTotal, bad: true},
		{flag: "0%", total: total, bad: true},
		{flag: "150%", total: total, bad: true},
		{flag: "1MiB", bad: true},
		{flag: "lots", bad: true},
	}
	for _, tc := range tests {
		t.Run(tc.flag+"/"+tc.env, func(t *testing.T) {
			t.Setenv(envMemoryLimit, tc.env)
			got, _, err := memoryLimit(tc.flag, tc.total)
			if tc.bad {
				if !errors.Is(err, errMemoryLimit) {
					t.Fatalf("got %d, %v; want an error", got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}

// TestDefaultMemoryLimit: with nothing set, a process under a cgroup
// memory limit holds its Go memory to 90% of it; none without a cgroup
// limit, and Go's own GOMEMLIMIT wins.
func TestDefaultMemoryLimit(t *testing.T) {
	four := func() (int64, bool) { return 4 << 30, true }
	none := func() (int64, bool) { return 0, false }
	for _, tc := range []struct {
		name       string
		cgroup     func() (int64, bool)
		gomemlimit string
		want       int64
	}{
		{"cgroup of 4 GiB", four, "", 4 << 30 * 9 / 10},
		{"no cgroup limit", none, "", 0},
		{"GOMEMLIMIT set", four, "2GiB", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, _ := defaultMemoryLimit(tc.cgroup, tc.gomemlimit); got != tc.want {
				t.Fatalf("got %d, want %d", got, tc.want)
			}
		})
	}
}

// TestProcessMemory: this machine's memory is read (a cgroup's limit or
// MemTotal), and is some memory.
func TestProcessMemory(t *testing.T) {
	n, err := processMemory()
	if err != nil || n < 64<<20 {
		t.Fatalf("processMemory: %d, %v", n, err)
	}
}

// TestGCKnobs: /debug/vpool/gc sets the running process's memory limit
// and GOGC, and says what they are.
func TestGCKnobs(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	for _, tc := range []struct{ query, want string }{
		{"memlimit=3GiB&gogc=200", "memlimit=3221225472 gogc=200\n"},
		{"", "memlimit=3221225472 gogc=200\n"},
		{"memlimit=off&gogc=100", "memlimit=9223372036854775807 gogc=100\n"},
	} {
		rec := httptest.NewRecorder()
		gcKnobs(rec, httptest.NewRequest("GET", "/debug/vpool/gc?"+tc.query, nil))
		if rec.Code != 200 || rec.Body.String() != tc.want {
			t.Errorf("?%s: %d %q, want %q", tc.query, rec.Code, rec.Body.String(), tc.want)
		}
	}
	rec := httptest.NewRecorder()
	gcKnobs(rec, httptest.NewRequest("GET", "/debug/vpool/gc?memlimit=lots", nil))
	if rec.Code != 400 {
		t.Errorf("memlimit=lots: %d, want 400", rec.Code)
	}
}
