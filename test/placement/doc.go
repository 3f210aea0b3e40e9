// Package placement holds the integration tests and benchmarks of VM
// placement beyond the pure engine (internal/scheduler): the scheduling
// controller committing through a real etcd, several schedulers racing in
// goroutines and in separate OS processes, batches placed all or nothing,
// explanations and dry runs through the REST API and the CLI, the stored
// policy, and committed placements per second through the API.
//
// Child processes are the test binary itself, re-executed in a helper
// mode (TestMain): etcd members (etcdtest) and scheduling controllers
// without leader election (controller.Config.NoElection, a test-only
// switch). They are skipped with -short.
//
// Only its tests do anything; this package has no non-test code besides
// this comment and must not be imported.
package placement
