package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/client"
	"github.com/vpool/vpool/internal/model"
)

// projects the workload creates VMs in (each with a quota, so that the
// usage counters are kept).
var projects = []string{"p1", "p2"}

// ledger records every request of the workload and its outcome. A VM's
// key is "project/name".
type ledger struct {
	mu sync.Mutex
	// creates: acknowledged, cut off (may or may not exist), refused.
	acked, unsureCreate, refused map[string]bool
	// deletes: acknowledged, cut off.
	deleted, unsureDelete map[string]bool
	// migrations asked and acknowledged, refused, cut off.
	migrations                      map[string]string // id → VM key
	migRefused, migUnsure, deleteNF int
	anomalies                       []string // answers that contradict the invariants at once
}

func newLedger() *ledger {
	return &ledger{acked: map[string]bool{}, unsureCreate: map[string]bool{}, refused: map[string]bool{},
		deleted: map[string]bool{}, unsureDelete: map[string]bool{}, migrations: map[string]string{}}
}

// live are the VMs acknowledged and not (maybe) deleted.
func (l *ledger) live() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for k := range l.acked {
		if !l.deleted[k] && !l.unsureDelete[k] {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func (l *ledger) note(f string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.anomalies = append(l.anomalies, fmt.Sprintf(f, args...))
}

func key(project, name string) string { return project + "/" + name }

func splitKey(k string) (project, name string) {
	for i := range k {
		if k[i] == '/' {
			return k[:i], k[i+1:]
		}
	}
	return "", k
}

// cutOff says whether err leaves the outcome unknown: the request may
// or may not have been applied (the connection broke, the server went
// away, it answered unavailable or internal, or the client timed out).
func cutOff(err error) bool {
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae.Code == api.CodeUnavailable || ae.Code == api.CodeInternal
	}
	return true
}

func isCode(err error, code string) bool {
	var ae *api.Error
	return errors.As(err, &ae) && ae.Code == code
}

// workload runs creators, a deleter and a migrator through c until ctx
// ends, keeping about maxLive VMs.
type workload struct {
	c       *client.Client
	l       *ledger
	maxLive int
	seq     int
	seqMu   sync.Mutex
}

func (w *workload) run(ctx context.Context, seed uint64) {
	var wg sync.WaitGroup
	for i := range 2 {
		r := rand.New(rand.NewPCG(seed, uint64(10+i)))
		wg.Go(func() { w.loop(ctx, r, 100, 300, w.create) })
	}
	r := rand.New(rand.NewPCG(seed, 20))
	wg.Go(func() { w.loop(ctx, r, 250, 600, w.remove) })
	r2 := rand.New(rand.NewPCG(seed, 30))
	wg.Go(func() { w.loop(ctx, r2, 300, 900, w.migrate) })
	wg.Wait()
}

// loop calls step every minMs..maxMs until ctx ends.
func (w *workload) loop(ctx context.Context, r *rand.Rand, minMs, maxMs int, step func(*rand.Rand)) {
	for ctx.Err() == nil {
		step(r)
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(minMs+r.IntN(maxMs-minMs)) * time.Millisecond):
		}
	}
}

// vmSpec is a small VM whose disk is on the shared pool (so HA can
// restart it elsewhere), at a random HA level.
func vmSpec(r *rand.Rand) model.VMSpec {
	levels := []string{"high", "medium", "low"}
	return model.VMSpec{VCPUs: 1, Memory: 256 * model.MiB, Power: model.PowerRunning, HA: levels[r.IntN(len(levels))],
		Disks: []model.Disk{{Name: "root", Size: model.GiB, Pool: "shared"}}}
}

func (w *workload) create(r *rand.Rand) {
	if len(w.l.live()) >= w.maxLive {
		return
	}
	w.seqMu.Lock()
	w.seq++
	name := fmt.Sprintf("c%05d", w.seq)
	w.seqMu.Unlock()
	project := projects[r.IntN(len(projects))]
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	_, err := w.c.CreateVM(ctx, project, api.VMCreateRequest{Name: name, Spec: vmSpec(r)})
	cancel()
	k := key(project, name)
	w.l.mu.Lock()
	defer w.l.mu.Unlock()
	switch {
	case err == nil:
		w.l.acked[k] = true
	case cutOff(err) || isCode(err, api.CodeConflict): // a conflict: an earlier attempt was applied
		w.l.unsureCreate[k] = true
	default:
		w.l.refused[k] = true
	}
}

func (w *workload) remove(r *rand.Rand) {
	live := w.l.live()
	if len(live) < w.maxLive/2 {
		return
	}
	k := live[r.IntN(len(live))]
	project, name := splitKey(k)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	err := w.c.DeleteVM(ctx, project, name)
	cancel()
	w.l.mu.Lock()
	defer w.l.mu.Unlock()
	switch {
	case err == nil:
		w.l.deleted[k] = true
	case isCode(err, api.CodeNotFound):
		// an acknowledged create, never deleted, that the API does not know
		w.l.deleteNF++
		w.l.anomalies = append(w.l.anomalies, fmt.Sprintf("delete of acknowledged VM %s: not found (%v)", k, err))
		w.l.deleted[k] = true
	case cutOff(err):
		w.l.unsureDelete[k] = true
	default: // refused (e.g. a conflict with a migration): it still exists
	}
}

func (w *workload) migrate(r *rand.Rand) {
	live := w.l.live()
	if len(live) == 0 {
		return
	}
	k := live[r.IntN(len(live))]
	project, name := splitKey(k)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	vm, err := w.c.GetVM(ctx, project, name)
	if err != nil || vm.Status.Phase != model.PhaseRunning || vm.Status.Migration != "" {
		return
	}
	m, err := w.c.MigrateVM(ctx, project, api.MigrationRequest{VM: name})
	w.l.mu.Lock()
	defer w.l.mu.Unlock()
	switch {
	case err == nil:
		w.l.migrations[m.Name] = k
	case cutOff(err):
		w.l.migUnsure++
	default:
		w.l.migRefused++
	}
}
