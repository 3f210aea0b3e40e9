package qemu

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
)

// TestMultifdChannels: the migration's channels when it says, the choice
// from the guest's rate where it does not, a single stream with post-copy
// or without escalation (QEMU's own behaviour) or on a one-CPU host, and
// a clear refusal of channels together with post-copy.
func TestMultifdChannels(t *testing.T) {
	for _, tc := range []struct {
		name   string
		o      hypervisor.MigrateOptions
		host   int
		want   int
		choose bool
		err    string
	}{
		{"the choice, up to the host's channels", hypervisor.MigrateOptions{}, 2, 2, true, ""},
		{"a one-CPU host: one stream", hypervisor.MigrateOptions{}, 1, 1, false, ""},
		{"asked for", hypervisor.MigrateOptions{MultifdChannels: 4}, 2, 4, false, ""},
		{"a single stream asked for", hypervisor.MigrateOptions{MultifdChannels: 1}, 2, 1, false, ""},
		{"post-copy allowed: one stream", hypervisor.MigrateOptions{AllowPostCopy: true}, 2, 1, false, ""},
		{"post-copy allowed with one stream asked for", hypervisor.MigrateOptions{AllowPostCopy: true, MultifdChannels: 1}, 2, 1, false, ""},
		{"post-copy with channels: refused", hypervisor.MigrateOptions{AllowPostCopy: true, MultifdChannels: 2}, 2, 0, false, "cannot be combined with post-copy"},
		{"QEMU's defaults: one stream", hypervisor.MigrateOptions{NoEscalation: true}, 2, 1, false, ""},
		{"no escalation, post-copy never reached: channels allowed", hypervisor.MigrateOptions{NoEscalation: true, AllowPostCopy: true, MultifdChannels: 2}, 2, 2, false, ""},
		{"too many", hypervisor.MigrateOptions{MultifdChannels: 17}, 2, 0, false, "must be 0"},
		{"negative", hypervisor.MigrateOptions{MultifdChannels: -1}, 2, 0, false, "must be 0"},
	} {
		got, fixed, err := multifdChannels(tc.o, tc.host)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, hypervisor.ErrUnsupported)):
			t.Errorf("%s: got %d, %v; want an ErrUnsupported saying %q", tc.name, got, err, tc.err)
		case tc.err == "" && (err != nil || got != tc.want || fixed == tc.choose):
			t.Errorf("%s: got %d (fixed %v), %v; want %d (choose %v)", tc.name, got, fixed, err, tc.want, tc.choose)
		}
	}
	if defaultMultifdChannels(2) != 2 || defaultMultifdChannels(64) != 2 || defaultMultifdChannels(1) != 1 {
		t.Errorf("defaultMultifdChannels: 2 CPUs %d, 64 CPUs %d, 1 CPU %d; want 2, 2, 1",
			defaultMultifdChannels(2), defaultMultifdChannels(64), defaultMultifdChannels(1))
	}
}

// TestConvergerChoosesChannels: multifd where one stream would not let
// pre-copy converge within the cap in a few passes (the converger's own
// estimate), one stream for guests that converge anyway (an idle guest
// pays for multifd in downtime: each channel is synced at the
// switch-over). Rates as calc-dirty-rate measured them over 200 ms
// (the test guests rewrite their working set faster: 256 MiB reads
// 1280 MiB/s).
func TestConvergerChoosesChannels(t *testing.T) {
	mib := int64(model.MiB)
	for _, tc := range []struct {
		name               string
		mem, dirty, stream int64 // MiB, MiB/s, MiB/s
		want               int
		why                string
	}{
		{"idle 1 GiB", 1024, 0, 256, 1, "0B/s against one stream's 256MiB/s the rest would need ~0 more passes"},
		{"idle 1 GiB, a few pages", 1024, 4, 256, 1, ""},
		{"the soak's guest: 64 MiB/s of 192 MiB", 192, 64, 256, 1, ""},
		{"c: 256 MiB rewriting 64 MiB", 256, 320, 256, 2, "endless more passes"},
		{"d: 1 GiB rewriting 256 MiB", 1024, 1280, 256, 2, "endless"},
		{"f: 2 GiB rewriting 512 MiB", 2048, 2560, 256, 2, "endless"},
		{"a busy guest one fast stream outruns", 1024, 100, 1024, 1, ""},
		{"the same guest against a slow stream", 1024, 100, 128, 2, ""},
		{"not measured yet: the default stream", 1024, 1280, 0, 2, "one stream's 256MiB/s"},
	} {
		got, why := chooseChannels(tc.mem*mib, tc.dirty*mib, tc.stream*mib, DefaultDowntimeLimit, 2)
		if got != tc.want || !strings.Contains(why, tc.why) {
			t.Errorf("%s: %d channels (%s), want %d (%q)", tc.name, got, why, tc.want, tc.why)
		}
	}
	if got, _ := chooseChannels(1024*mib, 1280*mib, 256*mib, DefaultDowntimeLimit, 4); got != 4 {
		t.Errorf("a 4-channel host: %d channels for d, want 4", got)
	}
}

