package model

import (
	"errors"
	"strings"
	"testing"
)

func TestWatchdogValidate(t *testing.T) {
	tests := []struct {
		name       string
		in         *Watchdog
		want       *Watchdog // after defaults; nil with field set
		field, fix string
	}{
		{"none", nil, nil, "", ""},
		{"defaults", &Watchdog{}, &Watchdog{Model: WatchdogI6300ESB, Action: WatchdogReset}, "", ""},
		{"poweroff", &Watchdog{Action: "poweroff"}, &Watchdog{Model: WatchdogI6300ESB, Action: WatchdogPoweroff}, "", ""},
		{"pause", &Watchdog{Model: "i6300esb", Action: "pause"}, &Watchdog{Model: WatchdogI6300ESB, Action: WatchdogPause}, "", ""},
		{"unknown action", &Watchdog{Action: "inject-nmi"}, nil, "spec.watchdog.action", "reset, poweroff, pause"},
		{"unknown model", &Watchdog{Model: "ib700"}, nil, "spec.watchdog.model", "leave it empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := validSpec()
			s.Watchdog = tt.in
			err := s.Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if (s.Watchdog == nil) != (tt.want == nil) || (tt.want != nil && *s.Watchdog != *tt.want) {
					t.Fatalf("watchdog %+v, want %+v", s.Watchdog, tt.want)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tt.field || !strings.Contains(err.Error(), tt.fix) {
				t.Fatalf("got %v, want a FieldError on %s naming %q", err, tt.field, tt.fix)
			}
		})
	}
}
