package pullsecret

import (
	"nksrun/engine/module"
)

var _ module.APIUser = Module{}

// RBAC: pull_secret creates or updates a docker-registry Secret and adds it
// to a ServiceAccount's imagePullSecrets, in each namespace it names. With no
// namespace known before run time the step changes nothing.
func (Module) RBAC(params any) ([]module.Rule, error) {
	p := params.(*Params)
	var out []module.Rule
	for _, n := range p.Namespaces {
		out = append(out,
			module.Rule{Namespace: n, Groups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get", "create", "update"}, Why: "the pull Secret"},
			module.Rule{Namespace: n, Groups: []string{""}, Resources: []string{"serviceaccounts"}, Verbs: []string{"get", "create", "patch"}, Why: "imagePullSecrets of the ServiceAccount"})
	}
	return out, nil
}
