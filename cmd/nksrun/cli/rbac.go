package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"

	"nksrun/engine/module"
	"nksrun/engine/runbook"
	"nksrun/engine/strictyaml"
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
// inventory, reading the objects of its k8s facts (by name where the fact
// names one), and what each step's module says it needs (module.APIUser)
// with the step's own parameters, evaluated with the runbook's defaults and
// set, as the CronJob will run it. A step whose condition is false for
// these params never runs and needs nothing. Parameters that depend on what
// is read at run time (facts, other steps) are left out; notes say so. A
// rule that would need a wildcard is an error: nksrun never emits one, nor
// write access to every object of a cluster-scoped kind when the step
// names its objects only at run time (then the CronJob gets read access
// and a note says what it cannot change).
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
		r := module.Rule{Namespace: f.K8s.Namespace, Groups: []string{kubeutil.APIGroup(f.K8s.APIVersion)}, Resources: []string{kubeutil.ResourceOf(f.K8s.Kind)},
			Verbs: []string{"get", "list"}, Why: "fact " + name + ": reads " + f.K8s.Kind}
		if name, ok := strings.CutPrefix(f.K8s.FieldSelector, "metadata.name="); ok && !strings.ContainsAny(name, ",!=") && f.K8s.Name == "" {
			// A list narrowed to one name: the API server authorizes it
			// against resourceNames, so the rule names that object only.
			r.Names = []string{name}
		}
		if f.K8s.Name != "" {
			// One object, read with a get: that object only.
			r.Names, r.Verbs = []string{f.K8s.Name}, []string{"get"}
		}
		rules = append(rules, r)
		if f.K8s.Events {
			rules = append(rules, module.Rule{Namespace: f.K8s.Namespace, Groups: []string{""}, Resources: []string{"events"}, Verbs: []string{"list"}, Why: "fact " + name + ": events of the objects"})
		}
	}
	params, err := rb.ResolveParams(set)
	if err != nil {
		notes = append(notes, fmt.Sprintf("params: %v (RBAC derived from the steps' literal values only)", err))
	}
	env := (&runbook.Env{Params: params, Vars: knownVars(rb, params), Cluster: &runbook.Cluster{Connected: true}}).Map()
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
		if never(s, env) {
			notes = append(notes, fmt.Sprintf("step %s (%s) does not run with these params (when: %s): no rules for it", s.ID, s.Module, s.When.Source))
			continue
		}
		p, err := s.Params(mod, env)
		var unknown []string
		if err != nil {
			// Some parameter depends on what is read at run time (e.g. the
			// names of objects that have finalizers): use those that can be
			// evaluated now, so the rule covers every such object.
			var known map[string]any
			known, unknown = evalKeys(s, env)
			p = mod.NewParams()
			// known holds values by their yaml names, as a plan file
			// does, and is decoded the same way, strictly. What does not
			// decode is left out like the unknown ones, and said (without
			// the error: it would quote values, which may be secrets).
			raw, err := module.ParamsToJSON(known)
			if err == nil {
				err = misfits(module.ParamsFromJSON(raw, p))
			}
			if err != nil {
				notes = append(notes, fmt.Sprintf("step %s (%s): some parameters do not fit the module; their rules are left out", s.ID, s.Module))
			}
			notes = append(notes, fmt.Sprintf("step %s (%s): %s only known at run time; its rules come from the other parameters", s.ID, s.Module, strings.Join(unknown, ", ")))
		}
		need, err := user.RBAC(p)
		if err != nil {
			return nil, nil, fmt.Errorf("step %s (%s): %w", s.ID, s.Module, err)
		}
		namesAtRunTime := slices.Contains(unknown, "name") || slices.Contains(unknown, "names")
		var everywhere []string
		for _, r := range need {
			for _, v := range append(append(append([]string(nil), r.Groups...), r.Resources...), r.Verbs...) {
				if v == "*" {
					return nil, nil, fmt.Errorf("step %s (%s): module asked for a wildcard rule (%s); refusing to emit it", s.ID, s.Module, r.Why)
				}
			}
			r.Why = fmt.Sprintf("step %s (%s): %s", s.ID, s.Module, r.Why)
			if namesAtRunTime && r.Namespace == "" && len(r.Names) == 0 {
				// Write access to every object of a cluster-scoped kind
				// (every ClusterRole, ...) for a step that changes only
				// the few it finds: read only, and say so.
				var read []string
				for _, v := range r.Verbs {
					if v == "get" || v == "list" || v == "watch" {
						read = append(read, v)
					}
				}
				if len(read) < len(r.Verbs) {
					notes = append(notes, fmt.Sprintf("step %s (%s) changes %s whose names are only known at run time: the CronJob may read them but not change them (its plan shows what it would do; apply it by hand, or add the names as resourceNames)", s.ID, s.Module, strings.Join(r.Resources, ", ")))
					r.Verbs = read
					r.Why += " (read only: names known at run time)"
				}
				if len(r.Verbs) == 0 {
					continue
				}
			}
			if r.Namespace == "" && len(r.Names) == 0 && writes(r.Verbs) && !slices.Contains(r.Resources, "nodes") && !slices.Contains(r.Resources, "pods/eviction") {
				everywhere = append(everywhere, r.Resources...)
			}
			rules = append(rules, r)
		}
		if len(everywhere) > 0 {
			// Inherent to some runbooks (ghcr-migration rewrites images
			// everywhere), but whoever applies the manifest must see it:
			// changing any workload's pod template runs any code as any
			// ServiceAccount.
			notes = append(notes, fmt.Sprintf("step %s (%s) may change %s in every namespace; if the runbook has a namespace param, --set it to confine the CronJob to one namespace", s.ID, s.Module, strings.Join(everywhere, ", ")))
		}
	}
	return mergeRules(rules), notes, nil
}

