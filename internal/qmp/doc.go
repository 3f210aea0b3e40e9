// Package qmp is a client of the QEMU Machine Protocol, written from
// scratch: protocol.go decodes and encodes messages, conn.go runs the
// connection (greeting, capability negotiation, commands with ids and
// per-command timeouts through context, connection-close handling),
// events.go dispatches asynchronous events to subscribers, and
// commands.go holds typed wrappers for the commands vpool uses.
//
// It imports only the standard library. Only internal/hypervisor/qemu may
// import it: no other package knows QEMU.
package qmp
