package repo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// LockTTL is how long a lock lives without being refreshed; holders
// refresh it every LockTTL/4. A holder that died (agent killed) leaves a
// lock that others treat as gone once it expired.
var LockTTL = 2 * time.Minute

const exclusiveLock = "locks/exclusive"

// lockFile is a lock's content.
type lockFile struct {
	Name    string    `json:"name"`
	Holder  string    `json:"holder"`
	Token   string    `json:"token"`
	Expires time.Time `json:"expires"`
}

// Lock is a held repository lock, refreshed in the background until
// Release.
type Lock struct {
	r    *Repo
	blob string
	file lockFile
	stop context.CancelFunc
	done chan struct{}

	mu   sync.Mutex
	lost error
}

func (r *Repo) newLockFile(name string) lockFile {
	var t [12]byte
	rand.Read(t[:])
	holder := r.host
	if holder == "" {
		holder, _ = os.Hostname()
	}
	return lockFile{Name: name, Holder: holder, Token: hex.EncodeToString(t[:]), Expires: r.now().Add(LockTTL)}
}

func (r *Repo) readLock(ctx context.Context, blob string) (lockFile, error) {
	var lf lockFile
	b, err := r.be.Get(ctx, blob)
	if err != nil {
		return lf, err
	}
	if err := json.Unmarshal(b, &lf); err != nil {
		return lf, fmt.Errorf("%w: lock %s", ErrCorrupt, blob)
	}
	return lf, nil
}

func (r *Repo) expired(lf lockFile) bool { return r.now().After(lf.Expires) }

// lockShared takes a backup lock; it fails with ErrBusy while an
// exclusive (maintenance) lock is live. Order matters: the shared lock is
// written first and the exclusive one checked after, the reverse of
// lockExclusive, so two racing takers cannot both win.
func (r *Repo) lockShared(ctx context.Context, name string) (*Lock, error) {
	blob := "locks/shared-" + name
	lf := r.newLockFile(name)
	b, _ := json.Marshal(lf)
	if err := r.be.PutIfAbsent(ctx, blob, b); err != nil {
		if errors.Is(err, ErrExists) {
			return nil, fmt.Errorf("%w: %s is already running", ErrBusy, name)
		}
		return nil, err
	}
	ex, err := r.readLock(ctx, exclusiveLock)
	switch {
	case err == nil && !r.expired(ex):
		r.be.Delete(context.WithoutCancel(ctx), blob)
		return nil, fmt.Errorf("%w: %s holds the repository (held by %s until %s)", ErrBusy, ex.Name, ex.Holder, ex.Expires.Format(time.RFC3339))
	case err != nil && !errors.Is(err, ErrNotFound):
		r.be.Delete(context.WithoutCancel(ctx), blob)
		return nil, err
	}
	return r.hold(blob, lf), nil
}

// LockExclusive takes the maintenance lock (garbage collection): it
// fails with ErrBusy while another maintenance or any live backup lock is
// held. Expired backup locks (their holder died) are removed.
func (r *Repo) LockExclusive(ctx context.Context, name string) (*Lock, error) {
	if r.readOnly {
		return nil, fmt.Errorf("repo: %s is read-only here: %w", r.be, ErrForeign)
	}
	lf := r.newLockFile(name)
	b, _ := json.Marshal(lf)
	for attempt := 0; ; attempt++ {
		err := r.be.PutIfAbsent(ctx, exclusiveLock, b)
		if err == nil {
			break
		}
		if !errors.Is(err, ErrExists) || attempt > 0 {
			return nil, fmt.Errorf("%w: %v", ErrBusy, err)
		}
		old, rerr := r.readLock(ctx, exclusiveLock)
		if rerr == nil && !r.expired(old) {
			return nil, fmt.Errorf("%w: %s holds the repository (held by %s)", ErrBusy, old.Name, old.Holder)
		}
		r.log.Warn("removing an expired maintenance lock", "name", old.Name, "holder", old.Holder)
		r.be.Delete(ctx, exclusiveLock)
	}
	shared, err := r.be.List(ctx, "locks")
	if err != nil {
		r.be.Delete(context.WithoutCancel(ctx), exclusiveLock)
		return nil, err
	}
	for _, s := range shared {
		if !strings.HasPrefix(s.Name, "locks/shared-") {
			continue
		}
		sl, err := r.readLock(ctx, s.Name)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err == nil && !r.expired(sl) {
			r.be.Delete(context.WithoutCancel(ctx), exclusiveLock)
			return nil, fmt.Errorf("%w: %s is in flight (held by %s)", ErrBusy, sl.Name, sl.Holder)
		}
		r.log.Warn("removing an expired backup lock: its holder died; its chunks are garbage", "name", sl.Name, "holder", sl.Holder)
		r.be.Delete(ctx, s.Name)
	}
	return r.hold(exclusiveLock, lf), nil
}

func (r *Repo) hold(blob string, lf lockFile) *Lock {
	ctx, cancel := context.WithCancel(context.Background())
	l := &Lock{r: r, blob: blob, file: lf, stop: cancel, done: make(chan struct{})}
	go l.refresh(ctx)
	return l
}

func (l *Lock) refresh(ctx context.Context) {
	defer close(l.done)
	t := time.NewTicker(LockTTL / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := l.Check(ctx); err != nil {
			if ctx.Err() == nil {
				l.mu.Lock()
				l.lost = err
				l.mu.Unlock()
			}
			return
		}
		l.file.Expires = l.r.now().Add(LockTTL)
		b, _ := json.Marshal(l.file)
		if err := l.r.be.Put(ctx, l.blob, b); err != nil && ctx.Err() == nil {
			l.r.log.Warn("refreshing a repository lock failed", "lock", l.blob, "err", err)
		}
	}
}

// Check confirms the lock is still this holder's and not expired.
func (l *Lock) Check(ctx context.Context) error {
	if err := l.Err(); err != nil {
		return err
	}
	lf, err := l.r.readLock(ctx, l.blob)
	if err != nil || lf.Token != l.file.Token {
		return fmt.Errorf("%w: %s was removed (it had expired)", errLockLost, l.file.Name)
	}
	if l.r.expired(lf) {
		return fmt.Errorf("%w: %s expired", errLockLost, l.file.Name)
	}
	return nil
}

// Err is the error that made the refresher give up, if any.
func (l *Lock) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lost
}

// Release stops refreshing and removes the lock (if still ours).
func (l *Lock) Release(ctx context.Context) {
	l.stop()
	<-l.done
	if lf, err := l.r.readLock(ctx, l.blob); err == nil && lf.Token == l.file.Token {
		l.r.be.Delete(ctx, l.blob)
	}
}
