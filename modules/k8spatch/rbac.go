package k8spatch

import (
	"fmt"

	"nksrun/engine/module"
	"nksrun/modules/kubeutil"
)

var _ module.TypedAPIUser[Params] = Module{}

// RBAC: k8s_patch previews with a server-side dry-run patch and applies with
// a resourceVersion precondition (get, patch; list when it selects).
func (Module) RBAC(p *Params) ([]module.Rule, error) {
	if p.Kind == "" {
		return nil, fmt.Errorf("kind is only known at run time: no least-privilege rule can be derived (set kind literally in the step)")
	}
	sel := kubeutil.Selection{Namespace: p.Namespace, Name: p.Name, Names: p.Names, LabelSelector: p.LabelSelector}
	return sel.ObjectRules(kubeutil.APIGroup(p.APIVersion), kubeutil.ResourceOf(p.Kind), "patches "+p.Kind), nil
}
