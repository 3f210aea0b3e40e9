// Package readme runs the README's tour: it builds cmd/vpool, starts
// `vpool dev` as the README does (the built binary, the default data dir
// in a working directory, real QEMU under TCG with the test guest as the
// image busybox, three simulated hosts), then runs every line of the
// tour's shell block exactly as written, in order, with the binary on
// PATH, and checks each exits 0 and says what the tour promises. A tour
// that rots fails here.
//
// It is a heavy test (one real guest; about a minute on two cores): it
// skips only where QEMU is missing, and fails there under
// VPOOL_REQUIRE_HEAVY=1 (CI). Only its tests do anything; this package
// has no non-test code besides this comment and must not be imported.
package readme
