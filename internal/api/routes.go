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
var Routes = []Route{
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
	{"POST", "/api/v1/hosts/join-tokens", "issue a join token for a new host"},

	{"GET", "/api/v1/tokens", "list tokens"},
	{"POST", "/api/v1/tokens", "create a token"},
	{"DELETE", "/api/v1/tokens/{id}", "revoke a token"},

	{"GET", "/api/v1/events", "list events, or stream them with ?follow=true"},
}

// AgentRoutes is the agent protocol, on the mutual-TLS agent listener.
var AgentRoutes = []Route{
	{"POST", "/agent/v1/join", "exchange a join token and a CSR for a client certificate"},
	{"PUT", "/agent/v1/heartbeat", "renew the host lease, report inventory and usage"},
	{"GET", "/agent/v1/assignments", "VMs assigned to the calling host (long poll)"},
	{"PUT", "/agent/v1/vms/{project}/{name}/status", "report one VM's status"},
}
