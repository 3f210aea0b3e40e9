package model

import (
	"math"
	"strings"
	"testing"
)

// TestBytesStringEveryInt64 renders the extremes of int64: -1<<63 has no
// positive counterpart, and negating it used to recurse without end (a
// fatal stack overflow that recover cannot catch).
func TestBytesStringEveryInt64(t *testing.T) {
	tests := []struct {
		in   Bytes
		want string
	}{
		{0, "0B"},
		{1, "1B"},
		{-1, "-1B"},
		{-512 * MiB, "-512MiB"},
		{-(GiB + GiB/2), "-1.5GiB"},
		{math.MaxInt64, "8192.0PiB"},
		{math.MinInt64, "-8192PiB"},
		{math.MinInt64 + 1, "-8192.0PiB"},
		{1023, "1023B"},
		{KiB, "1KiB"},
	}
	for _, tt := range tests {
		if got := tt.in.String(); got != tt.want {
			t.Errorf("Bytes(%d).String() = %q, want %q", int64(tt.in), got, tt.want)
		}
	}
}

// FuzzBytesString: every int64 renders, with a sign only when negative,
// and a non-negative rendering parses back to within the rounding of
// one decimal.
func FuzzBytesString(f *testing.F) {
	for _, n := range []int64{0, 1, -1, math.MaxInt64, math.MinInt64, math.MinInt64 + 1, 1 << 62, int64(GiB + GiB/2)} {
		f.Add(n)
	}
	f.Fuzz(func(t *testing.T, n int64) {
		s := Bytes(n).String()
		if (n < 0) != strings.HasPrefix(s, "-") {
			t.Fatalf("Bytes(%d) = %q: sign", n, s)
		}
		if n < 0 || n > 1<<62 {
			return
		}
		back, err := ParseBytes(s)
		if err != nil {
			t.Fatalf("Bytes(%d) = %q does not parse: %v", n, s, err)
		}
		if d := math.Abs(float64(back) - float64(n)); d > float64(n)*0.05+1 {
			t.Fatalf("Bytes(%d) = %q parses back to %d", n, s, back)
		}
	})
}
