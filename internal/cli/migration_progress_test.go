package cli

import (
	"strings"
	"testing"

	"github.com/vpool/vpool/internal/model"
)

// TestMigrationProgressLine pins the progress line on the cases issue 13
// found wrong: a bar at 100 % with memory left (it counted bytes sent,
// which pre-copy sends more than once), and "0% sent 0B" at the
// switch-over.
func TestMigrationProgressLine(t *testing.T) {
	mib := int64(model.MiB)
	transferring := func(pr model.MigrationProgress) *model.Migration {
		return &model.Migration{Phase: model.MigrationTransferring, Progress: pr}
	}
	for _, tc := range []struct {
		name       string
		m          *model.Migration
		want, deny []string
	}{
		{"second pass: more sent than the size, 100 MiB left",
			transferring(model.MigrationProgress{Stage: "precopy", BytesSent: 1100 * mib, BytesLeft: 100 * mib, BytesTotal: 1024 * mib, ETASeconds: 1.4}),
			[]string{" 90%", "left 100MiB", "eta 1s"}, []string{"100%"}},
		{"all but a few pages: still not 100 %",
			transferring(model.MigrationProgress{Stage: "downtime", BytesSent: 3000 * mib, BytesLeft: 1, BytesTotal: 1024 * mib}),
			[]string{" 99%", "transferring/downtime", "eta -"}, []string{"100%"}},
		{"no estimate while the guest dirties as fast as it moves",
			transferring(model.MigrationProgress{Stage: "precopy", BytesSent: 400 * mib, BytesLeft: 300 * mib, BytesTotal: 1024 * mib, DirtyRate: 190 * mib}),
			[]string{"eta -", "dirty 190MiB/s"}, nil},
		{"switch-over reported with no counters",
			transferring(model.MigrationProgress{Stage: "switchover"}),
			[]string{"100%", "switching over"}, []string{" 0%", "sent 0B"}},
		{"switch-over with the counters kept",
			transferring(model.MigrationProgress{Stage: "switchover", BytesSent: 700 * mib, BytesTotal: 1024 * mib}),
			[]string{"100%", "switching over, 700MiB sent"}, []string{"left"}},
		{"disks",
			transferring(model.MigrationProgress{Stage: "disks", DiskSent: 256 * mib, DiskTotal: 1024 * mib, ETASeconds: 3}),
			[]string{" 25%", "disks 256MiB of 1GiB", "eta 3s"}, nil},
		{"completed", &model.Migration{Phase: model.MigrationCompleted, Progress: model.MigrationProgress{BytesSent: 9, BytesLeft: 5, BytesTotal: 10}},
			[]string{"100%", "done"}, []string{"left"}},
	} {
		got := migrationProgressLine(tc.m)
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: %q lacks %q", tc.name, got, w)
			}
		}
		for _, d := range tc.deny {
			if strings.Contains(got, d) {
				t.Errorf("%s: %q shows %q", tc.name, got, d)
			}
		}
	}
}
