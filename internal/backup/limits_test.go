package backup

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/backup/repo"
	"github.com/vpool/vpool/internal/hypervisor"
)

// TestPacerKeepsTheAverageRate feeds reads to a pacer on a fake clock
// (reads take no time) and checks that its sleeps hold the average at
// the limit: the total slept equals bytes / rate.
func TestPacerKeepsTheAverageRate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		rate  int64
		reads []int64
		want  time.Duration // total sleep
	}{
		{"no limit", 0, []int64{4 << 20, 4 << 20}, 0},
		{"8 MiB at 4 MiB/s", 4 << 20, []int64{1 << 20, 1 << 20, 1 << 20, 1 << 20, 4 << 20}, 2 * time.Second},
		{"uneven reads", 1 << 20, []int64{64 << 10, 1 << 20, 448 << 10, 512 << 10}, 2 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := time.Unix(1000, 0)
			var slept time.Duration
			p := newPacer(tc.rate)
			p.now = func() time.Time { return now }
			p.sleep = func(_ context.Context, d time.Duration) error {
				slept += d
				now = now.Add(d)
				return nil
			}
			for _, n := range tc.reads {
				if err := p.wait(context.Background(), n); err != nil {
					t.Fatal(err)
				}
			}
			if slept != tc.want {
				t.Fatalf("slept %v, want %v", slept, tc.want)
			}
		})
	}
}

// TestRateLimitedBackupPacesItsReads runs a real (sim) backup with a
// limit and counts the bytes its pacer accounted and the slices it read.
func TestRateLimitedBackupPacesItsReads(t *testing.T) {
	f := newFixture(t, "")
	r, err := repo.Create(f.ctx, &repo.Dir{Root: t.TempDir()}, repo.Options{Key: repo.GenerateKey(), Cluster: "c1", ChunkSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	f.r = r
	id := f.vm("lim", 8<<20)
	f.write(id, 0, 3<<20)
	for _, tc := range []struct {
		rate    int64
		maxRead int64
	}{{0, 3 << 20}, {1 << 30, rateSlice}} {
		rec := &recordingBackupper{Backupper: f.d}
		m, err := Backup(f.ctx, rec, id, f.r, Job{ID: fmt.Sprintf("b%d", tc.rate), Project: "p", VM: id, RateLimit: tc.rate, Workers: 1})
		if err != nil {
			t.Fatal(err)
		}
		if rec.maxRead != tc.maxRead {
			t.Fatalf("rate %d: the largest read was %d bytes, want %d", tc.rate, rec.maxRead, tc.maxRead)
		}
		if rec.read != m.Stats.ReadBytes {
			t.Fatalf("read %d bytes, stats say %d", rec.read, m.Stats.ReadBytes)
		}
	}
}

// TestConsistencyIsRecorded: the manifest says application-consistent
// only when the session froze the guest, and why not otherwise.
func TestConsistencyIsRecorded(t *testing.T) {
	f := newFixture(t, "")
	id := f.vm("cons", 4<<20)
	f.write(id, 0, 1<<20)
	for i, tc := range []struct {
		name   string
		freeze bool
		c      *hypervisor.BackupConsistency // nil: the session reports nothing
		want   string
	}{
		{"not asked", false, nil, repo.ConsistencyCrash},
		{"driver cannot", true, nil, repo.ConsistencyCrash},
		{"no agent", true, &hypervisor.BackupConsistency{Reason: "no guest agent answered"}, repo.ConsistencyCrash},
		{"frozen", true, &hypervisor.BackupConsistency{Application: true, FrozenFilesystems: 2}, repo.ConsistencyApplication},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recordingBackupper{Backupper: f.d, consistency: tc.c}
			m, err := Backup(f.ctx, rec, id, f.r, Job{ID: fmt.Sprintf("c%d", i), Project: "p", VM: id, Freeze: tc.freeze})
			if err != nil {
				t.Fatal(err)
			}
			if rec.freeze != tc.freeze {
				t.Fatalf("the driver was asked Freeze=%v, want %v", rec.freeze, tc.freeze)
			}
			if m.Consistency != tc.want || m.ConsistencyNote == "" {
				t.Fatalf("consistency %q (%q), want %q with a note", m.Consistency, m.ConsistencyNote, tc.want)
			}
			got, err := f.r.ReadManifest(f.ctx, m.ID)
			if err != nil || got.Consistency != tc.want {
				t.Fatalf("stored index: %q, %v", got.Consistency, err)
			}
		})
	}
}

// recordingBackupper wraps a driver: it records the request and the
// reads, and makes sessions report a consistency when given one.
type recordingBackupper struct {
	hypervisor.Backupper
	consistency *hypervisor.BackupConsistency
	freeze      bool
	read        int64
	maxRead     int64
}

func (r *recordingBackupper) OpenBackup(ctx context.Context, id string, req hypervisor.BackupRequest) (hypervisor.BackupSession, error) {
	r.freeze = req.Freeze
	s, err := r.Backupper.OpenBackup(ctx, id, req)
	if err != nil {
		return nil, err
	}
	rs := &recordingSession{BackupSession: s, r: r}
	if r.consistency != nil {
		return &reportingSession{recordingSession: rs, c: *r.consistency}, nil
	}
	return rs, nil
}

type recordingSession struct {
	hypervisor.BackupSession
	r *recordingBackupper
}

func (s *recordingSession) ReadAt(ctx context.Context, disk string, p []byte, off int64) error {
	s.r.read += int64(len(p))
	s.r.maxRead = max(s.r.maxRead, int64(len(p)))
	return s.BackupSession.ReadAt(ctx, disk, p, off)
}

type reportingSession struct {
	*recordingSession
	c hypervisor.BackupConsistency
}

func (s *reportingSession) Consistency() hypervisor.BackupConsistency { return s.c }
