package setimage

import (
	"nksrun/engine/module"
	"nksrun/modules/kubeutil"
)

var _ module.APIUser = Module{}

// RBAC: one workload kind, or every kind with a pod template.
func (Module) RBAC(params any) ([]module.Rule, error) {
	p := params.(*Params)
	sel := kubeutil.Selection{Namespace: p.Namespace, Name: p.Name, LabelSelector: p.LabelSelector}
	return sel.WorkloadRules(p.Kind, "sets images of"), nil
}
