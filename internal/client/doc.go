// Package client is the Go client of vpool's REST API (/api/v1): one typed
// method per route of api.Routes, the event stream (NDJSON), and a polling
// helper that waits for a VM to reach a condition. Errors from the server
// come back as *api.Error so callers can errors.As them. Given every
// server of a control plane, it fails over between them (failover.go).
//
// It imports only the standard library, internal/api and internal/model:
// it must not import the server, the store or anything that runs on a host.
package client
