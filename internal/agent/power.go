package agent

import (
	"context"
	"net/http"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// StandbyMode says what the agent does when the server asks its host to
// go to standby.
type StandbyMode string

// Standby modes.
const (
	// StandbyAuto sleeps with the sim driver and ignores the request
	// otherwise (a real host is switched off by the server's power
	// commands, not by its agent).
	StandbyAuto StandbyMode = ""
	// StandbySleep pretends to sleep: see sleepStandby.
	StandbySleep StandbyMode = "sleep"
	// StandbyIgnore keeps heartbeating: the standby is logical only.
	StandbyIgnore StandbyMode = "ignore"
)

func (a *Agent) sleeps() bool {
	switch a.cfg.Standby {
	case StandbySleep:
		return true
	case StandbyAuto:
		return a.cfg.Driver.Name() == "sim"
	}
	return false
}

// sleepStandby pretends that the host sleeps: no heartbeats (its lease
// lapses; the server keeps it in standby, not down), only a poll of the
// desired power state every heartbeat interval, as a real host's BMC
// stays reachable. Once asked to wake it waits WakeDelay (the boot) and
// returns, and heartbeats resume.
func (a *Agent) sleepStandby(ctx context.Context) {
	a.log.Info("host going to standby (simulated sleep)")
	for {
		if sleepCtx(ctx, a.hbInterval()) != nil {
			return
		}
		var st api.HostPowerState
		if err := a.client.do(ctx, http.MethodGet, api.AgentPrefix+"/power", nil, &st); err != nil {
			if ctx.Err() != nil {
				return
			}
			a.log.Debug("power state poll failed", "err", err)
			continue
		}
		if st.Desired != model.HostPowerStandby {
			break
		}
	}
	a.log.Info("host waking up (simulated)", "boot", a.cfg.WakeDelay)
	_ = sleepCtx(ctx, max(a.cfg.WakeDelay, time.Duration(0)))
}
