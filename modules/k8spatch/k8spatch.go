// Package k8spatch implements the k8s_patch module: patch zero, one or many
// Kubernetes objects of any kind (JSON patch with test guards, merge,
// strategic merge), or use one of the helpers for the guide's real cases:
// set an option in an INI document inside a Secret/ConfigMap key, set/unset
// container env vars on workload pod templates, remove finalizers where
// present. Plans are previewed with a server-side dry run; a patch that
// changes nothing is a no-op; apply carries a resourceVersion precondition.
package k8spatch

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"nksrun/engine/module"
	"nksrun/modules/kubeutil"
)

// Params are k8s_patch's parameters.
type Params struct {
	APIVersion    string    `yaml:"apiVersion" nks:"required"`
	Kind          string    `yaml:"kind" nks:"required"`
	Namespace     string    `yaml:"namespace,omitempty"`
	Name          string    `yaml:"name,omitempty"`
	Names         *[]string `yaml:"names,omitempty"` // set (even empty): only these names
	LabelSelector string    `yaml:"labelSelector,omitempty"`

	// A raw patch: Type json (Patch is a list of RFC 6902 ops; `test` ops
	// are guards: when one fails the object is left alone), merge or
	// strategic (Patch is an object).
	Type  string `yaml:"type,omitempty"`
	Patch any    `yaml:"patch,omitempty"`

	INI              *INIEdit  `yaml:"ini,omitempty"`
	Env              []EnvEdit `yaml:"env,omitempty"`
	RemoveFinalizers bool      `yaml:"remove_finalizers,omitempty"`
}

// INIEdit edits the INI document in data[Key] of a Secret or ConfigMap.
type INIEdit struct {
	Key     string            `yaml:"key" nks:"required"`
	Section string            `yaml:"section" nks:"required"`
	Set     map[string]string `yaml:"set,omitempty"`
	Unset   []string          `yaml:"unset,omitempty"`
	// Bool compares the set values as gcfg bools (True, yes, 1 … all mean
	// true), so an option already set in another spelling is left alone.
	Bool bool `yaml:"bool,omitempty"`
}

// EnvEdit sets/unsets env vars of one container ("*" = every container).
type EnvEdit struct {
	Container string            `yaml:"container" nks:"required"`
	Set       map[string]string `yaml:"set,omitempty"`
	Unset     []string          `yaml:"unset,omitempty"`
}

// Module is k8s_patch.
type Module struct{}

// New is the registry factory.
func New() module.Module { return module.Adapt[Params](Module{}) }

var _ module.Typed[Params] = Module{}

func (Module) Name() string        { return "k8s_patch" }
func (Module) Scope() module.Scope { return module.ScopeCluster }

// Outputs are the keys later steps read as steps.<id>.<key>: what kubeutil.PlanEdits and ApplyEdits register.
func (Module) Outputs() []string { return append([]string(nil), kubeutil.Outputs...) }

func (Module) Validate(ps *Params) error {
	if ps.APIVersion == "" || ps.Kind == "" {
		return errors.New("apiVersion and kind are required")
	}
	n := 0
	if ps.Patch != nil {
		n++
		if _, err := kubeutil.PatchType(ps.Type); err != nil {
			return err
		}
		if ps.Type == kubeutil.JSONPatch {
			if _, ok := ps.Patch.([]any); !ok {
				return errors.New("a json patch is a list of operations")
			}
		} else if _, ok := ps.Patch.(map[string]any); !ok {
			return fmt.Errorf("a %s patch is a mapping", ps.Type)
		}
	} else if ps.Type != "" {
		return errors.New("type is set but patch is missing")
	}
	if ps.INI != nil {
		n++
		if ps.Kind != "Secret" && ps.Kind != "ConfigMap" {
			return fmt.Errorf("ini edits Secrets and ConfigMaps, not %s", ps.Kind)
		}
		if len(ps.INI.Set) == 0 && len(ps.INI.Unset) == 0 {
			return errors.New("ini: set or unset something")
		}
	}
	if len(ps.Env) > 0 {
		n++
		if _, err := kubeutil.PodSpecPath(ps.Kind); err != nil {
			return fmt.Errorf("env: %w", err)
		}
		for _, e := range ps.Env {
			if e.Container == "" {
				return errors.New("env: container is required")
			}
		}
	}
	if ps.RemoveFinalizers {
		n++
	}
	if n != 1 {
		return errors.New("give exactly one of patch, ini, env, remove_finalizers")
	}
	return nil
}

