package model

import (
	"strings"
	"testing"
)

func TestBackupLimitsValidate(t *testing.T) {
	for _, tc := range []struct {
		l     BackupLimits
		field string // "" = valid
	}{
		{BackupLimits{}, ""},
		{BackupLimits{RateMiBps: 50, Workers: 1}, ""},
		{BackupLimits{RateMiBps: MaxBackupRateMiBps, Workers: MaxBackupWorkers}, ""},
		{BackupLimits{RateMiBps: -1}, "limits.rateMiBps"},
		{BackupLimits{RateMiBps: MaxBackupRateMiBps + 1}, "limits.rateMiBps"},
		{BackupLimits{Workers: -1}, "limits.workers"},
		{BackupLimits{Workers: MaxBackupWorkers + 1}, "limits.workers"},
	} {
		err := tc.l.Validate("limits.")
		switch {
		case tc.field == "" && err != nil:
			t.Errorf("%+v: %v", tc.l, err)
		case tc.field != "" && (err == nil || !strings.Contains(err.Error(), tc.field)):
			t.Errorf("%+v: %v, want an error naming %s", tc.l, err, tc.field)
		}
		// A policy carries the same check.
		p := BackupPolicy{Repo: "main", Limits: tc.l}
		if perr := p.Validate(); (perr == nil) != (tc.field == "") {
			t.Errorf("policy with %+v: %v", tc.l, perr)
		}
	}
}
