// Package model holds vpool's domain types (projects, hosts, VMs, events,
// tokens) and their validation. It is the shared vocabulary of every other
// package and therefore imports only the standard library.
package model
