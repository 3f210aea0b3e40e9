package model

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Bytes is a size in bytes. In JSON it is a plain integer; on the command
// line and in tables it is written with binary units (512MiB, 2GiB).
type Bytes int64

// Common sizes.
const (
	KiB Bytes = 1 << 10
	MiB Bytes = 1 << 20
	GiB Bytes = 1 << 30
	TiB Bytes = 1 << 40
	PiB Bytes = 1 << 50
)

// ErrBadSize is returned by ParseBytes for text that is not a size.
var ErrBadSize = errors.New("model: bad size")

var units = []struct {
	suffix string
	mult   Bytes
}{
	{"PiB", PiB}, {"TiB", TiB}, {"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB},
	{"PB", 1000 * 1000 * 1000 * 1000 * 1000}, {"TB", 1000 * 1000 * 1000 * 1000}, {"GB", 1000 * 1000 * 1000}, {"MB", 1000 * 1000}, {"KB", 1000}, {"kB", 1000},
	{"P", PiB}, {"T", TiB}, {"G", GiB}, {"M", MiB}, {"K", KiB},
	{"B", 1},
}

// ParseBytes parses "512MiB", "2GiB", "1.5G", "10GB" or a plain number of
// bytes. Units: B, K/KiB, M/MiB, G/GiB, T/TiB, P/PiB (binary) and
// KB, MB, GB, TB, PB (decimal).
func ParseBytes(s string) (Bytes, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, fmt.Errorf("%w: empty (use a number with a unit, e.g. 512MiB or 2GiB)", ErrBadSize)
	}
	mult := Bytes(1)
	num := t
	for _, u := range units {
		if strings.HasSuffix(t, u.suffix) {
			mult = u.mult
			num = strings.TrimSpace(strings.TrimSuffix(t, u.suffix))
			break
		}
	}
	if num == "" {
		return 0, fmt.Errorf("%w: %q has no number (e.g. 512MiB or 2GiB)", ErrBadSize, s)
	}
	if n, err := strconv.ParseInt(num, 10, 64); err == nil {
		if n < 0 {
			return 0, fmt.Errorf("%w: %q is negative", ErrBadSize, s)
		}
		if mult > 1 && n > int64(1<<62)/int64(mult) {
			return 0, fmt.Errorf("%w: %q is too large", ErrBadSize, s)
		}
		return Bytes(n) * mult, nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f != f {
		return 0, fmt.Errorf("%w: %q is not a size (use a number with a unit: B, KiB, MiB, GiB, TiB)", ErrBadSize, s)
	}
	if f < 0 {
		return 0, fmt.Errorf("%w: %q is negative", ErrBadSize, s)
	}
	v := f * float64(mult)
	if v > float64(int64(1)<<62) {
		return 0, fmt.Errorf("%w: %q is too large", ErrBadSize, s)
	}
	return Bytes(v), nil
}

// String renders the size with the largest binary unit that keeps it exact
// to one decimal, e.g. 1GiB, 1.5GiB, 512MiB, 100B. Every int64 renders:
// the magnitude is taken as a uint64, so -1<<63 (which has no positive
// int64) is "-8192PiB".
func (b Bytes) String() string {
	if b < 0 {
		return "-" + formatSize(uint64(-(b+1))+1)
	}
	return formatSize(uint64(b))
}

func formatSize(n uint64) string {
	for _, u := range []struct {
		s string
		m uint64
	}{{"PiB", uint64(PiB)}, {"TiB", uint64(TiB)}, {"GiB", uint64(GiB)}, {"MiB", uint64(MiB)}, {"KiB", uint64(KiB)}} {
		if n >= u.m {
			if n%u.m == 0 {
				return strconv.FormatUint(n/u.m, 10) + u.s
			}
			return strconv.FormatFloat(float64(n)/float64(u.m), 'f', 1, 64) + u.s
		}
	}
	return strconv.FormatUint(n, 10) + "B"
}
