// Package trace reads utilisation traces for replay: the PlanetLab folder
// format (one file per VM, one integer percent per line, 5-minute steps)
// and a plain CSV (vm,timestamp,cpu_pct[,mem_pct]).
//
// It only parses: it must not import the store, net/http, QEMU code or
// read the wall clock. Readers take an fs.FS or an io.Reader so callers
// and tests choose where bytes come from.
package trace
