package api

// Route is one endpoint of the user API. Paths use Go 1.22 ServeMux
// patterns ({name} wildcards). The server registers exactly these; the
// OpenAPI document (openapi.json) lists exactly these, and a test checks
// that the three agree.
type Route struct {
	Method  string
	Path    string
	Summary string
}

// Routes is the user API. Project-scoped endpoints take ?project=NAME
// (default: the token's project, else "default").
var Routes = append([]Route{
	{"GET", "/api/v1/openapi.json", "the OpenAPI 3 document of this API"},
	{"GET", "/api/v1/cluster", "cluster summary"},
	{"GET", "/api/v1/cluster/policy", "placement policy"},
	{"PUT", "/api/v1/cluster/policy", "replace the placement policy"},

	{"GET", "/api/v1/projects", "list projects"},
	{"POST", "/api/v1/projects", "create a project"},
	{"GET", "/api/v1/projects/{name}", "show a project with its usage"},
	{"PATCH", "/api/v1/projects/{name}", "change a project's description or quota"},
	{"DELETE", "/api/v1/projects/{name}", "delete an empty project"},

	{"GET", "/api/v1/vms", "list VMs (?project=, ?all-projects=true for admins)"},
	{"POST", "/api/v1/vms", "create a VM (dryRun answers placement only)"},
	{"POST", "/api/v1/vms:batch", "create several VMs, all or nothing"},
	{"GET", "/api/v1/vms/{name}", "show a VM"},
	{"PATCH", "/api/v1/vms/{name}", "resize or relabel a VM"},
	{"DELETE", "/api/v1/vms/{name}", "delete a VM"},
	{"POST", "/api/v1/vms/{name}/start", "start a VM"},
	{"POST", "/api/v1/vms/{name}/stop", "stop a VM"},
	{"POST", "/api/v1/vms/{name}/restart", "restart a VM"},

	{"GET", "/api/v1/hosts", "list hosts"},
	{"GET", "/api/v1/hosts/{name}", "show a host"},
	{"PATCH", "/api/v1/hosts/{name}", "label, cordon or set ratios of a host"},
	{"DELETE", "/api/v1/hosts/{name}", "forget a host that has no VMs"},
	{"POST", "/api/v1/hosts/join-tokens", "issue a join token for new hosts (single use unless uses is given)"},
	{"POST", "/api/v1/hosts/{name}/rekey", "revoke a host's certificate and issue a join token for that host alone"},

	{"GET", "/api/v1/tokens", "list tokens"},
	{"POST", "/api/v1/tokens", "create a token"},
	{"DELETE", "/api/v1/tokens/{id}", "revoke a token"},

	{"GET", "/api/v1/events", "list events, or stream them with ?follow=true"},

	{"GET", "/api/v1/migrations", "list migrations (?project=, ?all-projects=true for admins)"},
	{"POST", "/api/v1/migrations", "migrate a VM to another host (live when running, cold when stopped)"},
	{"GET", "/api/v1/migrations/{id}", "show a migration with its progress"},
	{"POST", "/api/v1/migrations/{id}/cancel", "cancel a migration that has not begun to switch over"},
	{"POST", "/api/v1/hosts/{name}/drain", "put a host in maintenance and move every VM away"},
	{"POST", "/api/v1/hosts/{name}/undrain", "end a host's maintenance and its drain"},

	{"GET", "/api/v1/cluster/balance", "balancing, power and energy settings"},
	{"PATCH", "/api/v1/cluster/balance", "change balancing, power and energy settings"},
	{"GET", "/api/v1/balance/plan", "the balancer's last plan and why"},
	{"GET", "/api/v1/cluster/energy", "energy and CO2 per host and project (?vms=true adds VMs)"},

	{"GET", "/api/v1/vms/{name}/snapshots", "list a VM's snapshots"},
	{"POST", "/api/v1/vms/{name}/snapshots", "snapshot a VM's disks (and memory with memory=true)"},
	{"GET", "/api/v1/vms/{name}/snapshots/{snapshot}", "show a snapshot"},
	{"POST", "/api/v1/vms/{name}/snapshots/{snapshot}/revert", "revert a VM to a snapshot"},
	{"DELETE", "/api/v1/vms/{name}/snapshots/{snapshot}", "delete a snapshot"},
	{"POST", "/api/v1/vms/{name}/disks", "hot-plug a new disk"},
	{"DELETE", "/api/v1/vms/{name}/disks/{disk}", "unplug and delete a disk"},
	{"GET", "/api/v1/vms/{name}/console", "attach to the serial console (websocket)"},
	{"GET", "/api/v1/vms/{name}/console/log", "the tail of the serial console log (?tail=BYTES)"},
}, BackupRoutes...)

// AgentRoutes is the agent protocol, on the mutual-TLS agent listener.
var AgentRoutes = append([]Route{
	{"POST", "/agent/v1/join", "exchange a join token and a CSR for a client certificate"},
	{"PUT", "/agent/v1/heartbeat", "renew the host lease, report inventory and usage"},
	{"GET", "/agent/v1/assignments", "VMs assigned to the calling host (long poll)"},
	{"PUT", "/agent/v1/vms/{project}/{name}/status", "report one VM's status"},
	{"GET", "/agent/v1/migrations", "migrations the calling host takes part in (long poll)"},
	{"PUT", "/agent/v1/migrations/{id}/report", "report the calling host's side of a migration"},
	{"GET", "/agent/v1/power", "the calling host's desired power state (polled while asleep)"},
	{"PUT", "/agent/v1/snapshots/{project}/{vm}/{name}", "report the outcome of a snapshot request"},
	{"GET", "/agent/v1/consoles", "console sessions waiting for the calling host (long poll)"},
	{"GET", "/agent/v1/consoles/{id}", "join a console session (websocket)"},
}, BackupAgentRoutes...)
