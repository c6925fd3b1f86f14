package pullsecret

import (
	"errors"
	"sort"

	"nksrun/engine/module"
)

var _ module.TypedAPIUser[Params] = Module{}

// RBAC: pull_secret reads, creates (a server-side dry run when planning)
// and updates one docker-registry Secret and adds it to the ServiceAccounts
// it names (namespaces × service_account, and service_accounts): get,
// update and patch on those objects by name, create (which RBAC cannot
// narrow by name) in those namespaces only. Namespaces known only at run
// time cannot be turned into Roles, and create on Secrets in every
// namespace would let the holder create a service-account token Secret
// anywhere and read it back: refused.
func (Module) RBAC(params *Params) ([]module.Rule, error) {
	p := *params
	p.defaults()
	refs, err := targets(&p)
	if err != nil {
		return nil, err
	}
	if len(refs) == 0 {
		return nil, errors.New("the namespaces are only known at run time: give them (--set namespaces=a,b) so that the Secret and ServiceAccount rules stay in those namespaces")
	}
	seen := map[string]bool{}
	var namespaces []string
	for _, r := range refs {
		if !seen[r.Namespace] {
			seen[r.Namespace] = true
			namespaces = append(namespaces, r.Namespace)
		}
	}
	sort.Strings(namespaces)
	var out []module.Rule
	for _, n := range namespaces {
		out = append(out,
			module.Rule{Namespace: n, Groups: []string{""}, Resources: []string{"secrets"}, Names: []string{p.SecretName}, Verbs: []string{"get", "update"}, Why: "the pull Secret"},
			module.Rule{Namespace: n, Groups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"create"}, Why: "creates the pull Secret"},
			// Which ServiceAccounts (those the failing pods run as) is
			// known only at run time; they are not secrets.
			module.Rule{Namespace: n, Groups: []string{""}, Resources: []string{"serviceaccounts"}, Verbs: []string{"get", "patch"}, Why: "imagePullSecrets of the ServiceAccounts"},
			module.Rule{Namespace: n, Groups: []string{""}, Resources: []string{"serviceaccounts"}, Verbs: []string{"create"}, Why: "creates a ServiceAccount where it is missing"})
	}
	return out, nil
}