// TestMigrationMultifdPrepare: multifd must be on in the target's QEMU,
// with the source's channels, before it listens (migrate-incoming), or
// the extra connections are refused. The source asks in "prepare"; the
// target sets the capability and the channels there and repeats them in
// its answer. Played here by hand as the source, over TLS.
func TestMigrationMultifdPrepare(t *testing.T) {
	t.Parallel()
	g := heavy(t)
	_, dst := migPair(t, true, "")
	ctx := context.Background()
	cfg := vmConfig(g, "migmfd")
	cfg.Spec.Memory = 128 * model.MiB
	addr, err := dst.MigrateIn(ctx, cfg)
	mustDo(t, "MigrateIn", err)
	a, err := parseMigAddr(addr)
	mustDo(t, "parseMigAddr", err)
	cc, err := dialControl(ctx, a, dst.migrationTLSDir()) // the test CA's hosts share it
	mustDo(t, "dialControl", err)
	defer cc.close()
	rep, err := cc.call(ctlMsg{Op: "prepare", Key: a.key, Multifd: 2}, time.Minute)
	mustDo(t, "prepare", err)
	if rep.Multifd != 2 || rep.Port == 0 {
		t.Fatalf("prepare answered %+v; want the 2 channels repeated and a port", rep)
	}
	v, err := dst.get(cfg.ID)
	mustDo(t, "get", err)
	var caps []struct {
		Capability string `json:"capability"`
		State      bool   `json:"state"`
	}
	mustDo(t, "query-migrate-capabilities", v.proc.qmp.Execute(ctx, "query-migrate-capabilities", nil, &caps))
	on := false
	for _, c := range caps {
		on = on || (c.Capability == "multifd" && c.State)
	}
	var params struct {
		Channels int `json:"multifd-channels"`
	}
	mustDo(t, "query-migrate-parameters", v.proc.qmp.Execute(ctx, "query-migrate-parameters", nil, &params))
	var mi struct {
		Status string `json:"status"`
	}
	mustDo(t, "query-migrate", v.proc.qmp.Execute(ctx, "query-migrate", nil, &mi))
	if !on || params.Channels != 2 || mi.Status != "setup" {
		t.Fatalf("target after prepare: multifd %v, channels %d, status %q; want on, 2, listening (setup)", on, params.Channels, mi.Status)
	}
	// Post-copy and multifd together are refused, not half-set.
	_, dst2 := migPair(t, true, "")
	cfg2 := vmConfig(g, "migmfd2")
	cfg2.Spec.Memory = 128 * model.MiB
	addr2, err := dst2.MigrateIn(ctx, cfg2)
	mustDo(t, "MigrateIn", err)
	a2, _ := parseMigAddr(addr2)
	cc2, err := dialControl(ctx, a2, dst2.migrationTLSDir())
	mustDo(t, "dialControl", err)
	defer cc2.close()
	if rep, err := cc2.call(ctlMsg{Op: "prepare", Key: a2.key, Multifd: 2, PostCopy: true}, time.Minute); err == nil || !strings.Contains(err.Error(), "post-copy") {
		t.Fatalf("prepare with multifd and post-copy = %+v, %v; want a refusal naming post-copy", rep, err)
	}
	cc.call(ctlMsg{Op: "abort"}, time.Minute) // the answer may not come: the copy goes first
	waitGone(t, dst, cfg.ID)
}

// TestTargetBoundsTheChannelsAsked: the target takes the channels a
// source's prepare asks for only within the driver's bound, and never
// with post-copy (the source is a joined host, not trusted).
func TestTargetBoundsTheChannelsAsked(t *testing.T) {
	for _, tc := range []struct {
		m  ctlMsg
		ok bool
	}{
		{ctlMsg{Multifd: 0}, true},
		{ctlMsg{Multifd: 1, PostCopy: true}, true},
		{ctlMsg{Multifd: 2}, true},
		{ctlMsg{Multifd: maxMultifdChannels}, true},
		{ctlMsg{Multifd: maxMultifdChannels + 1}, false},
		{ctlMsg{Multifd: 1 << 20}, false},
		{ctlMsg{Multifd: -1}, false},
		{ctlMsg{Multifd: 2, PostCopy: true}, false},
	} {
		if got := checkMultifdAsk(tc.m) == ""; got != tc.ok {
			t.Errorf("checkMultifdAsk(%+v) accepted %v, want %v", tc.m, got, tc.ok)
		}
	}
}
