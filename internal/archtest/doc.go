// Package archtest holds no code of its own: its tests enforce the
// architecture of the repository — the import rules between packages and
// that every package carries a doc comment. It imports only the standard
// library.
package archtest
