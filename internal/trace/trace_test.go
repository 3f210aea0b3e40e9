package trace

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/google/go-cmp/cmp"
)

func TestParsePlanetLab(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []float64
		err  error
	}{
		{"three samples", "10\n0\n100\n", []float64{0.1, 0, 1}, nil},
		{"blank lines and spaces", " 5 \n\n7", []float64{0.05, 0.07}, nil},
		{"empty", "", nil, ErrEmpty},
		{"not a number", "12\nabc\n", nil, ErrFormat},
		{"over 100", "101\n", nil, ErrFormat},
		{"negative", "-1\n", nil, ErrFormat},
		{"decimal", "1.5\n", nil, ErrFormat},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePlanetLab(strings.NewReader(tt.in))
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("samples (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReadPlanetLab(t *testing.T) {
	fsys := fstest.MapFS{
		"vm-b":      {Data: []byte("1\n2\n")},
		"vm-a":      {Data: []byte("3\n4\n5\n")},
		"README.md": {Data: []byte("# not a vm")},
		".hidden":   {Data: []byte("x")},
	}
	tr, err := ReadPlanetLab(fsys)
	if err != nil {
		t.Fatal(err)
	}
	want := &Trace{Interval: 300, VMs: []VM{{Name: "vm-a", CPU: []float64{0.03, 0.04, 0.05}}, {Name: "vm-b", CPU: []float64{0.01, 0.02}}}}
	if diff := cmp.Diff(want, tr); diff != "" {
		t.Errorf("trace (-want +got):\n%s", diff)
	}
	if tr.Samples() != 3 || tr.Validate() != nil {
		t.Errorf("Samples = %d, Validate = %v", tr.Samples(), tr.Validate())
	}
	if _, err := ReadPlanetLab(fstest.MapFS{"bad": {Data: []byte("x\n")}}); !errors.Is(err, ErrFormat) {
		t.Errorf("bad file: err = %v", err)
	}
	if _, err := ReadPlanetLab(fstest.MapFS{}); !errors.Is(err, ErrEmpty) {
		t.Errorf("empty dir: err = %v", err)
	}
}

func TestReadPlanetLabDirOrders(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"c", "a", "b"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("50\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	byName, err := ReadPlanetLabDir(dir, ByName)
	if err != nil {
		t.Fatal(err)
	}
	native, err := ReadPlanetLabDir(dir, Native)
	if err != nil {
		t.Fatal(err)
	}
	if got := []string{byName.VMs[0].Name, byName.VMs[1].Name, byName.VMs[2].Name}; !cmp.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("by name: %v", got)
	}
	if len(native.VMs) != 3 {
		t.Errorf("native: %d VMs", len(native.VMs))
	}
	for _, s := range []struct {
		in   string
		want Order
	}{{"", ByName}, {"name", ByName}, {"native", Native}} {
		if o, err := ParseOrder(s.in); err != nil || o != s.want {
			t.Errorf("ParseOrder(%q) = %v, %v", s.in, o, err)
		}
	}
	if _, err := ParseOrder("random"); err == nil {
		t.Error("ParseOrder(random) accepted")
	}
}

func TestParseCSV(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want *Trace
		err  error
	}{
		{
			name: "header, two vms, resampled",
			in:   "vm,timestamp,cpu_pct\nb,0,10\na,0,50\na,60,70\nb,120,30\n",
			want: &Trace{Interval: 60, VMs: []VM{
				{Name: "a", CPU: []float64{0.5, 0.7, 0.7}},
				{Name: "b", CPU: []float64{0.1, 0.1, 0.3}},
			}},
		},
		{
			name: "rfc3339 and memory",
			in:   "x,2024-01-01T00:00:00Z,20,40\nx,2024-01-01T00:05:00Z,40,\n",
			want: &Trace{Interval: 300, VMs: []VM{{Name: "x", CPU: []float64{0.2, 0.4}, Mem: []float64{0.4, 0.4}}}},
		},
		{name: "empty", in: "", err: ErrEmpty},
		{name: "header only", in: "vm,timestamp,cpu_pct\n", err: ErrEmpty},
		{name: "too few fields", in: "a,1\n", err: ErrFormat},
		{name: "bad cpu", in: "a,1,x\n", err: ErrFormat},
		{name: "cpu over 100", in: "a,1,150\n", err: ErrFormat},
		{name: "bad timestamp after first line", in: "a,1,10\na,zz,10\n", err: ErrFormat},
		{name: "empty name", in: " ,1,10\n", err: ErrFormat},
		{name: "too many samples", in: "a,0,1\na,1,1\na,1e9,1\n", err: ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCSV(strings.NewReader(tt.in))
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("trace (-want +got):\n%s", diff)
			}
		})
	}
}

func FuzzParsePlanetLab(f *testing.F) {
	for _, s := range []string{"10\n20\n", "", "100", "-1", "abc", "0\n\n\n5", strings.Repeat("7\n", 288)} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := ParsePlanetLab(strings.NewReader(string(data)))
		if err != nil {
			return
		}
		for _, v := range got {
			if v < 0 || v > 1 {
				t.Fatalf("sample %v outside [0, 1]", v)
			}
		}
	})
}

func FuzzParseCSV(f *testing.F) {
	for _, s := range []string{
		"vm,timestamp,cpu_pct\na,0,10\na,300,20\n",
		"a,2024-01-01T00:00:00Z,5,50\n",
		"a,0,1\nb,7,2\n",
		"\"q\"\"x\",1,2\n",
		"a,0,100,100\na,0.5,0,0\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tr, err := ParseCSV(strings.NewReader(string(data)))
		if err != nil {
			return
		}
		if err := tr.Validate(); err != nil {
			t.Fatalf("parsed trace does not validate: %v", err)
		}
		n := tr.Samples()
		for _, v := range tr.VMs {
			if len(v.CPU) != n {
				t.Fatalf("vm %q: %d samples, want %d", v.Name, len(v.CPU), n)
			}
		}
	})
}
