package module

// Rule is one RBAC rule a step needs. Namespace "" means cluster-wide (a
// ClusterRole); Names narrows get/patch/update to those objects (list and
// create cannot be narrowed by name, so rules with them leave Names empty).
type Rule struct {
	Namespace string
	Groups    []string
	Resources []string
	Names     []string
	Verbs     []string
	Why       string
}

// APIUser is implemented by every module whose steps call the Kubernetes
// API: the module, not the CLI, knows what it touches. RBAC returns the least
// rules a step needs given its parameters (decoded from the step's values
// as the CronJob will run them; a field set by an expression that is only
// known at run time is zero). It returns an error when the rules cannot be
// narrowed (e.g. the kind is known only at run time): nksrun never emits a
// wildcard role. The emitted CronJob's Role and ClusterRole come from it.
type APIUser interface {
	RBAC(params any) ([]Rule, error)
}
