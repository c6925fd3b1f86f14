package pullsecret

import (
	"errors"

	"nksrun/engine/module"
)

var _ module.APIUser = Module{}

// RBAC: pull_secret reads, creates (a server-side dry run when planning)
// and updates one docker-registry Secret and adds it to one ServiceAccount's
// imagePullSecrets, in each namespace it names: get/update/patch on those
// objects by name, create (which RBAC cannot narrow by name) in those
// namespaces only. Namespaces known only at run time cannot be turned into
// Roles, and create on Secrets in every namespace would let the holder
// create a service-account token Secret anywhere and read it back: refused.
func (Module) RBAC(params any) ([]module.Rule, error) {
	p := *params.(*Params)
	p.defaults()
	if len(p.Namespaces) == 0 {
		return nil, errors.New("the namespaces are only known at run time: give them (--set namespaces=a,b) so that the Secret and ServiceAccount rules stay in those namespaces")
	}
	var out []module.Rule
	for _, n := range p.Namespaces {
		out = append(out,
			module.Rule{Namespace: n, Groups: []string{""}, Resources: []string{"secrets"}, Names: []string{p.SecretName}, Verbs: []string{"get", "update"}, Why: "the pull Secret"},
			module.Rule{Namespace: n, Groups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"create"}, Why: "creates the pull Secret"},
			module.Rule{Namespace: n, Groups: []string{""}, Resources: []string{"serviceaccounts"}, Names: []string{p.ServiceAccount}, Verbs: []string{"get", "patch"}, Why: "imagePullSecrets of the ServiceAccount"},
			module.Rule{Namespace: n, Groups: []string{""}, Resources: []string{"serviceaccounts"}, Verbs: []string{"create"}, Why: "creates the ServiceAccount where it is missing"})
	}
	return out, nil
}
