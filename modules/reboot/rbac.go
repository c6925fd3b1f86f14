package reboot

import (
	"nksrun/engine/module"
)

var _ module.APIUser = (*Module)(nil)

// RBAC: reboot cordons and drains through the Eviction API (PDBs
// honoured), serialises reboots with a Lease and uncordons what it cordoned.
func (*Module) RBAC(params any) ([]module.Rule, error) {
	p := params.(*Params)
	lockNS := p.LockNamespace
	if lockNS == "" {
		lockNS = "kube-system"
	}
	return []module.Rule{
		{Groups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "patch"}, Why: "cordon/uncordon"},
		{Groups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list"}, Why: "pods to drain"},
		{Groups: []string{""}, Resources: []string{"pods/eviction"}, Verbs: []string{"create"}, Why: "drain through the Eviction API"},
		{Groups: []string{"policy"}, Resources: []string{"poddisruptionbudgets"}, Verbs: []string{"list"}, Why: "name the PodDisruptionBudgets that block a drain"},
		{Namespace: lockNS, Groups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "list", "create", "update"}, Why: "one reboot at a time (Lease lock); a dead holder's slot and cordon are taken over"},
	}, nil
}
