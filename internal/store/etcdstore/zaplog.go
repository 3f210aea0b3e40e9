package etcdstore

import (
	"context"
	"log/slog"
	"sync/atomic"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// benign are etcd warnings that say nothing to a vpool operator: the
// single-port setup and the unsigned auth token are vpool's choices; the
// schema-version messages come transiently from every fresh member
// (etcd-io/etcd#18978, #20495) and etcd retries by itself.
var benign = map[string]bool{
	"Running http and grpc server on single port. This is not recommended for production.": true,
	"simple token is not cryptographically signed":                                         true,
	"Failed to detect schema version":                                                      true,
	"failed to update storage version":                                                     true,
}

// newZapLogger returns a zap logger, as etcd wants, that writes to log:
// warnings and errors only, unless debug. Once stopping is set, etcd's
// complaints about its listeners closing are demoted to debug.
func newZapLogger(log *slog.Logger, debug bool, stopping *atomic.Bool) *zap.Logger {
	level := zapcore.WarnLevel
	if debug {
		level = zapcore.DebugLevel
	}
	return zap.New(&slogCore{log: log, level: level, stopping: stopping})
}

// slogCore is a zapcore.Core over an slog.Logger.
type slogCore struct {
	log      *slog.Logger
	level    zapcore.Level
	stopping *atomic.Bool
	attrs    []slog.Attr
}

// Enabled says whether entries of level l may be logged: etcd asks it
// before building costly fields (lg.Core().Enabled(zap.DebugLevel): on
// every gRPC call, the text of the whole request, values included), so
// it answers for this core's level, not for every level. An entry that
// Check would demote is still enabled at its own level.
func (c *slogCore) Enabled(l zapcore.Level) bool { return l >= c.level }

func (c *slogCore) With(fields []zapcore.Field) zapcore.Core {
	n := *c
	n.attrs = append(append([]slog.Attr(nil), c.attrs...), toAttrs(fields)...)
	return &n
}

func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.demote(e) < c.level {
		return ce
	}
	return ce.AddCore(e, c)
}

// demote returns the level e is logged at.
func (c *slogCore) demote(e zapcore.Entry) zapcore.Level {
	if benign[e.Message] || c.stopping.Load() {
		return zapcore.DebugLevel
	}
	return e.Level
}

func (c *slogCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	attrs := append(append([]slog.Attr(nil), c.attrs...), toAttrs(fields)...)
	c.log.LogAttrs(context.Background(), slogLevel(c.demote(e)), e.Message, attrs...)
	return nil
}

func (c *slogCore) Sync() error { return nil }

func toAttrs(fields []zapcore.Field) []slog.Attr {
	if len(fields) == 0 {
		return nil
	}
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range fields {
		f.AddTo(enc)
	}
	attrs := make([]slog.Attr, 0, len(enc.Fields))
	for k, v := range enc.Fields {
		attrs = append(attrs, slog.Any(k, v))
	}
	return attrs
}

func slogLevel(l zapcore.Level) slog.Level {
	switch {
	case l <= zapcore.DebugLevel:
		return slog.LevelDebug
	case l == zapcore.InfoLevel:
		return slog.LevelInfo
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	}
	return slog.LevelError
}
