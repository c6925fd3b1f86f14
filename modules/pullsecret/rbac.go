package pullsecret

import (
	"nksrun/engine/module"
)

var _ module.APIUser = Module{}

// RBAC: pull_secret creates or updates a docker-registry Secret and adds it
// to a ServiceAccount's imagePullSecrets, in each namespace it names (in
// namespaces and in service_accounts). With no namespace known before run
// time the step changes nothing.
func (Module) RBAC(params any) ([]module.Rule, error) {
	p := params.(*Params)
	p.defaults()
	refs, err := targets(p)
	if err != nil {
		return nil, err
	}
	var out []module.Rule
	seen := map[string]bool{}
	for _, r := range refs {
		n := r.Namespace
		if seen[n] {
			continue
		}
		seen[n] = true
		out = append(out,
			module.Rule{Namespace: n, Groups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get", "create", "update"}, Why: "the pull Secret"},
			module.Rule{Namespace: n, Groups: []string{""}, Resources: []string{"serviceaccounts"}, Verbs: []string{"get", "create", "patch"}, Why: "imagePullSecrets of the ServiceAccount"})
	}
	return out, nil
}
