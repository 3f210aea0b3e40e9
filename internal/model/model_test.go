package model

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestParseBytes(t *testing.T) {
	tests := []struct {
		in   string
		want Bytes
		err  bool
	}{
		{"512MiB", 512 * MiB, false},
		{"2GiB", 2 * GiB, false},
		{"1.5G", GiB + GiB/2, false},
		{"10GB", 10_000_000_000, false},
		{"1024", 1024, false},
		{"4K", 4 * KiB, false},
		{" 1 TiB ", TiB, false},
		{"", 0, true},
		{"GiB", 0, true},
		{"-1GiB", 0, true},
		{"12XB", 0, true},
		{"1e400", 0, true},
		{"99999999999PiB", 0, true},
		{"NaN", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseBytes(tt.in)
			if tt.err {
				if !errors.Is(err, ErrBadSize) {
					t.Fatalf("ParseBytes(%q) = %v, %v; want ErrBadSize", tt.in, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseBytes(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestBytesString(t *testing.T) {
	for b, want := range map[Bytes]string{512 * MiB: "512MiB", GiB + GiB/2: "1.5GiB", 100: "100B", 2 * TiB: "2TiB"} {
		if got := b.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", int64(b), got, want)
		}
	}
}

func validSpec() VMSpec {
	return VMSpec{VCPUs: 2, Memory: GiB, Disks: []Disk{{Size: 10 * GiB}}}
}

func TestVMSpecValidate(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(*VMSpec)
		field string
	}{
		{"ok", func(*VMSpec) {}, ""},
		{"zero vcpus", func(s *VMSpec) { s.VCPUs = 0 }, "spec.vcpus"},
		{"absurd vcpus", func(s *VMSpec) { s.VCPUs = 100000 }, "spec.vcpus"},
		{"tiny memory", func(s *VMSpec) { s.Memory = 1 }, "spec.memory"},
		{"absurd memory", func(s *VMSpec) { s.Memory = 1 << 60 }, "spec.memory"},
		{"negative disk", func(s *VMSpec) { s.Disks[0].Size = -5 }, "spec.disks[0].size"},
		{"bad disk name", func(s *VMSpec) { s.Disks[0].Name = "Root_Disk" }, "spec.disks[0].name"},
		{"bad power", func(s *VMSpec) { s.Power = "on" }, "spec.power"},
		{"bad affinity", func(s *VMSpec) { s.Placement.Affinity = "close"; s.Placement.AffinityGroup = "g" }, "spec.placement.affinity"},
		{"affinity without group", func(s *VMSpec) { s.Placement.Affinity = AntiAffinityHard }, "spec.placement.affinityGroup"},
		{"reservation over limit", func(s *VMSpec) { s.Controls.CPUReservation = 1500; s.Controls.CPULimit = 1000 }, "spec.controls.cpuReservationMilli"},
		{"mem reservation over size", func(s *VMSpec) { s.Controls.MemoryReservation = 2 * GiB }, "spec.controls.memoryReservation"},
		{"bad label", func(s *VMSpec) { s.Labels = map[string]string{"bad key!": "x"} }, "spec.labels"},
		{"negative iops", func(s *VMSpec) { s.Controls.DiskIOPS = -1 }, "spec.controls.diskIops"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := validSpec()
			tt.edit(&s)
			err := s.Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if s.Power != PowerRunning || s.Disks[0].Name != "disk0" {
					t.Fatalf("defaults not filled: %+v", s)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tt.field {
				t.Fatalf("got %v, want a FieldError on %s", err, tt.field)
			}
		})
	}
}

func TestValidName(t *testing.T) {
	for _, n := range []string{"web1", "a", "a-b", strings.Repeat("a", 63)} {
		if err := ValidName("name", n); err != nil {
			t.Errorf("%q: %v", n, err)
		}
	}
	for _, n := range []string{"", "Web", "-a", "a-", "a_b", strings.Repeat("a", 64), "a.b"} {
		if err := ValidName("name", n); err == nil {
			t.Errorf("%q accepted", n)
		}
	}
}

func TestQuotaAdmit(t *testing.T) {
	q := Quota{VMs: 2, VCPUs: 4}
	if err := q.Admit(Usage{VMs: 1, VCPUs: 2}, 2, GiB, 0, 1); err != nil {
		t.Fatal(err)
	}
	var fe *FieldError
	if err := q.Admit(Usage{VMs: 2}, 1, GiB, 0, 1); !errors.As(err, &fe) || fe.Field != "quota.vms" {
		t.Fatalf("got %v", err)
	}
	if err := q.Admit(Usage{VMs: 0, VCPUs: 3}, 2, GiB, 0, 1); !errors.As(err, &fe) || fe.Field != "quota.vcpus" {
		t.Fatalf("got %v", err)
	}
	if err := (Quota{}).Admit(Usage{VMs: 1000}, 100, TiB, TiB, 1); err != nil {
		t.Fatalf("unlimited quota refused: %v", err)
	}
}

func TestPolicyValidate(t *testing.T) {
	p := DefaultPolicy()
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	p.Ratios.Memory = 3.5
	if err := p.Validate(); err == nil {
		t.Fatal("memory ratio 3.5 accepted")
	}
}

func TestUsageDayJSON(t *testing.T) {
	d := UsageDay{Day: 31, UsageFigures: UsageFigures{VCPUHours: 2.0 / 3, MemGiBHours: 24, DiskGiBHours: 1e-9, NetBytes: 1 << 40, EnergyKWh: 0.1234567891234, CO2Grams: 1234.5}}
	b, err := json.Marshal(d)
	if err != nil || string(b) != "[31,0.6666666667,24,1e-09,1099511627776,0.1234567891,1234.5]" {
		t.Fatalf("%s %v", b, err)
	}
	var back UsageDay
	if err := json.Unmarshal(b, &back); err != nil || back.Day != 31 || back.NetBytes != 1<<40 || back.CO2Grams != 1234.5 {
		t.Fatalf("%+v %v", back, err)
	}
	for _, bad := range []string{`[1,2]`, `{}`, `["a",1,1,1,1,1,1]`, `[1,1,1,1,1.5,1,1]`} {
		if err := json.Unmarshal([]byte(bad), &back); err == nil {
			t.Errorf("%s decodes", bad)
		}
	}
}
