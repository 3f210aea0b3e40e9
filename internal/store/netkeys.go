package store

import "strconv"

// Virtual network keys (issue 16):
//
//	/vpool/networks/<project>/<name>         model.Network
//	/vpool/netindex/<project>                model.NetIndex: the project's subnets (CAS guard
//	                                         against overlapping creates)
//	/vpool/vni/<vni>                         "<project>/<network>": VNIs in use
//	/vpool/ipam/<project>/<network>/<ip>     model.AddressAlloc: one allocated address
//	/vpool/secgroups/<project>/<name>        model.SecurityGroup
const (
	NetworksPrefix  = Root + "networks/"
	NetIndexPrefix  = Root + "netindex/"
	VNIPrefix       = Root + "vni/"
	IPAMPrefix      = Root + "ipam/"
	SecGroupsPrefix = Root + "secgroups/"
)

// NetworkKey is the key of a network.
func NetworkKey(project, name string) string { return NetworksPrefix + project + "/" + name }

// NetIndexKey is the key of a project's subnet index.
func NetIndexKey(project string) string { return NetIndexPrefix + project }

// VNIKey is the key that reserves a VNI.
func VNIKey(vni int) string { return VNIPrefix + strconv.Itoa(vni) }

// AddressPrefix lists a network's allocated addresses.
func AddressPrefix(project, network string) string {
	return IPAMPrefix + project + "/" + network + "/"
}

// AddressKey is the key of one allocated address.
func AddressKey(project, network, ip string) string { return AddressPrefix(project, network) + ip }

// SecGroupKey is the key of a security group.
func SecGroupKey(project, name string) string { return SecGroupsPrefix + project + "/" + name }
