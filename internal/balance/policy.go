package balance

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrUnknownPolicy reports a policy name that does not parse.
var ErrUnknownPolicy = errors.New("balance: unknown policy")

// PolicyInfo describes a policy for listings.
type PolicyInfo struct {
	Name        string `json:"name"`
	Description string `json:"description"`
}

// Policies lists the policy names NewPlanner understands. Detector and
// selector combinations take their parameter after the last dash, so
// "mad-mmt-2.5" or "iqr-mc-1.5" work as well.
func Policies() []PolicyInfo {
	return []PolicyInfo{
		{"vpool", "vpool's own policy: peak-aware packing on efficient hosts, predictive overload, hysteresis, migration budget (default)"},
		{"dvfs", "no migrations: first-fit placement, power follows utilisation (baseline)"},
		{"thr-mmt-0.8", "static threshold 80 % + minimum migration time (literature)"},
		{"lr-mmt-1.2", "local regression, safety 1.2 + minimum migration time (literature)"},
		{"lrr-mmt-1.2", "robust local regression + minimum migration time (literature)"},
		{"mad-mmt-2.5", "median absolute deviation, s=2.5 + minimum migration time (literature)"},
		{"iqr-mmt-1.5", "interquartile range, s=1.5 + minimum migration time (literature)"},
		{"<det>-mc-<p>", "maximum correlation selection with any detector"},
		{"<det>-rs-<p>", "random selection (seeded) with any detector"},
		{"drs", "DRS-style load balancing: reduce imbalance when the benefit beats the cost"},
	}
}

// NewPlanner builds a planner by name. It returns nil and no error for
// "dvfs", which never migrates.
func NewPlanner(name string, seed uint64) (Planner, error) {
	switch name {
	case "dvfs":
		return nil, nil
	case "vpool", "":
		return NewVPool(DefaultVPoolConfig()), nil
	case "drs":
		return NewDRS(DefaultDRSConfig()), nil
	}
	parts := strings.Split(name, "-")
	if len(parts) != 3 {
		return nil, fmt.Errorf("%w %q: want <detector>-<selection>-<parameter>", ErrUnknownPolicy, name)
	}
	par, err := strconv.ParseFloat(parts[2], 64)
	if err != nil || par <= 0 {
		return nil, fmt.Errorf("%w %q: parameter %q", ErrUnknownPolicy, name, parts[2])
	}
	det, err := NewDetector(parts[0], par)
	if err != nil {
		return nil, err
	}
	sel, err := NewSelector(parts[1], seed)
	if err != nil {
		return nil, err
	}
	return &Literature{Det: det, Sel: sel, Par: parts[2]}, nil
}
