package model

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
)

// Real public keys (ssh-keygen), for the tests of every package.
const (
	testKeyEd25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAID4vpeQQweL+lBLlerWd0ofdQmqkSUOcmk1KIBv/AccB test@vpool"
	testKeyECDSA   = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBIzhJrz767uPB6asD/kE+AWXNrYIRYMXp93zVMWVkDWT9AzmB7SuLgwQdg2E2TWk+XO5P+M6hWQ6jIetKX+ZB8k= ec@vpool"
)

func labelsN(n int) map[string]string {
	m := map[string]string{}
	for i := range n {
		m[fmt.Sprintf("k%d", i)] = "v"
	}
	return m
}

// TestHostileSpecsRefused: each hostile value found in the security
// review (issue 10) is refused, with the field that carries it.
func TestHostileSpecsRefused(t *testing.T) {
	long := strings.Repeat("a", 10000)
	tests := []struct {
		name  string
		edit  func(*VMSpec)
		field string
	}{
		{"min int64 memory", func(s *VMSpec) { s.Memory = math.MinInt64 }, "spec.memory"},
		{"min int64 disk", func(s *VMSpec) { s.Disks[0].Size = math.MinInt64 }, "spec.disks[0].size"},
		{"min int64 reservation", func(s *VMSpec) { s.Controls.MemoryReservation = math.MinInt64 }, "spec.controls.memoryReservation"},
		{"min int64 limit", func(s *VMSpec) { s.Controls.MemoryLimit = math.MinInt64 }, "spec.controls.memoryLimit"},
		{"max int64 limit", func(s *VMSpec) { s.Controls.MemoryLimit = math.MaxInt64 }, "spec.controls.memoryLimit"},
		{"max int64 iops", func(s *VMSpec) { s.Controls.DiskIOPS = math.MaxInt64 }, "spec.controls.diskIops"},
		{"max int64 bps", func(s *VMSpec) { s.Controls.DiskBps = math.MaxInt64 }, "spec.controls.diskBps"},
		{"mac option injection", func(s *VMSpec) { s.NICs = []NIC{{MAC: "52:54:00:12:34:56,romfile=/etc/shadow"}} }, "spec.nics[0].mac"},
		{"mac short", func(s *VMSpec) { s.NICs = []NIC{{MAC: "52:54:00:12:34"}} }, "spec.nics[0].mac"},
		{"mac multicast", func(s *VMSpec) { s.NICs = []NIC{{MAC: "01:00:5e:00:00:01"}} }, "spec.nics[0].mac"},
		{"mac zero", func(s *VMSpec) { s.NICs = []NIC{{MAC: "00:00:00:00:00:00"}} }, "spec.nics[0].mac"},
		{"mac twice", func(s *VMSpec) {
			s.NICs = []NIC{{MAC: "52:54:00:12:34:56"}, {MAC: "52:54:00:12:34:56"}}
		}, "spec.nics[1].mac"},
		{"network traversal", func(s *VMSpec) { s.NICs = []NIC{{Network: "../../etc"}} }, "spec.nics[0].network"},
		{"network comma", func(s *VMSpec) { s.NICs = []NIC{{Network: "lan,script=/tmp/x"}} }, "spec.nics[0].network"},
		{"network huge", func(s *VMSpec) { s.NICs = []NIC{{Network: long}} }, "spec.nics[0].network"},
		{"image traversal", func(s *VMSpec) { s.Image = "../../../etc/shadow" }, "spec.image"},
		{"image huge", func(s *VMSpec) { s.Image = long }, "spec.image"},
		{"pool traversal", func(s *VMSpec) { s.Disks[0].Pool = "../default" }, "spec.disks[0].pool"},
		{"pool huge", func(s *VMSpec) { s.Disks[0].Pool = long }, "spec.disks[0].pool"},
		{"tier NUL", func(s *VMSpec) { s.Disks[0].Tier = "ssd\x00" }, "spec.disks[0].tier"},
		{"1000 NICs", func(s *VMSpec) { s.NICs = make([]NIC, 1000) }, "spec.nics"},
		{"5000 disks", func(s *VMSpec) { s.Disks = make([]Disk, 5000) }, "spec.disks"},
		{"20000 labels", func(s *VMSpec) { s.Labels = labelsN(20000) }, "spec.labels"},
		{"20000 required labels", func(s *VMSpec) { s.Placement.RequiredLabels = labelsN(20000) }, "spec.placement.requiredLabels"},
		{"label key two slashes", func(s *VMSpec) { s.Labels = map[string]string{"a/b/c": "x"} }, "spec.labels"},
		{"label value huge", func(s *VMSpec) { s.Labels = map[string]string{"a": long} }, "spec.labels"},
		{"ssh key shell", func(s *VMSpec) { s.CloudInit = &CloudInit{SSHKeys: []string{"x;rm -rf /"}} }, "spec.cloudInit.sshKeys[0]"},
		{"ssh key not base64", func(s *VMSpec) { s.CloudInit = &CloudInit{SSHKeys: []string{"ssh-ed25519 !!!! me"}} }, "spec.cloudInit.sshKeys[0]"},
		{"ssh key wrong type inside", func(s *VMSpec) {
			s.CloudInit = &CloudInit{SSHKeys: []string{"ssh-rsa " + strings.Fields(testKeyEd25519)[1]}}
		}, "spec.cloudInit.sshKeys[0]"},
		{"ssh key truncated", func(s *VMSpec) { s.CloudInit = &CloudInit{SSHKeys: []string{"ssh-ed25519 AAAA x"}} }, "spec.cloudInit.sshKeys[0]"},
		{"ssh key options", func(s *VMSpec) {
			s.CloudInit = &CloudInit{SSHKeys: []string{`command="/bin/sh" ` + testKeyEd25519}}
		}, "spec.cloudInit.sshKeys[0]"},
		{"ssh key NUL", func(s *VMSpec) { s.CloudInit = &CloudInit{SSHKeys: []string{testKeyEd25519 + "\x00"}} }, "spec.cloudInit.sshKeys[0]"},
		{"33 ssh keys", func(s *VMSpec) {
			s.CloudInit = &CloudInit{SSHKeys: strings.Split(strings.Repeat(testKeyEd25519+"|", 33), "|")[:33]}
		}, "spec.cloudInit.sshKeys"},
		{"hostname huge", func(s *VMSpec) { s.CloudInit = &CloudInit{Hostname: strings.Repeat("a.", 200) + "a"} }, "spec.cloudInit.hostname"},
		{"maxPerHost huge", func(s *VMSpec) {
			s.Placement.AffinityGroup, s.Placement.MaxPerHost = "g", math.MaxInt
		}, "spec.placement.maxPerHost"},
		{"restart nonce negative", func(s *VMSpec) { s.RestartNonce = -1 }, "spec.restartNonce"},
		{"cpu shares 1", func(s *VMSpec) { s.Controls.CPUShares = 1 }, "spec.controls.cpuShares"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := validSpec()
			tt.edit(&s)
			err := s.Validate()
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tt.field {
				t.Fatalf("got %v, want a FieldError on %s", err, tt.field)
			}
			if len(fe.Message) > 400 {
				t.Fatalf("the message echoes too much (%d bytes): %.100s…", len(fe.Message), fe.Message)
			}
		})
	}
}

