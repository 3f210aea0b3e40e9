package controller

import (
	"context"
	"fmt"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
)

// A placement's explanation is stored apart from its VM's record
// (state.Assign, docs/scale.md seventh round). The compaction pass keeps
// that layout tidy: it moves out the explanations that records stored
// before still carry, and now and then deletes explanations whose VM is
// gone (left by a server from before, which deleted VMs without them).

const (
	// maxMovesPerPass bounds the records one pass rewrites (the watch and
	// every server's view decode each again once).
	maxMovesPerPass = 4096
	// explanationPruneEvery is how often orphaned explanations are
	// looked for (a listing of every stored explanation).
	explanationPruneEvery = 6 * time.Hour
)

// tidyExplanations moves embedded placement explanations out of their
// records, and prunes orphaned explanations on the manager's first pass
// and every explanationPruneEvery.
func (r *reconciler) tidyExplanations(ctx context.Context, now time.Time) error {
	old := r.c.vmList(state.HasEmbeddedPlacement)
	if len(old) > maxMovesPerPass {
		old = old[:maxMovesPerPass]
	}
	if len(old) > 0 {
		n, err := r.repo.MoveExplanations(ctx, old)
		if err != nil {
			return fmt.Errorf("controller: move explanations out of VM records: %w", err)
		}
		r.m.log.Info("moved placement explanations out of VM records", "moved", n, "of", len(old))
	}
	last := r.m.explPruned.Load()
	if last != 0 && now.Sub(time.Unix(0, last)) < explanationPruneEvery {
		return nil
	}
	n, err := r.repo.PruneExplanations(ctx, func(project, name string) *model.VM {
		return r.c.vmByKey(project + "/" + name)
	})
	if err != nil {
		return fmt.Errorf("controller: prune explanations: %w", err)
	}
	if n > 0 {
		r.m.log.Info("deleted explanations of VMs gone", "deleted", n)
	}
	r.m.explPruned.Store(now.UnixNano())
	return nil
}
