package kubeutil

import (
	"strings"

	"nksrun/engine/module"
)

// APIGroup is the group of an apiVersion ("apps/v1" → "apps", "v1" → "").
func APIGroup(apiVersion string) string {
	if g, _, ok := strings.Cut(apiVersion, "/"); ok {
		return g
	}
	return ""
}

// ResourceOf is the resource name of a kind, as the API server pluralises
// the built-in kinds (Endpoints stays, NetworkPolicy → networkpolicies,
// Ingress → ingresses). RBAC rules are written before any API server is
// reachable, so this cannot ask a RESTMapper.
func ResourceOf(kind string) string {
	k := strings.ToLower(kind)
	switch {
	case k == "endpoints":
		return k
	case strings.HasSuffix(k, "s"), strings.HasSuffix(k, "x"), strings.HasSuffix(k, "ch"), strings.HasSuffix(k, "sh"):
		return k + "es"
	case strings.HasSuffix(k, "y") && len(k) > 1 && !strings.ContainsRune("aeiou", rune(k[len(k)-2])):
		return k[:len(k)-1] + "ies"
	}
	return k + "s"
}

// Selection is how a step picks its objects: by name(s) or by listing a
// namespace (optionally with a label selector).
type Selection struct {
	Namespace     string
	Name          string
	Names         *[]string
	LabelSelector string
}

// names narrows a rule to named objects when the step names them (get and
// patch work with resourceNames; list does not).
func (s Selection) names() []string {
	if s.LabelSelector != "" {
		return nil
	}
	if s.Names != nil && len(*s.Names) > 0 {
		return append([]string(nil), (*s.Names)...)
	}
	if s.Name != "" {
		return []string{s.Name}
	}
	return nil
}

// ObjectRules are the rules to read and patch the selected objects of one
// resource: get+patch on the named objects, or get+list+patch on the
// namespace's (or cluster's) objects of that resource.
func (s Selection) ObjectRules(group, resource, why string) []module.Rule {
	if names := s.names(); names != nil {
		return []module.Rule{{Namespace: s.Namespace, Groups: []string{group}, Resources: []string{resource}, Names: names, Verbs: []string{"get", "patch"}, Why: why}}
	}
	return []module.Rule{{Namespace: s.Namespace, Groups: []string{group}, Resources: []string{resource}, Verbs: []string{"get", "list", "patch"}, Why: why}}
}

// WorkloadRules are ObjectRules for each workload kind a step may touch
// (kind "" = every kind with a pod template).
func (s Selection) WorkloadRules(kind, why string) []module.Rule {
	var out []module.Rule
	for _, k := range workloadKinds {
		if kind == "" || strings.EqualFold(kind, k.kind) {
			out = append(out, s.ObjectRules(k.group, ResourceOf(k.kind), why+" "+k.kind+"s")...)
		}
	}
	return out
}

var workloadKinds = []struct{ group, kind string }{
	{"apps", "Deployment"}, {"apps", "DaemonSet"}, {"apps", "StatefulSet"}, {"batch", "CronJob"}, {"batch", "Job"},
}
