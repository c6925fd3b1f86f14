package setimage

import (
	"nksrun/engine/module"
	"nksrun/modules/kubeutil"
)

var _ module.TypedAPIUser[Params] = Module{}

// RBAC: one workload kind, or every kind with a pod template.
func (Module) RBAC(p *Params) ([]module.Rule, error) {
	sel := kubeutil.Selection{Namespace: p.Namespace, Name: p.Name, LabelSelector: p.LabelSelector}
	return sel.WorkloadRules(p.Kind, "sets images of"), nil
}