func TestLimitsAcceptWhatPeersAccept(t *testing.T) {
	s := validSpec()
	s.Image = "debian-12"
	s.NICs = make([]NIC, MaxNICs)
	s.NICs[0] = NIC{Network: "lan", MAC: "52:54:00:AB:cd:01"}
	s.Disks = make([]Disk, MaxDisks)
	for i := range s.Disks {
		s.Disks[i] = Disk{Size: GiB, Pool: "fast", Tier: "ssd"}
	}
	s.Labels = labelsN(MaxLabels)
	s.Labels["vpool.io/power-model"] = "ml110g5"
	delete(s.Labels, "k0")
	s.Labels[strings.Repeat("a", 253)+"/"+strings.Repeat("b", 63)] = strings.Repeat("c", 63)
	delete(s.Labels, "k1")
	s.CloudInit = &CloudInit{Hostname: "web1.example.org", SSHKeys: []string{testKeyEd25519, testKeyECDSA, "  " + testKeyEd25519 + "  "}}
	s.Controls = Controls{DiskIOPS: MaxDiskIOPS, DiskBps: MaxDiskBps, MemoryLimit: MaxMemory}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestQuotaAndPolicyRanges(t *testing.T) {
	for _, q := range []Quota{{VCPUs: -1}, {Memory: math.MinInt64}, {Disk: math.MaxInt64}, {VMs: math.MaxInt}} {
		if q.Validate() == nil {
			t.Errorf("quota %+v accepted", q)
		}
	}
	if err := (&Quota{VCPUs: MaxQuotaCount, Memory: MaxQuotaSize, Disk: MaxQuotaSize, VMs: MaxQuotaCount}).Validate(); err != nil {
		t.Errorf("largest quota refused: %v", err)
	}
	for name, p := range map[string]Policy{
		"nan ratio":     {Ratios: Ratios{CPU: math.NaN()}},
		"inf ratio":     {Ratios: Ratios{Disk: math.Inf(1)}},
		"weight key":    {Weights: map[string]float64{strings.Repeat("w", 10000): 1}},
		"weight nan":    {Weights: map[string]float64{"binpack": math.NaN()}},
		"weight huge":   {Weights: map[string]float64{"binpack": 1e308}},
		"strategy huge": {Strategy: strings.Repeat("s", 10000)},
		"weights many": {Weights: func() map[string]float64 {
			m := map[string]float64{}
			for i := range 33 {
				m[fmt.Sprint("w", i)] = 1
			}
			return m
		}()},
	} {
		if p.Validate() == nil {
			t.Errorf("%s: policy accepted", name)
		}
	}
	// Admit compares what is left: a usage near the limit cannot wrap.
	q := Quota{Memory: MaxQuotaSize}
	if err := q.Admit(Usage{Memory: MaxQuotaSize}, 0, math.MaxInt64, 0, 0); err == nil {
		t.Error("an overflowing memory ask was admitted")
	}
}

func TestDescription(t *testing.T) {
	for _, d := range []string{strings.Repeat("x", MaxDescription+1), "a\x00b", "\xff\xfe", "bell\a"} {
		if ValidDescription("description", d) == nil {
			t.Errorf("%q accepted", d)
		}
	}
	if err := ValidDescription("description", "Team A's VMs\n\tline two — ünïcode"); err != nil {
		t.Error(err)
	}
}

func FuzzCheckSSHPublicKey(f *testing.F) {
	for _, s := range []string{testKeyEd25519, testKeyECDSA, "x;rm -rf /", "ssh-ed25519 AAAA x", "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAAQ==", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		if CheckSSHPublicKey(line) != nil {
			return
		}
		if strings.ContainsAny(line, "\n\r\x00") || len(line) > MaxSSHKeyLen {
			t.Fatalf("accepted %q", line)
		}
		if _, ok := sshKeyFields[strings.Fields(line)[0]]; !ok {
			t.Fatalf("accepted an unknown type: %q", line)
		}
	})
}

