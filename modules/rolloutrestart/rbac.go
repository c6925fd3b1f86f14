package rolloutrestart

import (
	"nksrun/engine/module"
	"nksrun/modules/kubeutil"
)

var _ module.APIUser = (*Module)(nil)

// RBAC: rollout_restart patches the pod template annotation and (wait:
// true) polls the workload's status (get).
func (*Module) RBAC(params any) ([]module.Rule, error) {
	p := params.(*Params)
	sel := kubeutil.Selection{Namespace: p.Namespace, Name: p.Name, Names: p.Names, LabelSelector: p.LabelSelector}
	return sel.WorkloadRules(p.Kind, "restarts"), nil
}
