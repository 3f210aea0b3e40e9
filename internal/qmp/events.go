package qmp

import (
	"context"
	"fmt"
	"sync/atomic"
)

// Subscription receives the events it asked for on C until it is closed
// or the connection closes (then C is closed).
type Subscription struct {
	// C delivers events in the order QEMU sent them.
	C <-chan Event

	c       *Conn
	ch      chan Event
	names   map[string]bool // empty: every event
	dropped atomic.Int64
}

// Subscribe returns a subscription to the named events (all events when
// names is empty). Subscribe before issuing the command whose event you
// wait for, so the event cannot slip past.
func (c *Conn) Subscribe(names ...string) *Subscription {
	s := &Subscription{c: c, ch: make(chan Event, c.evBuf), names: map[string]bool{}}
	s.C = s.ch
	for _, n := range names {
		s.names[n] = true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		close(s.ch)
		return s
	}
	c.subs[s] = struct{}{}
	return s
}

// Close ends the subscription and closes C. It is idempotent.
func (s *Subscription) Close() {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	if _, ok := s.c.subs[s]; ok {
		delete(s.c.subs, s)
		close(s.ch)
	}
}

// Dropped counts events lost because the subscriber fell behind.
func (s *Subscription) Dropped() int64 { return s.dropped.Load() }

// Wait returns the first event for which match returns true (any event
// when match is nil). It fails when ctx ends or the connection closes.
func (s *Subscription) Wait(ctx context.Context, match func(Event) bool) (Event, error) {
	for {
		select {
		case ev, ok := <-s.C:
			if !ok {
				return Event{}, fmt.Errorf("qmp: waiting for event: %w", ErrClosed)
			}
			if match == nil || match(ev) {
				return ev, nil
			}
		case <-ctx.Done():
			return Event{}, fmt.Errorf("qmp: waiting for event: %w", ctx.Err())
		}
	}
}

func (c *Conn) dispatch(ev Event) {
	c.log.Debug("qmp: event", "event", ev.Name, "data", string(ev.Data))
	c.mu.Lock()
	defer c.mu.Unlock()
	for s := range c.subs {
		if len(s.names) > 0 && !s.names[ev.Name] {
			continue
		}
		select {
		case s.ch <- ev:
		default:
			s.dropped.Add(1)
			c.log.Warn("qmp: subscriber fell behind; event dropped", "event", ev.Name)
		}
	}
}
