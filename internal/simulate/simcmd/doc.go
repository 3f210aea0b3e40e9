// Package simcmd is the `vpool sim` command: it reads a trace from disk,
// replays it through internal/simulate and prints the metrics as JSON or
// a table, with a progress bar on stderr and optional SVG charts.
//
// It is the I/O shell around the pure simulator: it may touch files and
// the wall clock, but must not import the store, net/http or QEMU code.
// The lead wires New() into cmd/vpool.
package simcmd
