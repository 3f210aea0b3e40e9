package qemu

import (
	"context"
	"strings"
	"testing"

	"github.com/vpool/vpool/internal/hypervisor/qemu/guest"
)

// TestCPUModelBaseline: a configured baseline is what VMs get (-cpu) and
// what the host reports, so hosts of different CPUs compare equal; an
// unknown model is refused when the driver starts.
func TestCPUModelBaseline(t *testing.T) {
	guest.Require(t) // needs qemu-system-x86_64
	for _, tc := range []struct{ model, want, err string }{
		{"", "qemu64", ""},
		{"Haswell-noTSX", "Haswell-noTSX", ""},
		{"NoSuchCPU", "", `CPU model "NoSuchCPU" is unknown`},
	} {
		cfg := testConfig(t, shortTempDir(t))
		cfg.Accel, cfg.CPUModel = "tcg", tc.model
		d, err := New(cfg)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("CPUModel %q: New = %v, want an error with %q", tc.model, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("CPUModel %q: %v", tc.model, err)
		}
		inv, err := d.Inventory(context.Background())
		d.Close()
		if err != nil {
			t.Fatal(err)
		}
		if inv.CPUModel != tc.want {
			t.Errorf("CPUModel %q: host reports %q, want %q", tc.model, inv.CPUModel, tc.want)
		}
		if arg := d.cpuModelArg(); arg != tc.model {
			t.Errorf("CPUModel %q: VMs get -cpu %q", tc.model, arg)
		}
	}
}

func TestKnownCPUModel(t *testing.T) {
	v7 := "x86 Haswell-noTSX  Intel Core Processor (Haswell, no TSX)\nx86 qemu64  QEMU Virtual CPU version 2.5+\n\nRecognized CPUID flags:\n  fpu vme\n"
	v10 := "Available CPUs:\n  Haswell-noTSX         (alias of Haswell-v2)\n  qemu64                QEMU Virtual CPU version 2.5+\n\nRecognized CPUID flags:\n  fpu vme\n"
	for _, help := range []string{v7, v10} {
		for m, want := range map[string]bool{"Haswell-noTSX": true, "qemu64": true, "Haswell": false, "fpu": false, "Available": false} {
			if got := knownCPUModel(help, m); got != want {
				t.Errorf("knownCPUModel(%q) = %v, want %v in:\n%s", m, got, want, help)
			}
		}
	}
}
