package main

import (
	"fmt"
	"net/http"
	_ "net/http/pprof" // served only with VPOOL_PPROF set
	"os"
)

// servePprof serves Go's profiles on $VPOOL_PPROF (e.g. 127.0.0.1:6060)
// when it is set: docs/scale.md's profiles were taken this way.
func servePprof() {
	addr := os.Getenv("VPOOL_PPROF")
	if addr == "" {
		return
	}
	go func() {
		if err := http.ListenAndServe(addr, nil); err != nil { //nolint:gosec // a debugging aid on an address the operator chose
			fmt.Fprintf(os.Stderr, "vpool: VPOOL_PPROF %s: %v\n", addr, err)
		}
	}()
}
