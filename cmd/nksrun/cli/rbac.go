package cli

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"

	"nksrun/engine/module"
	"nksrun/engine/runbook"
	"nksrun/modules/kubeutil"
)

// ruleYAML renders one rule of a Role or ClusterRole, with why as a comment.
func ruleYAML(r module.Rule) string {
	why := strings.Join(strings.Fields(r.Why), " ")
	q := func(ss []string) string {
		b, _ := json.Marshal(ss)
		return strings.ReplaceAll(string(b), ",", ", ")
	}
	s := fmt.Sprintf("  # %s\n  - apiGroups: %s\n    resources: %s\n", why, q(r.Groups), q(r.Resources))
	if len(r.Names) > 0 {
		s += fmt.Sprintf("    resourceNames: %s\n", q(r.Names))
	}
	return s + fmt.Sprintf("    verbs: %s\n", q(r.Verbs))
}

// runbookRBAC is the least RBAC a runbook needs: listing nodes for the
// inventory, reading the objects of its k8s facts, and what each step's
// module says it needs (module.APIUser) with the step's own parameters
// (evaluated with the runbook's defaults and set, as the CronJob will run
// it). Notes say what could not be derived (a parameter that depends on
// facts). A rule that would need a wildcard is an error: nksrun never emits
// one.
func runbookRBAC(rb *runbook.Runbook, reg module.Registry, set map[string]string) ([]module.Rule, []string, error) {
	rules := []module.Rule{{Groups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list"}, Why: "inventory: the cluster's nodes, their addresses and facts"}}
	var notes []string
	factNames := make([]string, 0, len(rb.Facts))
	for name := range rb.Facts {
		factNames = append(factNames, name)
	}
	sort.Strings(factNames)
	for _, name := range factNames {
		f := rb.Facts[name]
		if f.K8s == nil {
			continue
		}
		rules = append(rules, module.Rule{Namespace: f.K8s.Namespace, Groups: []string{kubeutil.APIGroup(f.K8s.APIVersion)}, Resources: []string{kubeutil.ResourceOf(f.K8s.Kind)},
			Verbs: []string{"get", "list"}, Why: "fact " + name + ": reads " + f.K8s.Kind})
		if f.K8s.Events {
			rules = append(rules, module.Rule{Namespace: f.K8s.Namespace, Groups: []string{""}, Resources: []string{"events"}, Verbs: []string{"list"}, Why: "fact " + name + ": events of the objects"})
		}
	}
	params, err := rb.ResolveParams(set)
	if err != nil {
		notes = append(notes, fmt.Sprintf("params: %v (RBAC derived from the steps' literal values only)", err))
	}
	env := map[string]any{
		runbook.EnvParams: params, runbook.EnvNode: map[string]any{}, runbook.EnvCluster: map[string]any{"version": "", "nodes": []any{}, "connected": true},
		runbook.EnvHost: map[string]any{}, runbook.EnvFacts: map[string]any{}, runbook.EnvSteps: map[string]any{},
	}
	for i := range rb.Steps {
		s := &rb.Steps[i]
		f, ok := reg[s.Module]
		if !ok {
			return nil, nil, fmt.Errorf("step %s: unknown module %q", s.ID, s.Module)
		}
		mod := f()
		user, ok := mod.(module.APIUser)
		if !ok {
			continue // works over SSH only: nothing in the API
		}
		p, err := s.Params(mod, env)
		if err != nil {
			// Some parameter depends on facts read at run time (e.g. the
			// names of objects that have finalizers): use the literal
			// parameters only, so the rule covers every such object.
			p = mod.NewParams()
			b, _ := json.Marshal(literalParams(&s.With))
			_ = json.Unmarshal(b, p)
			notes = append(notes, fmt.Sprintf("step %s (%s): some parameters are only known at run time; its rules come from the literal ones", s.ID, s.Module))
		}
		need, err := user.RBAC(p)
		if err != nil {
			return nil, nil, fmt.Errorf("step %s (%s): %w", s.ID, s.Module, err)
		}
		for _, r := range need {
			for _, v := range append(append(append([]string(nil), r.Groups...), r.Resources...), r.Verbs...) {
				if v == "*" {
					return nil, nil, fmt.Errorf("step %s (%s): module asked for a wildcard rule (%s); refusing to emit it", s.ID, s.Module, r.Why)
				}
			}
			r.Why = fmt.Sprintf("step %s (%s): %s", s.ID, s.Module, r.Why)
			rules = append(rules, r)
		}
	}
	return mergeRules(rules), notes, nil
}

// literalParams decodes the top level of a step's with: mapping, leaving
// out every value that is an expression.
func literalParams(with *yaml.Node) map[string]any {
	out := map[string]any{}
	if with.Kind != yaml.MappingNode {
		return out
	}
	for i := 0; i+1 < len(with.Content); i += 2 {
		k, v := with.Content[i], with.Content[i+1]
		if hasExpr(v) {
			continue
		}
		var val any
		if v.Decode(&val) == nil {
			out[k.Value] = val
		}
	}
	return out
}

func hasExpr(n *yaml.Node) bool {
	if n.Tag == "!expr" {
		return true
	}
	for _, c := range n.Content {
		if hasExpr(c) {
			return true
		}
	}
	return false
}

// mergeRules joins rules on the same objects (verbs united, first reason
// kept) and keeps the order of first appearance.
func mergeRules(rules []module.Rule) []module.Rule {
	var out []module.Rule
	idx := map[string]int{}
	for _, r := range rules {
		k := strings.Join([]string{r.Namespace, strings.Join(r.Groups, ","), strings.Join(r.Resources, ","), strings.Join(r.Names, ",")}, "|")
		if i, ok := idx[k]; ok {
			out[i].Verbs = unionVerbs(out[i].Verbs, r.Verbs)
			if !strings.Contains(out[i].Why, r.Why) {
				out[i].Why += "; " + r.Why
			}
			continue
		}
		idx[k] = len(out)
		r.Verbs = unionVerbs(nil, r.Verbs)
		out = append(out, r)
	}
	return out
}

var verbOrder = map[string]int{"get": 0, "list": 1, "watch": 2, "create": 3, "update": 4, "patch": 5, "delete": 6}

func unionVerbs(a, b []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, v := range append(append([]string(nil), a...), b...) {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return verbOrder[out[i]] < verbOrder[out[j]] })
	return out
}
