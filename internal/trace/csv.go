package trace

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
)

type csvRow struct {
	t        float64
	cpu, mem float64
	hasMem   bool
}

// ParseCSV reads a plain CSV trace with the columns
// vm,timestamp,cpu_pct[,mem_pct]. A header line is recognised by a
// non-numeric timestamp column and skipped. Timestamps are seconds
// (integer or decimal) or RFC 3339. Percentages are 0..100.
//
// The interval is the smallest positive gap between two timestamps of the
// same VM; every VM is resampled onto that grid starting at the earliest
// timestamp of the file, holding the last value over gaps (zero before a
// VM's first sample). VMs come out in name order.
func ParseCSV(r io.Reader) (*Trace, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.TrimLeadingSpace = true
	cr.ReuseRecord = true
	rows := map[string][]csvRow{}
	anyMem := false
	line := 0
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		line++
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: %w", ErrFormat, line, err)
		}
		if len(rec) == 1 && strings.TrimSpace(rec[0]) == "" {
			continue
		}
		if len(rec) < 3 || len(rec) > 4 {
			return nil, fmt.Errorf("%w: line %d: want vm,timestamp,cpu_pct[,mem_pct], got %d fields", ErrFormat, line, len(rec))
		}
		ts, err := parseTime(rec[1])
		if err != nil {
			if line == 1 {
				continue // header
			}
			return nil, fmt.Errorf("%w: line %d: timestamp %q", ErrFormat, line, truncate(rec[1]))
		}
		name := strings.TrimSpace(rec[0])
		if name == "" {
			return nil, fmt.Errorf("%w: line %d: empty vm name", ErrFormat, line)
		}
		cpu, err := parsePct(rec[2])
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: cpu_pct: %w", ErrFormat, line, err)
		}
		row := csvRow{t: ts, cpu: cpu}
		if len(rec) == 4 && strings.TrimSpace(rec[3]) != "" {
			if row.mem, err = parsePct(rec[3]); err != nil {
				return nil, fmt.Errorf("%w: line %d: mem_pct: %w", ErrFormat, line, err)
			}
			row.hasMem, anyMem = true, true
		}
		if _, ok := rows[name]; !ok && len(rows) >= MaxVMs {
			return nil, fmt.Errorf("%w: more than %d VMs", ErrTooLarge, MaxVMs)
		}
		rows[name] = append(rows[name], row)
	}
	if len(rows) == 0 {
		return nil, ErrEmpty
	}
	return resample(rows, anyMem)
}

func resample(rows map[string][]csvRow, anyMem bool) (*Trace, error) {
	t0, tEnd := math.Inf(1), math.Inf(-1)
	interval := math.Inf(1)
	names := make([]string, 0, len(rows))
	for name, rs := range rows {
		names = append(names, name)
		sort.SliceStable(rs, func(i, j int) bool { return rs[i].t < rs[j].t })
		for i, r := range rs {
			t0, tEnd = math.Min(t0, r.t), math.Max(tEnd, r.t)
			if i > 0 {
				if d := r.t - rs[i-1].t; d > 0 && d < interval {
					interval = d
				}
			}
		}
	}
	sort.Strings(names)
	if math.IsInf(interval, 1) {
		interval = PlanetLabInterval // one sample per VM: any interval will do
	}
	n := math.Floor((tEnd-t0)/interval+1e-9) + 1
	if n > MaxSamples || n*float64(len(names)) > MaxTotalSamples {
		return nil, fmt.Errorf("%w: %v samples at %vs for %d VMs", ErrTooLarge, n, interval, len(names))
	}
	tr := &Trace{Interval: interval, VMs: make([]VM, 0, len(names))}
	for _, name := range names {
		rs := rows[name]
		v := VM{Name: name, CPU: make([]float64, int(n))}
		if anyMem {
			v.Mem = make([]float64, int(n))
		}
		j := 0
		var cpu, mem float64
		for i := range v.CPU {
			ti := t0 + float64(i)*interval
			for j < len(rs) && rs[j].t <= ti+interval*1e-6 {
				cpu = rs[j].cpu
				if rs[j].hasMem {
					mem = rs[j].mem
				}
				j++
			}
			v.CPU[i] = cpu
			if v.Mem != nil {
				v.Mem[i] = mem
			}
		}
		tr.VMs = append(tr.VMs, v)
	}
	return tr, nil
}

func parseTime(s string) (float64, error) {
	s = strings.TrimSpace(s)
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		if math.IsNaN(f) || math.IsInf(f, 0) || math.Abs(f) > 1e15 {
			return 0, ErrFormat
		}
		return f, nil
	}
	tm, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return 0, err
	}
	return float64(tm.UnixNano()) / 1e9, nil
}

func parsePct(s string) (float64, error) {
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a number", truncate(s))
	}
	if !(f >= 0 && f <= 100) {
		return 0, fmt.Errorf("%v outside 0..100", f)
	}
	return f / 100, nil
}
