// Package rolloutrestart implements the rollout_restart module, the
// equivalent of `kubectl rollout restart` for DaemonSets, Deployments and
// StatefulSets: it sets the pod template annotation
// kubectl.kubernetes.io/restartedAt, and optionally waits for the rollout
// (observedGeneration ≥ generation, updated and available counts) with a
// timeout.
//
// A restart always "changes" something, so a step plans a change whenever
// it runs: gate it with `when:` (e.g. `steps.patch.changed`).
package rolloutrestart

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"nksrun/engine/module"
	"nksrun/modules/kubeutil"
)

// Annotation is the pod template annotation kubectl sets.
const Annotation = "kubectl.kubernetes.io/restartedAt"

// Params are rollout_restart's parameters.
type Params struct {
	Kind          string    `yaml:"kind" nks:"required"` // DaemonSet | Deployment | StatefulSet
	Namespace     string    `yaml:"namespace,omitempty"`
	Name          string    `yaml:"name,omitempty"`
	Names         *[]string `yaml:"names,omitempty"`
	LabelSelector string    `yaml:"labelSelector,omitempty"`
	Wait          bool      `yaml:"wait,omitempty"`
	Timeout       string    `yaml:"timeout,omitempty"` // Go duration, default 5m
}

// Module is rollout_restart.
type Module struct {
	// Now and Poll are for tests.
	Now  func() time.Time
	Poll time.Duration
}

// New is the registry factory.
func New() module.Module { return module.Adapt[Params](&Module{}) }

var _ module.Typed[Params] = (*Module)(nil)

func (*Module) Scope() module.Scope { return module.ScopeCluster }

// Outputs are the keys later steps read as steps.<id>.<key>: what kubeutil.PlanEdits and ApplyEdits register.
func (*Module) Outputs() []string { return append([]string(nil), kubeutil.Outputs...) }

func (*Module) Validate(ps *Params) error {
	switch ps.Kind {
	case "DaemonSet", "Deployment", "StatefulSet":
	default:
		return fmt.Errorf("kind %q: want DaemonSet, Deployment or StatefulSet", ps.Kind)
	}
	if ps.Timeout != "" {
		if d, err := time.ParseDuration(ps.Timeout); err != nil || d <= 0 {
			return fmt.Errorf("timeout %q: want a positive duration like 5m", ps.Timeout)
		}
	}
	return nil
}

func (m *Module) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

func (m *Module) Plan(ctx context.Context, t module.Target, _ string, ps *Params, _ map[string]module.ProbeResult) (module.Planned, error) {
	sel := kubeutil.Selector{APIVersion: "apps/v1", Kind: ps.Kind, Namespace: ps.Namespace, Name: ps.Name, LabelSelector: ps.LabelSelector}
	if ps.Names != nil {
		sel.ByNames, sel.Names = true, *ps.Names
	}
	objs, err := kubeutil.List(ctx, t.Cluster, sel)
	if err != nil {
		return module.Planned{}, err
	}
	now := t.Now
	if now.IsZero() {
		now = m.now()
	}
	at := now.UTC().Format(time.RFC3339)
	edit := func(*unstructured.Unstructured) (*kubeutil.Patch, error) {
		b, _ := json.Marshal(map[string]any{"spec": map[string]any{"template": map[string]any{"metadata": map[string]any{"annotations": map[string]any{Annotation: at}}}}})
		return &kubeutil.Patch{Type: kubeutil.MergePatch, Body: b, What: "restartedAt " + at}, nil
	}
	p, err := kubeutil.PlanEdits(ctx, t, objs, edit, kubeutil.Options{Verb: "restart", NoPrecondition: true})
	if err != nil {
		return p, err
	}
	if p.Action == module.Change {
		p.Reason = "rollout restart (pods are replaced one by one as the update strategy says)"
		if ps.Wait {
			p.Summary += "; wait for the rollout"
		}
	}
	return p, nil
}

func (m *Module) Apply(ctx context.Context, t module.Target, _ string, ps *Params, p module.Planned) (module.Applied, error) {
	applied, err := kubeutil.ApplyEdits(ctx, t, p, nil, "restart")
	if err != nil || !ps.Wait {
		return applied, err
	}
	var data kubeutil.Data
	if err := json.Unmarshal(p.Data, &data); err != nil {
		return applied, err
	}
	timeout := 5 * time.Minute
	if ps.Timeout != "" {
		timeout, _ = time.ParseDuration(ps.Timeout)
	}
	if err := m.wait(ctx, t, data.Objects, timeout); err != nil {
		return applied, err
	}
	applied.Summary += ", rolled out"
	return applied, nil
}

