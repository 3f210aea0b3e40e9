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
	{"GET", "/api/v1/ha", "host HA: hosts by state, protected VMs, the failover reserve, the last failovers"},
	{"GET", "/api/v1/cluster/members", "the control plane's servers: store members, raft and controller leaders"},
	{"POST", "/api/v1/cluster/members", "a single-use token for one new server to join the control plane"},
	{"DELETE", "/api/v1/cluster/members/{name}", "remove a server's store member (the server stops)"},

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
	{"POST", "/api/v1/vms/{name}/stop", "stop a VM: gracefully (timeoutSeconds) or forced"},
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

	{"GET", "/api/v1/audit", "the newest audit records (a tenant sees its project's only)"},
	{"GET", "/api/v1/audit/records", "the stored bytes of audit records from ?from= (export and verification)"},
	{"GET", "/api/v1/audit/head", "the signed head, the anchor and the signing key of the audit trail"},
	{"GET", "/api/v1/audit/key", "the servers' audit signing key (public)"},
	{"GET", "/api/v1/cluster/history", "the hosts' recent CPU, memory and power, sampled by this server (the dashboard's charts)"},
	{"GET", "/api/v1/compliance", "data-locality compliance: every VM, its constraint, the hosts it ran on, breaches"},
	{"GET", "/api/v1/cluster/metering", "metering settings: grid intensity per site"},
	{"PATCH", "/api/v1/cluster/metering", "set or remove sites' grid intensities"},
	{"GET", "/api/v1/usage", "metered usage, energy and CO2 per project and VM over ?from= ?to= (a tenant sees its project's)"},

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
	{"PATCH", "/api/v1/vms/{name}/disks/{disk}", "grow a disk (live when the VM runs)"},
	{"GET", "/api/v1/vms/{name}/console", "attach to the serial console (websocket)"},
	{"GET", "/api/v1/vms/{name}/console/log", "the tail of the serial console log (?tail=BYTES)"},

	{"GET", "/api/v1/images", "list boot images"},
	{"POST", "/api/v1/images", "import an image: JSON with URLs (downloaded in the background), or a multipart upload"},
	{"GET", "/api/v1/images/{name}", "show an image"},
	{"DELETE", "/api/v1/images/{name}", "delete an image no VM uses"},
	{"GET", "/api/v1/networks", "list networks"},
	{"POST", "/api/v1/networks", "create a network (subnet, gateway, vxlan or vlan, MTU, DHCP)"},
	{"GET", "/api/v1/networks/{name}", "show a network"},
	{"DELETE", "/api/v1/networks/{name}", "delete a network no address of which is in use"},
	{"GET", "/api/v1/networks/{name}/addresses", "list a network's allocated addresses and their owners"},
	{"POST", "/api/v1/networks/{name}/addresses", "allocate an address for something other than a VM NIC (e.g. a balancer's VIP)"},
	{"DELETE", "/api/v1/networks/{name}/addresses/{ip}", "release an address allocated through the address API"},
	{"GET", "/api/v1/secgroups", "list security groups"},
	{"POST", "/api/v1/secgroups", "create a security group"},
	{"GET", "/api/v1/secgroups/{name}", "show a security group and its rules"},
	{"DELETE", "/api/v1/secgroups/{name}", "delete a security group no NIC or rule uses"},
	{"POST", "/api/v1/secgroups/{name}/rules", "add a rule to a security group"},
	{"DELETE", "/api/v1/secgroups/{name}/rules/{id}", "delete a rule of a security group"},
	{"POST", "/api/v1/vms/{name}/nics", "add a NIC to a VM (hot-plugged when it runs)"},
	{"PATCH", "/api/v1/vms/{name}/nics/{nic}", "change a NIC's security groups or rate limits, live"},
	{"DELETE", "/api/v1/vms/{name}/nics/{nic}", "unplug and remove a NIC, releasing its address"},
	{"GET", "/api/v1/lbs", "list load balancers"},
	{"POST", "/api/v1/lbs", "create an L4 load balancer: a virtual IP on a network, HAProxy on one host"},
	{"GET", "/api/v1/lbs/{name}", "show a load balancer with its host, members and their health"},
	{"PATCH", "/api/v1/lbs/{name}", "change a load balancer's members (removed ones drain), algorithm or health check"},
	{"DELETE", "/api/v1/lbs/{name}", "delete a load balancer and release its address"},
	{"GET", "/api/v1/groups", "list scaling groups"},
	{"POST", "/api/v1/groups", "create a scaling group of VMs made from a template"},
	{"GET", "/api/v1/groups/{name}", "show a scaling group with its members and last decision"},
	{"PATCH", "/api/v1/groups/{name}", "change a scaling group's bounds, target or schedules"},
	{"DELETE", "/api/v1/groups/{name}", "delete a scaling group: its members drain, then are deleted"},
}, BackupRoutes...)

// AgentRoutes is the agent protocol, on the mutual-TLS agent listener.
var AgentRoutes = append([]Route{
	{"POST", "/agent/v1/join", "exchange a join token and a CSR for a client certificate"},
	{"POST", "/agent/v1/migration-cert", "a CSR for the calling host's migration-only certificate: what its QEMUs hold for migration TLS, never an identity towards the servers"},
	{"POST", "/agent/v1/members/join", "a new server exchanges its server join token for the store's CA, the seal key and the membership"},
	{"PUT", "/agent/v1/heartbeat", "renew the host lease, report inventory and usage"},
	{"GET", "/agent/v1/assignments", "VMs assigned to the calling host (long poll)"},
	{"PUT", "/agent/v1/vms/{project}/{name}/status", "report one VM's status"},
	{"GET", "/agent/v1/vms/{project}/{name}/owner", "the owner record of a VM's disks, read from the store: an agent starts QEMU only when it names the agent's host"},
	{"GET", "/agent/v1/migrations", "migrations the calling host takes part in (long poll)"},
	{"PUT", "/agent/v1/migrations/{id}/report", "report the calling host's side of a migration"},
	{"GET", "/agent/v1/power", "the calling host's desired power state (polled while asleep)"},
	{"PUT", "/agent/v1/snapshots/{project}/{vm}/{name}", "report the outcome of a snapshot request"},
	{"GET", "/agent/v1/consoles", "console sessions waiting for the calling host (long poll)"},
	{"GET", "/agent/v1/consoles/{id}", "join a console session (websocket)"},
	{"GET", "/agent/v1/images/{name}", "an image's record, to fetch its files"},
	{"GET", "/agent/v1/images/{name}/files/{sha256}", "one file of an image from the server's pool"},
	{"GET", "/agent/v1/networks", "the calling host's virtual networks, NICs and security groups (long poll on etag)"},
	{"GET", "/agent/v1/balancers", "the load balancers the calling host serves (long poll on etag)"},
	{"PUT", "/agent/v1/balancers/{project}/{name}/status", "report a served load balancer's members' health and connections"},
}, BackupAgentRoutes...)
