package controller

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"text/template"
	"time"

	"github.com/vpool/vpool/internal/model"
)

// HostPower switches hosts off (standby) and on. The power controller
// calls it after it has recorded the host's desired power state (the
// host's state is standby before PowerOff is called, and Host.Power says
// "on" before PowerOn is called). Implementations must be idempotent.
type HostPower interface {
	PowerOff(ctx context.Context, h model.Host) error
	PowerOn(ctx context.Context, h model.Host) error
}

// AgentPower powers hosts through the agent protocol alone: the desired
// state travels in the host's heartbeat answer and in GET
// /agent/v1/power, and an agent that can sleep (the sim agent) does. For
// hosts whose agent cannot, standby is logical only: nothing is placed
// there, and the host keeps its agent running.
type AgentPower struct{}

var _ HostPower = AgentPower{}

// PowerOff implements HostPower.
func (AgentPower) PowerOff(context.Context, model.Host) error { return nil }

// PowerOn implements HostPower.
func (AgentPower) PowerOn(context.Context, model.Host) error { return nil }

// ErrPowerCommand says a power command failed.
var ErrPowerCommand = errors.New("controller: power command failed")

// ExecPower runs commands on the server to switch real hosts: typically
// IPMI (ipmitool ... chassis power soft / on) or Wake-on-LAN (wakeonlan
// MAC). Each command is a text/template executed with the model.Host
// (e.g. {{.Name}}, {{index .Labels "vpool.io/bmc"}}, {{.Address}}), then
// split on spaces — no shell is involved, so labels cannot inject
// commands.
type ExecPower struct {
	Off, On string
	// Timeout bounds one command (default 30s).
	Timeout time.Duration
}

var _ HostPower = (*ExecPower)(nil)

// PowerOff implements HostPower.
func (e *ExecPower) PowerOff(ctx context.Context, h model.Host) error {
	return e.run(ctx, "off", e.Off, h)
}

// PowerOn implements HostPower.
func (e *ExecPower) PowerOn(ctx context.Context, h model.Host) error {
	return e.run(ctx, "on", e.On, h)
}

func (e *ExecPower) run(ctx context.Context, what, tmpl string, h model.Host) error {
	if strings.TrimSpace(tmpl) == "" {
		return fmt.Errorf("%w: no power-%s command configured for host %s", ErrPowerCommand, what, h.Name)
	}
	t, err := template.New(what).Option("missingkey=error").Parse(tmpl)
	if err != nil {
		return fmt.Errorf("%w: power-%s template: %v", ErrPowerCommand, what, err)
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, h); err != nil {
		return fmt.Errorf("%w: power-%s template for host %s: %v", ErrPowerCommand, what, h.Name, err)
	}
	argv := strings.Fields(buf.String())
	if len(argv) == 0 {
		return fmt.Errorf("%w: power-%s command for host %s is empty", ErrPowerCommand, what, h.Name)
	}
	timeout := e.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	out, err := exec.CommandContext(cctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: power %s host %s (%s): %v: %s", ErrPowerCommand, what, h.Name, argv[0], err, strings.TrimSpace(string(out)))
	}
	return nil
}

// PowerByDriver picks a HostPower by the host's driver (e.g. "sim" →
// AgentPower, "qemu" → ExecPower); Default serves the others.
type PowerByDriver struct {
	Default HostPower
	Drivers map[string]HostPower
}

var _ HostPower = PowerByDriver{}

func (p PowerByDriver) pick(h model.Host) HostPower {
	if hp, ok := p.Drivers[h.Driver]; ok {
		return hp
	}
	if p.Default != nil {
		return p.Default
	}
	return AgentPower{}
}

// PowerOff implements HostPower.
func (p PowerByDriver) PowerOff(ctx context.Context, h model.Host) error {
	return p.pick(h).PowerOff(ctx, h)
}

// PowerOn implements HostPower.
func (p PowerByDriver) PowerOn(ctx context.Context, h model.Host) error {
	return p.pick(h).PowerOn(ctx, h)
}
