package devenv

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/vpool/vpool/internal/fleet"
)

// fleetLabels mark the fleet hosts of vpool dev.
var fleetLabels = map[string]string{"vpool.io/sim": "true", "vpool.io/fleet": "true"}

// startFleet starts the simulated hosts beyond MaxAgentSimHosts as fleet
// hosts against the dev server's agent listener.
func (d *Dev) startFleet(ctx context.Context, c DevConfig, wg *sync.WaitGroup, errc chan<- error) error {
	n := c.SimHosts - MaxAgentSimHosts
	if n <= 0 {
		return nil
	}
	f, err := fleet.New(fleet.Config{
		Servers: []string{d.Server.AgentURL()}, Hosts: n, Labels: fleetLabels, Trace: c.Trace,
		StateDir: filepath.Join(c.DataDir, "fleet"),
		Logger:   c.Logger, Version: c.Version,
		Tokens: func(ctx context.Context) (string, error) {
			tok, err := d.Server.NewJoinToken(ctx, time.Hour, fleetTokenUses)
			return tok.Token, err
		},
	})
	if err != nil {
		return fmt.Errorf("devenv: fleet: %w", err)
	}
	d.Fleet = f
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := f.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			errc <- fmt.Errorf("devenv: fleet: %w", err)
		}
	}()
	return nil
}

// fleetTokenUses is how many hosts one of the fleet's join tokens joins.
const fleetTokenUses = 100

func (d *Dev) fleetSize() int {
	if d.Fleet == nil {
		return 0
	}
	return len(d.Fleet.Names())
}

// hostNames lists every host of dev: agents, then fleet hosts.
func (d *Dev) hostNames() []string {
	out := make([]string, 0, len(d.Hosts)+d.fleetSize())
	for _, h := range d.Hosts {
		out = append(out, h.Name)
	}
	if d.Fleet != nil {
		out = append(out, d.Fleet.Names()...)
	}
	return out
}