func (m *Module) wait(ctx context.Context, t module.Target, objs []kubeutil.ObjectChange, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	poll := m.Poll
	if poll == 0 {
		poll = time.Second
	}
	pending := append([]kubeutil.ObjectChange(nil), objs...)
	last := map[string]string{}
	for {
		var still []kubeutil.ObjectChange
		for _, oc := range pending {
			ri, err := t.Cluster.Resource(oc.APIVersion, oc.Kind, oc.Namespace)
			if err != nil {
				return err
			}
			obj, err := ri.Get(ctx, oc.Name, metav1.GetOptions{})
			if err != nil {
				if ctx.Err() != nil {
					break
				}
				return fmt.Errorf("%s %s/%s: %w", oc.Kind, oc.Namespace, oc.Name, err)
			}
			done, why := RolledOut(obj)
			if !done {
				key := oc.Kind + " " + oc.Namespace + "/" + oc.Name
				if last[key] != why && t.Log != nil {
					t.Log("waiting for %s: %s", key, why)
				}
				last[key] = why
				still = append(still, oc)
			}
		}
		if len(still) == 0 {
			return nil
		}
		pending = still
		select {
		case <-ctx.Done():
			var msgs []string
			for _, oc := range pending {
				key := oc.Kind + " " + oc.Namespace + "/" + oc.Name
				msgs = append(msgs, key+": "+last[key])
			}
			return fmt.Errorf("rollout not finished after %s: %s", timeout, strings.Join(msgs, "; "))
		case <-time.After(poll):
		}
	}
}

func num(o *unstructured.Unstructured, def int64, path ...string) int64 {
	v, found, _ := unstructured.NestedFieldNoCopy(o.Object, path...)
	if !found {
		return def
	}
	switch n := v.(type) {
	case int64:
		return n
	case float64:
		return int64(n)
	case int:
		return int64(n)
	}
	return def
}

// RolledOut says whether a workload's rollout is complete, and if not why.
func RolledOut(o *unstructured.Unstructured) (bool, string) {
	gen, obs := o.GetGeneration(), num(o, 0, "status", "observedGeneration")
	if obs < gen {
		return false, fmt.Sprintf("observedGeneration %d < generation %d", obs, gen)
	}
	switch o.GetKind() {
	case "Deployment":
		want := num(o, 1, "spec", "replicas")
		upd, total, avail := num(o, 0, "status", "updatedReplicas"), num(o, 0, "status", "replicas"), num(o, 0, "status", "availableReplicas")
		switch {
		case upd < want:
			return false, fmt.Sprintf("%d of %d replicas updated", upd, want)
		case total > upd:
			return false, fmt.Sprintf("%d old replicas pending termination", total-upd)
		case avail < upd:
			return false, fmt.Sprintf("%d of %d updated replicas available", avail, upd)
		}
	case "DaemonSet":
		want := num(o, 0, "status", "desiredNumberScheduled")
		upd, avail := num(o, 0, "status", "updatedNumberScheduled"), num(o, 0, "status", "numberAvailable")
		switch {
		case upd < want:
			return false, fmt.Sprintf("%d of %d pods updated", upd, want)
		case avail < want:
			return false, fmt.Sprintf("%d of %d pods available", avail, want)
		}
	case "StatefulSet":
		want := num(o, 1, "spec", "replicas")
		upd, ready := num(o, 0, "status", "updatedReplicas"), num(o, 0, "status", "readyReplicas")
		cur, _, _ := unstructured.NestedString(o.Object, "status", "currentRevision")
		next, _, _ := unstructured.NestedString(o.Object, "status", "updateRevision")
		switch {
		case upd < want:
			return false, fmt.Sprintf("%d of %d pods updated", upd, want)
		case ready < want:
			return false, fmt.Sprintf("%d of %d pods ready", ready, want)
		case cur != "" && next != "" && cur != next:
			return false, "current revision is not the update revision yet"
		}
	default:
		return false, errors.New("unsupported kind " + o.GetKind()).Error()
	}
	return true, ""
}