func TestBalanceSettingsRanges(t *testing.T) {
	tests := map[string]struct {
		edit  func(*BalanceSettings)
		field string
	}{
		"interval max int": {func(b *BalanceSettings) { b.IntervalSeconds = math.MaxInt }, "intervalSeconds"},
		"interval 5":       {func(b *BalanceSettings) { b.IntervalSeconds = 5 }, "intervalSeconds"},
		"moves huge":       {func(b *BalanceSettings) { b.MaxMovesPerRound = math.MaxInt }, "maxMovesPerRound"},
		"per host huge":    {func(b *BalanceSettings) { b.MaxMovesPerHost = math.MaxInt }, "maxMovesPerHost"},
		"min hosts huge":   {func(b *BalanceSettings) { b.Power.MinHostsOn = math.MaxInt }, "power.minHostsOn"},
		"idle huge":        {func(b *BalanceSettings) { b.Power.IdleSeconds = math.MaxInt }, "power.idleSeconds"},
		"pue 9.2e18":       {func(b *BalanceSettings) { b.Energy.PUE = 9.2e18 }, "energy.pue"},
		"pue inf":          {func(b *BalanceSettings) { b.Energy.PUE = math.Inf(1) }, "energy.pue"},
		"grid 1e308":       {func(b *BalanceSettings) { b.Energy.GridIntensity = 1e308 }, "energy.gridIntensityGPerKWh"},
		"headroom nan":     {func(b *BalanceSettings) { b.Power.HeadroomPercent = math.NaN() }, "power.headroomPercent"},
		"policy huge":      {func(b *BalanceSettings) { b.Policy = strings.Repeat("p", 10000) }, "policy"},
	}
	for name, tt := range tests {
		b := DefaultBalanceSettings()
		tt.edit(&b)
		var fe *FieldError
		if err := b.Validate(); !errors.As(err, &fe) || fe.Field != tt.field {
			t.Errorf("%s: got %v, want a FieldError on %s", name, err, tt.field)
		}
	}
	b := DefaultBalanceSettings()
	b.IntervalSeconds = math.MaxInt
	if d := b.Interval(); d <= 0 {
		t.Errorf("Interval() of a stored max int = %v, want a positive duration", d)
	}
}
