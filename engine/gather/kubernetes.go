package gather

import (
	"context"
	"fmt"
	"sort"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"nksrun/engine/module"
	"nksrun/engine/runbook"
)

// Kubernetes reads a runbook's declared Kubernetes facts: a list per fact,
// never a get per object. c may be nil (no cluster configured).
func Kubernetes(ctx context.Context, c *module.Cluster, rb *runbook.Runbook) (map[string]any, error) {
	out := map[string]any{}
	for _, name := range sortedKeys(rb.Facts) {
		f := rb.Facts[name]
		if f.K8s == nil {
			continue
		}
		if c == nil {
			return nil, fmt.Errorf("fact %s reads %s objects but no cluster is configured (--kubeconfig)", name, f.K8s.Kind)
		}
		v, err := K8sLookup(ctx, c, f.K8s)
		if err != nil {
			return nil, fmt.Errorf("fact %s: %w", name, err)
		}
		out[name] = v
	}
	return out, nil
}

// K8sLookup gets one object (Name set; nil when absent) or lists objects.
// Secrets are refused: their values would reach expressions and output.
func K8sLookup(ctx context.Context, c *module.Cluster, f *runbook.K8sFact) (any, error) {
	if f.Kind == "Secret" {
		return nil, fmt.Errorf("Secrets cannot be read as facts (their values would reach expressions and output); modules read them and redact")
	}
	ri, err := c.Resource(f.APIVersion, f.Kind, f.Namespace)
	if err != nil {
		return nil, err
	}
	var items []unstructured.Unstructured
	if f.Name != "" {
		obj, err := ri.Get(ctx, f.Name, metav1.GetOptions{})
		if err != nil {
			if apierrors.IsNotFound(err) {
				return nil, nil
			}
			return nil, err
		}
		items = []unstructured.Unstructured{*obj}
	} else {
		list, err := ri.List(ctx, metav1.ListOptions{LabelSelector: f.LabelSelector, FieldSelector: f.FieldSelector})
		if err != nil {
			return nil, err
		}
		items = list.Items
	}
	if f.Events {
		if err := attachEvents(ctx, c, f.Namespace, items); err != nil {
			return nil, err
		}
	}
	objs := make([]any, len(items))
	for i := range items {
		objs[i] = items[i].Object
	}
	if f.Name != "" {
		return objs[0], nil
	}
	return objs, nil
}

// attachEvents lists events once and adds each object's messages as `_events`.
func attachEvents(ctx context.Context, c *module.Cluster, namespace string, items []unstructured.Unstructured) error {
	evs, err := c.Clientset.CoreV1().Events(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("listing events: %w", err)
	}
	byUID := map[string][]any{}
	sort.Slice(evs.Items, func(i, j int) bool { return evs.Items[i].LastTimestamp.Before(&evs.Items[j].LastTimestamp) })
	for _, ev := range evs.Items {
		uid := string(ev.InvolvedObject.UID)
		key := uid
		if key == "" {
			key = ev.InvolvedObject.Namespace + "/" + ev.InvolvedObject.Name
		}
		byUID[key] = append(byUID[key], ev.Reason+": "+ev.Message)
	}
	for i := range items {
		msgs := byUID[string(items[i].GetUID())]
		msgs = append(msgs, byUID[items[i].GetNamespace()+"/"+items[i].GetName()]...)
		if msgs == nil {
			msgs = []any{}
		}
		items[i].Object["_events"] = msgs
	}
	return nil
}
