// Package cli holds vpool's user commands (vm, host, project, token,
// events, cluster, version) as cobra commands, the client configuration
// (flags, VPOOL_* environment, ~/.config/vpool/config.json) and the output
// formats (table, json, yaml).
//
// It talks to the control plane only through internal/client: it imports
// only internal/client, internal/api and internal/model besides cobra,
// sigs.k8s.io/yaml and the standard library — never the server, the store
// or host code.
package cli