// writes reports whether verbs change anything.
func writes(verbs []string) bool {
	for _, v := range verbs {
		if v != "get" && v != "list" && v != "watch" {
			return true
		}
	}
	return false
}

// knownVars are the runbook's vars that can be computed from params alone
// (a var that reads facts, nodes or steps is left out, so that a step
// parameter built from it counts as known only at run time).
func knownVars(rb *runbook.Runbook, params map[string]any) map[string]any {
	vars := map[string]any{}
	env := map[string]any{runbook.EnvParams: params, runbook.EnvVars: vars}
	for _, v := range rb.Vars {
		ok := true
		for k := range v.Expr.Uses {
			ok = ok && (k == runbook.EnvParams || k == runbook.EnvVars)
		}
		if !ok {
			continue
		}
		if val, err := v.Expr.Eval(env); err == nil && val != nil {
			vars[v.Name] = val
		}
	}
	return vars
}

// never reports whether a step's condition is false before anything is
// read: it uses params only and evaluates to false.
func never(s *runbook.Step, env map[string]any) bool {
	if !s.When.IsSet() {
		return false
	}
	for k := range s.When.Uses {
		if k != runbook.EnvParams && k != runbook.EnvVars {
			return false
		}
	}
	// vars holds only the vars computable from params (knownVars): a
	// condition on any other var does not evaluate, so it is not "never".
	ok, err := s.When.EvalBool(env)
	return err == nil && !ok
}

// probeModule decodes a step's parameters into a plain map without
// validating them, to evaluate them one key at a time.
type probeModule struct{ module.Module }

func (probeModule) NewParams() any     { return &map[string]any{} }
func (probeModule) Validate(any) error { return nil }

// evalKeys evaluates each top-level key of a step's with: on its own: the
// values known before run time, and the keys that are not.
func evalKeys(s *runbook.Step, env map[string]any) (map[string]any, []string) {
	known := map[string]any{}
	var unknown []string
	if s.With.Kind != yaml.MappingNode {
		return known, nil
	}
	for i := 0; i+1 < len(s.With.Content); i += 2 {
		k := s.With.Content[i]
		one := *s
		one.With = yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Content: []*yaml.Node{k, s.With.Content[i+1]}}
		v, err := one.Params(probeModule{}, env)
		if err != nil {
			unknown = append(unknown, k.Value)
			continue
		}
		if m, ok := v.(*map[string]any); ok {
			known[k.Value] = (*m)[k.Value]
		}
	}
	return known, unknown
}

// misfits drops from a strict decoding error the required keys that are
// missing: those are the parameters only known at run time.
func misfits(err error) error {
	var es strictyaml.Errors
	if !errors.As(err, &es) {
		return err
	}
	var left strictyaml.Errors
	for _, e := range es {
		if !strings.HasPrefix(e.Msg, "missing required key") {
			left = append(left, e)
		}
	}
	if len(left) == 0 {
		return nil
	}
	return left
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
