package trace

import (
	"bufio"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"
	"strconv"
	"strings"
)

// ParsePlanetLab reads one PlanetLab VM file: one integer percent (0-100)
// per line. Blank lines are skipped; anything else is an error.
func ParsePlanetLab(r io.Reader) ([]float64, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<16)
	var out []float64
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" {
			continue
		}
		v, err := strconv.Atoi(s)
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: %q is not an integer percent", ErrFormat, line, truncate(s))
		}
		if v < 0 || v > 100 {
			return nil, fmt.Errorf("%w: line %d: %d outside 0..100", ErrFormat, line, v)
		}
		if len(out) >= MaxSamples {
			return nil, fmt.Errorf("%w: more than %d samples", ErrTooLarge, MaxSamples)
		}
		out = append(out, float64(v)/100)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: line %d: %w", ErrFormat, line+1, err)
	}
	if len(out) == 0 {
		return nil, ErrEmpty
	}
	return out, nil
}

// ReadPlanetLab reads every regular file at the root of fsys as one VM,
// in name order (the order of files carries no meaning; sorting gives a
// stable VM list). Hidden files (leading dot) and README files are
// skipped.
func ReadPlanetLab(fsys fs.FS) (*Trace, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("trace: read dir: %w", err)
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		if e.Type().IsRegular() {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return readNames(fsys, names)
}

// readNames reads the named files in order, skipping hidden files,
// README files and anything that is not a regular file.
func readNames(fsys fs.FS, all []string) (*Trace, error) {
	names := all[:0:0]
	for _, n := range all {
		if strings.HasPrefix(n, ".") || strings.HasPrefix(strings.ToUpper(n), "README") {
			continue
		}
		if st, err := fs.Stat(fsys, n); err != nil || !st.Mode().IsRegular() {
			continue
		}
		names = append(names, n)
	}
	if len(names) > MaxVMs {
		return nil, fmt.Errorf("%w: %d files", ErrTooLarge, len(names))
	}
	t := &Trace{Interval: PlanetLabInterval, VMs: make([]VM, 0, len(names))}
	for _, n := range names {
		f, err := fsys.Open(n)
		if err != nil {
			return nil, fmt.Errorf("trace: open %s: %w", n, err)
		}
		cpu, err := ParsePlanetLab(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("trace: %s: %w", n, err)
		}
		t.VMs = append(t.VMs, VM{Name: n, CPU: cpu})
	}
	if len(t.VMs) == 0 {
		return nil, ErrEmpty
	}
	return t, nil
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// Order says how the files of a PlanetLab folder become the VM list.
type Order int

// Orders.
const (
	// ByName sorts files by name: portable and stable.
	ByName Order = iota
	// Native keeps the directory's own order, which is what CloudSim's
	// File.listFiles returns. The published reference figures were
	// produced with it, but it depends on the file system holding the
	// folder.
	Native
)

// ParseOrder parses "name" or "native".
func ParseOrder(s string) (Order, error) {
	switch s {
	case "name", "":
		return ByName, nil
	case "native", "dir":
		return Native, nil
	}
	return 0, fmt.Errorf("%w: order %q (want name or native)", ErrFormat, s)
}

// ReadPlanetLabDir reads a PlanetLab folder from disk in the given order.
func ReadPlanetLabDir(dir string, order Order) (*Trace, error) {
	if order == ByName {
		return ReadPlanetLab(os.DirFS(dir))
	}
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("trace: %w", err)
	}
	entries, err := f.ReadDir(-1) // unsorted: the directory's order
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("trace: read dir: %w", err)
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return readNames(os.DirFS(dir), names)
}
