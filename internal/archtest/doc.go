// Package archtest holds no code of its own: its tests enforce the
// architecture of the repository — the import rules between packages,
// checked on the transitive build graph that `go list -deps` reports (a
// rule naming a package that does not exist fails), and that every
// package carries a doc comment. It imports only the standard library.
package archtest
