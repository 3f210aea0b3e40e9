package main

import "testing"

func TestParseUIDRange(t *testing.T) {
	for _, tc := range []struct {
		in          string
		base, count uint32
		bad         bool
	}{
		{in: ""},
		{in: "2000000:65536", base: 2000000, count: 65536},
		{in: "0:10", bad: true},
		{in: "100:0", bad: true},
		{in: "100", bad: true},
		{in: "x:10", bad: true},
		{in: "4294967290:10", bad: true},
	} {
		b, c, err := parseUIDRange(tc.in)
		if (err != nil) != tc.bad || b != tc.base || c != tc.count {
			t.Errorf("parseUIDRange(%q) = %d, %d, %v; want %d, %d, bad=%v", tc.in, b, c, err, tc.base, tc.count, tc.bad)
		}
	}
}
