package cli

import (
	"errors"
	"math"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/vpool/vpool/internal/model"
)

// parseSize parses a size flag with units, naming the flag on error:
// --memory: "12XB" is not a size (use a number with a unit: ...).
func parseSize(flag, s string) (model.Bytes, error) {
	b, err := model.ParseBytes(s)
	if err != nil {
		msg := strings.TrimPrefix(err.Error(), model.ErrBadSize.Error()+": ")
		return 0, usageErr(&sizeError{flag: flag, msg: msg})
	}
	return b, nil
}

// sizeError is a bad size given to a flag; errors.Is(err, model.ErrBadSize)
// holds.
type sizeError struct{ flag, msg string }

func (e *sizeError) Error() string { return "--" + e.flag + ": " + e.msg }
func (e *sizeError) Unwrap() error { return model.ErrBadSize }

// sizeFlag returns the parsed size of a string flag, and whether it was set.
func sizeFlag(cmd *cobra.Command, name string) (model.Bytes, bool, error) {
	if !cmd.Flags().Changed(name) {
		return 0, false, nil
	}
	s, _ := cmd.Flags().GetString(name)
	b, err := parseSize(name, s)
	return b, err == nil, err
}

// parseKV parses repeated key=value flags into a map (nil when none).
func parseKV(flag string, items []string) (map[string]string, error) {
	if len(items) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(items))
	for _, it := range items {
		k, v, ok := strings.Cut(it, "=")
		if !ok || k == "" {
			return nil, usagef("--%s: %q is not key=value", flag, it)
		}
		m[k] = v
	}
	return m, nil
}

// milliCPU turns a CPU count like 0.5 into milli-CPUs (500).
func milliCPU(flag string, cpus float64) (int, error) {
	if math.IsNaN(cpus) || math.IsInf(cpus, 0) || cpus < 0 || cpus > model.MaxVCPUs {
		return 0, usagef("--%s: %s is not a CPU amount (e.g. 0.5 or 2)", flag, num(cpus))
	}
	return int(math.Round(cpus * 1000)), nil
}

// parseDisk parses --disk: a size ("10GiB") or comma-separated
// key=value pairs (size=10GiB,name=data,pool=fast,tier=ssd,encrypted).
func parseDisk(s string) (model.Disk, error) {
	var d model.Disk
	if !strings.Contains(s, "=") {
		size, err := parseSize("disk", s)
		d.Size = size
		return d, err
	}
	for _, part := range strings.Split(s, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "size":
			size, err := parseSize("disk", v)
			if err != nil {
				return d, err
			}
			d.Size = size
		case "name":
			d.Name = v
		case "pool":
			d.Pool = v
		case "tier":
			d.Tier = v
		case "encrypted":
			b := true
			if v != "" {
				var err error
				if b, err = strconv.ParseBool(v); err != nil {
					return d, usagef("--disk: encrypted=%q is not true or false", v)
				}
			}
			d.Encrypted = b
		default:
			return d, usagef("--disk: unknown key %q in %q (use size, name, pool, tier, encrypted)", k, s)
		}
	}
	if d.Size == 0 {
		return d, usagef("--disk: %q has no size (e.g. --disk 10GiB or --disk size=10GiB,tier=ssd)", s)
	}
	return d, nil
}

// errNothingToChange is returned by commands that change only what flags
// name when none is given.
var errNothingToChange = errors.New("nothing to change: give at least one flag")