func selector(ps *Params) kubeutil.Selector {
	s := kubeutil.Selector{APIVersion: ps.APIVersion, Kind: ps.Kind, Namespace: ps.Namespace, Name: ps.Name, LabelSelector: ps.LabelSelector}
	if ps.Names != nil {
		s.ByNames = true
		s.Names = *ps.Names
	}
	return s
}

func (m Module) Plan(ctx context.Context, t module.Target, _ string, ps *Params, _ map[string]module.ProbeResult) (module.Planned, error) {
	objs, err := kubeutil.List(ctx, t.Cluster, selector(ps))
	if err != nil {
		return module.Planned{}, err
	}
	return kubeutil.PlanEdits(ctx, t, objs, EditFor(ps), kubeutil.Options{Verb: "patch", GuardNoOp: ps.Patch != nil})
}

func (m Module) Apply(ctx context.Context, t module.Target, _ string, params *Params, p module.Planned) (module.Applied, error) {
	return kubeutil.ApplyEdits(ctx, t, p, EditFor(params), "patch")
}

// EditFor is the per-object edit the params describe.
func EditFor(ps *Params) kubeutil.Edit {
	switch {
	case ps.Patch != nil:
		return func(*unstructured.Unstructured) (*kubeutil.Patch, error) {
			b, err := json.Marshal(ps.Patch)
			if err != nil {
				return nil, err
			}
			return &kubeutil.Patch{Type: ps.Type, Body: b, What: ps.Type + " patch"}, nil
		}
	case ps.INI != nil:
		return func(o *unstructured.Unstructured) (*kubeutil.Patch, error) { return INIPatch(o, *ps.INI) }
	case len(ps.Env) > 0:
		return func(o *unstructured.Unstructured) (*kubeutil.Patch, error) { return EnvPatch(o, ps.Env) }
	default:
		return FinalizersPatch
	}
}

// FinalizersPatch removes metadata.finalizers, only where present, guarded
// by a test of the current list (the guide's bare `remove` fails where the
// field is absent). Finalizers that Kubernetes' own controllers own are
// kept (KubernetesOwned): removing service.kubernetes.io/load-balancer-cleanup,
// say, leaks the cloud load balancer when the Service is deleted, and the
// controller adds it back, so the plan would never settle.
func FinalizersPatch(o *unstructured.Unstructured) (*kubeutil.Patch, error) {
	fs := o.GetFinalizers()
	var keep, drop []string
	for _, f := range fs {
		if KubernetesOwned(f) {
			keep = append(keep, f)
		} else {
			drop = append(drop, f)
		}
	}
	if len(drop) == 0 {
		return nil, nil
	}
	what := "remove finalizers " + strings.Join(drop, ", ")
	last := kubeutil.Op{Op: "remove", Path: "/metadata/finalizers"}
	if len(keep) > 0 {
		what += " (keep " + strings.Join(keep, ", ") + ": owned by Kubernetes)"
		last = kubeutil.Op{Op: "replace", Path: "/metadata/finalizers", Value: keep}
	}
	return kubeutil.JSONOps(what, []kubeutil.Op{{Op: "test", Path: "/metadata/finalizers", Value: fs}, last})
}

// kubernetesFinalizer matches finalizers in Kubernetes' own domains
// (kubernetes.io, k8s.io and their subdomains, e.g.
// service.kubernetes.io/load-balancer-cleanup, kubernetes.io/pvc-protection).
var kubernetesFinalizer = regexp.MustCompile(`^([a-z0-9-]+\.)*(kubernetes\.io|k8s\.io)/`)

// KubernetesOwned reports whether a finalizer belongs to Kubernetes' own
// controllers (the garbage collector's orphan and foregroundDeletion, the
// namespace controller's kubernetes, and everything in the Kubernetes
// domains). nksrun never removes those.
func KubernetesOwned(f string) bool {
	switch f {
	case "orphan", "foregroundDeletion", "kubernetes":
		return true
	}
	return kubernetesFinalizer.MatchString(f)
}

