package rolloutrestart

import (
	"nksrun/engine/module"
	"nksrun/modules/kubeutil"
)

var _ module.TypedAPIUser[Params] = (*Module)(nil)

// RBAC: rollout_restart patches the pod template annotation and (wait:
// true) polls the workload's status (get).
func (*Module) RBAC(p *Params) ([]module.Rule, error) {
	sel := kubeutil.Selection{Namespace: p.Namespace, Name: p.Name, Names: p.Names, LabelSelector: p.LabelSelector}
	return sel.WorkloadRules(p.Kind, "restarts"), nil
}
