package main

import (
	"bufio"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/vpool/vpool/internal/model"
)

// envMemoryLimit is --memory-limit's default.
const envMemoryLimit = "VPOOL_MEMORY_LIMIT"

// errMemoryLimit is a --memory-limit the server cannot use.
var errMemoryLimit = errors.New("--memory-limit")

// memoryLimit reads --memory-limit: "" (the flag unset: $VPOOL_MEMORY_LIMIT,
// and when that is unset too, Go's own GOMEMLIMIT or none), "off", a size
// (3GiB), or a share of the memory this process may use ("60%": of its
// cgroup's limit, else of the machine's memory). It returns the limit in
// bytes (math.MaxInt64: none; 0: leave the runtime's) and says where it
// came from.
func memoryLimit(flag string, total func() (int64, error)) (int64, string, error) {
	v, from := strings.TrimSpace(flag), "--memory-limit"
	if v == "" {
		v, from = strings.TrimSpace(os.Getenv(envMemoryLimit)), envMemoryLimit
	}
	switch {
	case v == "":
		return 0, "", nil
	case v == "off":
		return math.MaxInt64, from, nil
	case strings.HasSuffix(v, "%"):
		pct, err := strconv.ParseFloat(strings.TrimSuffix(v, "%"), 64)
		if err != nil || pct <= 0 || pct > 100 {
			return 0, "", fmt.Errorf("%w: %s %q: a share must be above 0%% and at most 100%%, e.g. 60%%", errMemoryLimit, from, v)
		}
		t, err := total()
		if err != nil {
			return 0, "", fmt.Errorf("%w: %s %q: the memory to take a share of: %w", errMemoryLimit, from, v, err)
		}
		return int64(float64(t) * pct / 100), fmt.Sprintf("%s %s of %d MiB", from, v, t>>20), nil
	}
	b, err := model.ParseBytes(v)
	if err != nil || b < 64*model.MiB {
		return 0, "", fmt.Errorf("%w: %s %q: want off, a size of at least 64MiB (e.g. 3GiB) or a share (e.g. 60%%)", errMemoryLimit, from, v)
	}
	return int64(b), from, nil
}

// applyMemoryLimit sets the Go runtime's soft memory limit from
// --memory-limit and returns what it set, for the log ("" when it left
// the runtime's).
func applyMemoryLimit(flag string) (string, error) {
	limit, from, err := memoryLimit(flag, processMemory)
	if err != nil {
		return "", err
	}
	if limit == 0 {
		limit, from = defaultMemoryLimit(cgroupMemory, os.Getenv("GOMEMLIMIT"))
	}
	if limit == 0 {
		return "", nil
	}
	debug.SetMemoryLimit(limit)
	if limit == math.MaxInt64 {
		return "Go memory limit off (" + from + ")", nil
	}
	return fmt.Sprintf("Go memory limit %d MiB (%s)", limit>>20, from), nil
}

// defaultCgroupShare is the share of its cgroup's memory limit the
// server's Go memory is held to when nothing else sets a limit: a
// process over its cgroup's limit is killed, while a Go heap near its
// soft limit is collected more often; the tenth left is for what the
// cgroup counts beyond Go's memory (the embedded etcd's database pages
// in the page cache, which the kernel can reclaim, and the binary). With
// no cgroup limit there is no default: the collector's headroom
// (GOGC 100) is then memory the machine has (docs/scale.md, eighth
// round, what a limit costs).
const defaultCgroupShare = 0.9

// defaultMemoryLimit is the soft limit when neither --memory-limit nor
// $VPOOL_MEMORY_LIMIT says one: defaultCgroupShare of the cgroup's
// limit, unless Go's own GOMEMLIMIT (gomemlimit, the environment's) is
// set; 0 leaves the runtime's.
func defaultMemoryLimit(cgroup func() (int64, bool), gomemlimit string) (int64, string) {
	if gomemlimit != "" {
		return 0, ""
	}
	n, ok := cgroup()
	if !ok {
		return 0, ""
	}
	return int64(float64(n) * defaultCgroupShare), fmt.Sprintf("%.0f%% of the cgroup's %d MiB", defaultCgroupShare*100, n>>20)
}

// cgroupMemory is this process's cgroup memory limit (v2, then v1);
// false when it has none.
func cgroupMemory() (int64, bool) {
	for _, f := range []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		// "max", or v1's "no limit" (a huge number), mean none
		if n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil && n > 0 && n < 1<<50 {
			return n, true
		}
	}
	return 0, false
}

// processMemory is the memory this process may use: its cgroup's limit
// when it has one, else the machine's.
func processMemory() (int64, error) {
	if n, ok := cgroupMemory(); ok {
		return n, nil
	}
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/meminfo: MemTotal %q: %w", rest, err)
			}
			return kb << 10, nil
		}
	}
	return 0, errors.New("/proc/meminfo: no MemTotal")
}