// INIPatch edits the INI document in data[e.Key] of a Secret or ConfigMap.
// The description never holds values of a Secret.
func INIPatch(o *unstructured.Unstructured, e INIEdit) (*kubeutil.Patch, error) {
	secret := o.GetKind() == "Secret"
	data, _, _ := unstructured.NestedMap(o.Object, "data")
	raw, present := data[e.Key].(string)
	doc := raw
	if secret && present {
		b, err := base64.StdEncoding.DecodeString(raw)
		if err != nil {
			return nil, fmt.Errorf("data[%s] is not base64: %w", e.Key, err)
		}
		doc = string(b)
	}
	var equal ValueEqual
	if e.Bool {
		equal = BoolEqual
	}
	out, notes := SetINIWith(doc, e.Section, e.Set, equal)
	out, more := UnsetINI(out, e.Section, e.Unset)
	notes = append(notes, more...)
	if out == doc {
		return nil, nil
	}
	val := out
	if secret {
		val = base64.StdEncoding.EncodeToString([]byte(out))
	}
	var ops []kubeutil.Op
	switch {
	case data == nil:
		ops = []kubeutil.Op{{Op: "add", Path: "/data", Value: map[string]any{e.Key: val}}}
	case present:
		ops = []kubeutil.Op{{Op: "replace", Path: "/data/" + kubeutil.Pointer(e.Key), Value: val}}
	default:
		ops = []kubeutil.Op{{Op: "add", Path: "/data/" + kubeutil.Pointer(e.Key), Value: val}}
	}
	return kubeutil.JSONOps(fmt.Sprintf("key %s, section %s: %s", e.Key, e.Section, strings.Join(notes, ", ")), ops)
}

// EnvPatch sets/unsets env vars of containers (and init containers) of a
// workload's pod template. A var already set to the value is left alone;
// one set from valueFrom or to another value is replaced.
func EnvPatch(o *unstructured.Unstructured, edits []EnvEdit) (*kubeutil.Patch, error) {
	cs, err := kubeutil.Containers(o)
	if err != nil {
		return nil, err
	}
	var ops, removes []kubeutil.Op
	var notes []string
	matched := map[string]bool{}
	for _, c := range cs {
		name, _ := c.Obj["name"].(string)
		env, _ := c.Obj["env"].([]any)
		index := map[string]int{}
		for i, v := range env {
			if m, ok := v.(map[string]any); ok {
				if n, ok := m["name"].(string); ok {
					if _, dup := index[n]; !dup {
						index[n] = i
					}
				}
			}
		}
		var adds []any
		var removeIdx []int
		for _, e := range edits {
			if e.Container != "*" && e.Container != name {
				continue
			}
			matched[e.Container] = true
			keys := make([]string, 0, len(e.Set))
			for k := range e.Set {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				want := map[string]any{"name": k, "value": e.Set[k]}
				if i, ok := index[k]; ok {
					cur := env[i].(map[string]any)
					if v, ok := cur["value"].(string); ok && v == e.Set[k] && cur["valueFrom"] == nil {
						continue
					}
					ops = append(ops, kubeutil.Op{Op: "replace", Path: fmt.Sprintf("%s/env/%d", c.Path, i), Value: want})
					notes = append(notes, fmt.Sprintf("%s: set %s", name, k))
					continue
				}
				adds = append(adds, want)
				index[k] = -1
				notes = append(notes, fmt.Sprintf("%s: add %s", name, k))
			}
			for _, k := range e.Unset {
				for i, v := range env {
					if m, ok := v.(map[string]any); ok && m["name"] == k {
						removeIdx = append(removeIdx, i)
						notes = append(notes, fmt.Sprintf("%s: unset %s", name, k))
					}
				}
			}
		}
		if len(adds) > 0 {
			if env == nil {
				ops = append(ops, kubeutil.Op{Op: "add", Path: c.Path + "/env", Value: adds})
			} else {
				for _, a := range adds {
					ops = append(ops, kubeutil.Op{Op: "add", Path: c.Path + "/env/-", Value: a})
				}
			}
		}
		sort.Sort(sort.Reverse(sort.IntSlice(removeIdx)))
		for i, idx := range removeIdx {
			if i > 0 && removeIdx[i-1] == idx {
				continue
			}
			removes = append(removes, kubeutil.Op{Op: "remove", Path: fmt.Sprintf("%s/env/%d", c.Path, idx)})
		}
	}
	// Removals last, highest index first, so earlier indices stay valid.
	ops = append(ops, removes...)
	return kubeutil.JSONOps("env "+strings.Join(notes, ", "), ops)
}
