package etcdstore

import (
	"log/slog"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/server/v3/etcdserver"
)

// Defaults of the embedded member's defragmentation (Config).
const (
	// DefaultDefragMinFree: the database is defragmented once this much
	// of its file is free pages, and at least as much as it uses. At
	// 100,000 VMs the creates' history is about 1 GiB of the file; once
	// compacted (CompactionRetention) its pages are free but stay mapped
	// and resident: 1.1 GiB of one server's resident set (docs/scale.md,
	// sixth round).
	DefaultDefragMinFree = 256 << 20
	// DefaultDefragCheckInterval is how often the free pages are looked at.
	DefaultDefragCheckInterval = time.Minute
)

// memberDB is what the defragmentation needs of the embedded member's
// backend.
type memberDB interface {
	Size() int64      // bytes of the database file
	SizeInUse() int64 // bytes of it not free
	Defragment() error
}

// serverDB is an embedded member's database.
type serverDB struct{ srv *etcdserver.EtcdServer }

func (d serverDB) Size() int64       { return d.srv.Backend().Size() }
func (d serverDB) SizeInUse() int64  { return d.srv.Backend().SizeInUse() }
func (d serverDB) Defragment() error { return d.srv.Defragment() }

// defragDue says whether a database of size bytes, inUse of them not
// free, is worth defragmenting: at least minFree bytes free, and at least
// as many as it uses (a file at least twice its data). A negative minFree
// never is.
func defragDue(size, inUse, minFree int64) bool {
	free := size - inUse
	return minFree >= 0 && free >= minFree && free >= inUse
}

// defragLoop looks at db every interval until stop is closed, and
// defragments it when defragDue. A defragmentation blocks the member's
// reads and writes while it copies the data in use (seconds for a few
// hundred MB): it waits for a large compaction, not for every small
// one. stopping skips it once the member is being closed.
func defragLoop(db memberDB, minFree int64, interval time.Duration, stop <-chan struct{}, stopping *atomic.Bool, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		size, inUse := db.Size(), db.SizeInUse()
		if stopping.Load() || !defragDue(size, inUse, minFree) {
			continue
		}
		start := time.Now()
		if err := db.Defragment(); err != nil {
			log.Warn("defragmenting the store's database failed", "size", size, "in_use", inUse, "err", err)
			continue
		}
		log.Info("defragmented the store's database", "size_before", size, "in_use", inUse, "size_after", db.Size(),
			"took", time.Since(start).Round(time.Millisecond))
	}
}

// DBSize returns the embedded member's database size and the part of it
// in use (not free pages); ok is false for a client of an external
// cluster.
func (s *Store) DBSize() (size, inUse int64, ok bool) {
	if s.db == nil {
		return 0, 0, false
	}
	return s.db.Size(), s.db.SizeInUse(), true
}
