//go:build !linux

package cli

import "io"

// noEcho leaves the echo on where vpool knows no terminal interface.
func noEcho(io.Reader) func() { return func() {} }
