package main

import (
	"fmt"
	"math"
	"net/http"
	_ "net/http/pprof" // served only with VPOOL_PPROF set
	"os"
	"runtime/debug"
	"strconv"

	"github.com/vpool/vpool/internal/model"
)

// servePprof serves Go's profiles on $VPOOL_PPROF (e.g. 127.0.0.1:6060)
// when it is set: docs/scale.md's profiles were taken this way. Beside
// them /debug/vpool/gc sets the collector's knobs of the running process,
// to measure them against each other at rest (gcKnobs).
func servePprof() {
	addr := os.Getenv("VPOOL_PPROF")
	if addr == "" {
		return
	}
	http.HandleFunc("/debug/vpool/gc", gcKnobs)
	go func() {
		if err := http.ListenAndServe(addr, nil); err != nil { //nolint:gosec // a debugging aid on an address the operator chose
			fmt.Fprintf(os.Stderr, "vpool: VPOOL_PPROF %s: %v\n", addr, err)
		}
	}()
}

// gcKnobs sets Go's memory limit (memlimit=3GiB, or off) and GOGC
// (gogc=100, or -1: off) when asked, and answers with both as they are
// now: "memlimit=BYTES gogc=N".
func gcKnobs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if v := q.Get("memlimit"); v != "" {
		limit := int64(math.MaxInt64)
		if v != "off" {
			b, err := model.ParseBytes(v)
			if err != nil {
				http.Error(w, "memlimit: "+err.Error(), http.StatusBadRequest)
				return
			}
			limit = int64(b)
		}
		debug.SetMemoryLimit(limit)
	}
	gogc := -2 // unchanged
	if v := q.Get("gogc"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			http.Error(w, "gogc: "+err.Error(), http.StatusBadRequest)
			return
		}
		gogc = n
	}
	if gogc == -2 {
		gogc = debug.SetGCPercent(100)
	}
	debug.SetGCPercent(gogc)
	fmt.Fprintf(w, "memlimit=%d gogc=%d\n", debug.SetMemoryLimit(-1), gogc)
}
