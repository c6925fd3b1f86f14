// Package setimage implements the set_image module: set the image of named
// containers (and init containers) of Deployments, DaemonSets,
// StatefulSets, CronJobs and Jobs, or rewrite images by rule (e.g.
// docker.pkg.github.com/OWNER/REPO/IMAGE → ghcr.io/OWNER/IMAGE), keeping
// tags and digests. Only workloads that change appear in the plan; changes
// are previewed with a server-side dry run and applied with a
// resourceVersion precondition.
package setimage

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"nksrun/engine/imageref"
	"nksrun/engine/module"
	"nksrun/modules/kubeutil"
)

// Params are set_image's parameters.
type Params struct {
	// Kind: one workload kind; empty = Deployments, DaemonSets,
	// StatefulSets and CronJobs (a Job's pod template is immutable: the API
	// server refuses the change, so Jobs are only patched when asked for).
	Kind          string `yaml:"kind,omitempty"`
	Namespace     string `yaml:"namespace,omitempty"`
	Name          string `yaml:"name,omitempty"`
	LabelSelector string `yaml:"labelSelector,omitempty"`
	// Containers maps container (or init container) name → image.
	Containers map[string]string `yaml:"containers,omitempty"`
	// Rules rewrite every image they match (first matching rule wins).
	Rules []Rule `yaml:"rules,omitempty"`
}

// Rule rewrites the repository part of an image (tag and digest are kept).
// With Regex, From is a regular expression matched against the whole
// repository and To may use $1…; otherwise From is a prefix replaced by To.
type Rule struct {
	From  string `yaml:"from" nks:"required"`
	To    string `yaml:"to" nks:"required"`
	Regex bool   `yaml:"regex,omitempty"`
}

// Module is set_image.
type Module struct{}

// New is the registry factory.
func New() module.Module { return module.Adapt[Params](Module{}) }

var _ module.Typed[Params] = Module{}

func (Module) Scope() module.Scope { return module.ScopeCluster }

// Outputs are the keys later steps read as steps.<id>.<key>: what kubeutil.PlanEdits and ApplyEdits register.
func (Module) Outputs() []string { return append([]string(nil), kubeutil.Outputs...) }

func (Module) Validate(ps *Params) error {
	if (len(ps.Containers) == 0) == (len(ps.Rules) == 0) {
		return errors.New("give exactly one of containers or rules")
	}
	if ps.Kind != "" {
		if _, ok := kubeutil.KindByName(ps.Kind); !ok {
			return fmt.Errorf("kind %q: want Deployment, DaemonSet, StatefulSet, CronJob or Job", ps.Kind)
		}
	}
	if ps.Name != "" && ps.Kind == "" {
		return errors.New("name needs kind")
	}
	for c, img := range ps.Containers {
		if strings.TrimSpace(img) == "" {
			return fmt.Errorf("containers.%s: empty image", c)
		}
	}
	for i, r := range ps.Rules {
		if r.Regex {
			if _, err := regexp.Compile(anchor(r.From)); err != nil {
				return fmt.Errorf("rules[%d].from: %w", i, err)
			}
		}
	}
	return nil
}

func anchor(re string) string {
	if !strings.HasPrefix(re, "^") {
		re = "^" + re
	}
	if !strings.HasSuffix(re, "$") {
		re += "$"
	}
	return re
}

func (Module) Plan(ctx context.Context, t module.Target, _ string, ps *Params, _ map[string]module.ProbeResult) (module.Planned, error) {
	// Jobs' pod templates are immutable: only when asked for by kind.
	var kinds []kubeutil.Kind
	for _, k := range kubeutil.WorkloadKinds {
		if k.Kind != "Job" {
			kinds = append(kinds, k)
		}
	}
	if ps.Kind != "" {
		k, _ := kubeutil.KindByName(ps.Kind)
		kinds = []kubeutil.Kind{k}
	}
	var objs []unstructured.Unstructured
	for _, k := range kinds {
		got, err := kubeutil.List(ctx, t.Cluster, kubeutil.Selector{
			APIVersion: k.APIVersion, Kind: k.Kind, Namespace: ps.Namespace, Name: ps.Name, LabelSelector: ps.LabelSelector,
		})
		if err != nil {
			return module.Planned{}, err
		}
		objs = append(objs, got...)
	}
	return kubeutil.PlanEdits(ctx, t, objs, editFor(ps), kubeutil.Options{Verb: "set image on"})
}

func (Module) Apply(ctx context.Context, t module.Target, _ string, params *Params, p module.Planned) (module.Applied, error) {
	return kubeutil.ApplyEdits(ctx, t, p, editFor(params), "set image on")
}

func editFor(ps *Params) kubeutil.Edit {
	return func(o *unstructured.Unstructured) (*kubeutil.Patch, error) {
		cs, err := kubeutil.Containers(o)
		if err != nil {
			return nil, err
		}
		var ops []kubeutil.Op
		var notes []string
		for _, c := range cs {
			name, _ := c.Obj["name"].(string)
			old, _ := c.Obj["image"].(string)
			var img string
			if len(ps.Containers) > 0 {
				img = ps.Containers[name]
			} else {
				img = Rewrite(old, ps.Rules)
			}
			if img == "" || img == old {
				continue
			}
			ops = append(ops, kubeutil.Op{Op: "replace", Path: c.Path + "/image", Value: img})
			notes = append(notes, fmt.Sprintf("%s: %s → %s", name, old, img))
		}
		sort.Strings(notes)
		return kubeutil.JSONOps(strings.Join(notes, ", "), ops)
	}
}

// Rewrite applies the first matching rule to image's repository, keeping
// its tag and digest; it returns image unchanged when no rule matches.
func Rewrite(image string, rules []Rule) string {
	repo, tag, digest := imageref.Split(image)
	for _, r := range rules {
		var out string
		if r.Regex {
			re, err := regexp.Compile(anchor(r.From))
			if err != nil || !re.MatchString(repo) {
				continue
			}
			out = re.ReplaceAllString(repo, r.To)
		} else {
			if !strings.HasPrefix(repo, r.From) {
				continue
			}
			out = r.To + strings.TrimPrefix(repo, r.From)
		}
		if tag != "" {
			out += ":" + tag
		}
		if digest != "" {
			out += "@" + digest
		}
		return out
	}
	return image
}
