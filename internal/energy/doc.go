// Package energy holds host power models and energy/carbon accounting:
// SPECpower tables (HP ProLiant ML110 G4 and G5 built in, user tables
// accepted), linear interpolation between the published 10 % steps,
// standby power for hosts that are switched off, energy per host, per VM
// (attributed by CPU share) and per project, and carbon from a grid
// intensity and a PUE.
//
// It is a pure decision package: it must not import the store, net/http,
// QEMU code or read the wall clock. Times are passed in as seconds.
package energy
