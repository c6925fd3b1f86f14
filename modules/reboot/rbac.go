package reboot

import (
	"fmt"

	"nksrun/engine/module"
)

var _ module.TypedAPIUser[Params] = (*Module)(nil)

// RBAC: reboot cordons and drains through the Eviction API (PDBs
// honoured), serialises reboots with a Lease and uncordons what it cordoned.
func (*Module) RBAC(p *Params) ([]module.Rule, error) {
	lockNS := p.LockNamespace
	if lockNS == "" {
		lockNS = "kube-system"
	}
	lockName := p.LockName
	if lockName == "" {
		lockName = "nksrun-reboot"
	}
	// Slot i > 0 of serial is the Lease lockName-i.
	slots := []string{lockName}
	for i := 1; i < p.Serial; i++ {
		slots = append(slots, fmt.Sprintf("%s-%d", lockName, i))
	}
	return []module.Rule{
		{Groups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "patch"}, Why: "cordon/uncordon"},
		{Groups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list"}, Why: "pods to drain"},
		{Groups: []string{""}, Resources: []string{"pods/eviction"}, Verbs: []string{"create"}, Why: "drain through the Eviction API"},
		{Groups: []string{"policy"}, Resources: []string{"poddisruptionbudgets"}, Verbs: []string{"list"}, Why: "name the PodDisruptionBudgets that block a drain"},
		{Namespace: lockNS, Groups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Names: slots, Verbs: []string{"get", "update"}, Why: "one reboot at a time (Lease lock)"},
		{Namespace: lockNS, Groups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"create"}, Why: "creates the Lease lock the first time"},
		{Namespace: lockNS, Groups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"list"}, Why: "tells a dead run's cordon (no slot renewed) from a live one's before taking it over"},
	}, nil
}
