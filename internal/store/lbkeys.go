package store

// Load balancer and scaling group keys (issue 16, second half):
//
//	/vpool/lbs/<project>/<name>      model.LoadBalancer
//	/vpool/groups/<project>/<name>   model.ScalingGroup
const (
	LBsPrefix    = Root + "lbs/"
	GroupsPrefix = Root + "groups/"
)

// LBKey is the key of a load balancer.
func LBKey(project, name string) string { return LBsPrefix + project + "/" + name }

// GroupKey is the key of a scaling group.
func GroupKey(project, name string) string { return GroupsPrefix + project + "/" + name }
