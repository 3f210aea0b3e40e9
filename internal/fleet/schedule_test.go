package fleet

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// When the heartbeat workers fall behind (every host is due and nobody
// takes the next one), hosts that just joined still enter the schedule:
// otherwise the joins stall behind them.
func TestScheduleTakesJoinsWhileBeatsLag(t *testing.T) {
	f := &Fleet{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan *host)
	due := make(chan *host) // no worker takes from it: beats lag forever
	done := make(chan struct{})
	go func() { defer close(done); f.schedule(ctx, started, due) }()
	send := func(i int) {
		t.Helper()
		select {
		case started <- &host{f: f, name: fmt.Sprintf("h-%d", i)}:
		case <-time.After(10 * time.Second):
			t.Fatalf("host %d not taken into the schedule: joins stall while beats lag", i)
		}
	}
	for i := range 50 {
		send(i)
	}
	// every first beat falls within 3 s of the start: by then hosts are
	// due and the workers take none
	time.Sleep(3100 * time.Millisecond)
	for i := 50; i < 100; i++ {
		send(i)
	}
	cancel()
	<-done
}
