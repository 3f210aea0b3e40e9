package server

import (
	"context"
	"sync"
	"time"

	"github.com/vpool/vpool/internal/model"
)

// haPolicyRefresh is how long the server answers heartbeats from the HA
// timings it read last before it reads the policy again.
const haPolicyRefresh = 2 * time.Second

// haPolicyCache holds the cluster policy's HA timings for heartbeat
// answers: a store read every few seconds, not one per heartbeat.
type haPolicyCache struct {
	mu   sync.Mutex
	p    model.HAPolicy
	read time.Time
}

// haPolicy returns the HA timings, read again when older than
// haPolicyRefresh (the defaults when the policy cannot be read).
func (s *Server) haPolicy(ctx context.Context) model.HAPolicy {
	c := &s.haPol
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if !c.read.IsZero() && now.Sub(c.read) < haPolicyRefresh {
		return c.p
	}
	pol, _, err := s.repo.GetPolicy(ctx)
	if err != nil {
		if c.read.IsZero() {
			return model.DefaultHAPolicy()
		}
		return c.p
	}
	c.p, c.read = pol.HAPolicy(), now
	return c.p
}
