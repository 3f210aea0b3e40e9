package qemu

import (
	"strings"
	"testing"
)

func TestResolveMachineType(t *testing.T) {
	help := "Supported machines are:\n" +
		"pc                   Standard PC (i440FX + PIIX, 1996) (alias of pc-i440fx-10.0)\n" +
		"q35                  Standard PC (Q35 + ICH9, 2009) (alias of pc-q35-10.0)\n" +
		"pc-q35-10.0          Standard PC (Q35 + ICH9, 2009)\n" +
		"pc-q35-7.2           Standard PC (Q35 + ICH9, 2009)\n" +
		"pc-q35-2.10          Standard PC (Q35 + ICH9, 2009) (deprecated)\n"
	for want, got := range map[string]string{"q35": "pc-q35-10.0", "pc": "pc-i440fx-10.0", "pc-q35-7.2": "pc-q35-7.2", "pc-q35-2.10": "pc-q35-2.10"} {
		if r, err := resolveMachineType(help, want); err != nil || r != got {
			t.Errorf("resolveMachineType(%q) = %q, %v; want %q", want, r, err, got)
		}
	}
	if _, err := resolveMachineType(help, "pc-q35-7"); err == nil || !strings.Contains(err.Error(), `"pc-q35-7" is unknown`) {
		t.Errorf("an unknown type: %v", err)
	}
}

func TestRunMachineType(t *testing.T) {
	r := &runRec{Cmdline: Machine{Name: "x", Type: "pc-q35-7.2", Accel: "tcg"}.Args()}
	if got := runMachineType(r); got != "pc-q35-7.2" {
		t.Errorf("runMachineType = %q, want pc-q35-7.2 from %v", got, r.Cmdline)
	}
	if got := runMachineType(nil); got != "" {
		t.Errorf("runMachineType(nil) = %q", got)
	}
	if !isQ35("q35") || !isQ35("pc-q35-10.0") || isQ35("pc-i440fx-10.0") {
		t.Error("isQ35")
	}
}

func TestCheckTargetMachine(t *testing.T) {
	for _, tc := range []struct {
		running, target string
		refused         bool
	}{
		{"pc-q35-7.2", "pc-q35-7.2", false},
		{"pc-q35-7.2", "pc-q35-10.0", true},
		{"q35", "pc-q35-10.0", false}, // started before types were resolved: unknown
		{"pc-q35-7.2", "", false},     // an older target that does not say
		{"", "pc-q35-10.0", false},
	} {
		err := checkTargetMachine(tc.running, tc.target)
		if (err != nil) != tc.refused {
			t.Errorf("checkTargetMachine(%q, %q) = %v, refused want %v", tc.running, tc.target, err, tc.refused)
		}
		if err != nil && !strings.Contains(err.Error(), "--machine "+tc.running) {
			t.Errorf("the refusal does not name the flag: %v", err)
		}
	}
}
