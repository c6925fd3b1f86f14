package gather

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
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
// Secrets come without their values (see secretMetadata): expressions see
// that a Secret exists, its type, labels and when it last changed, never
// what it holds; modules read values and redact them.
func K8sLookup(ctx context.Context, c *module.Cluster, f *runbook.K8sFact) (any, error) {
	ri, err := c.Resource(f.APIVersion, f.Kind, f.Namespace)
	if err != nil {
		if f.Optional && meta.IsNoMatchError(err) {
			if f.Name != "" {
				return nil, nil
			}
			return []any{}, nil
		}
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
			if f.Optional && apierrors.IsForbidden(err) {
				// Unknown, not "none": nil (not []) lets the runbook say
				// it cannot tell.
				return nil, nil
			}
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
		if f.APIVersion == "v1" && f.Kind == "Secret" {
			secretMetadata(&items[i])
		}
		objs[i] = items[i].Object
	}
	if f.Name != "" {
		return objs[0], nil
	}
	return objs, nil
}

// secretMetadata strips a Secret down to what is not secret: metadata
// (without the last-applied annotation, which holds the data), type, and the
// names of its keys as `_keys`. managedFields stay: they name fields, never
// values, and their times say when the Secret last changed.
func secretMetadata(u *unstructured.Unstructured) {
	u.Object["_registries"] = registryHosts(u)
	var keys []any
	for _, field := range []string{"data", "stringData"} {
		if m, ok := u.Object[field].(map[string]any); ok {
			for k := range m {
				keys = append(keys, k)
			}
		}
		delete(u.Object, field)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].(string) < keys[j].(string) })
	if keys == nil {
		keys = []any{}
	}
	u.Object["_keys"] = keys
	if ann := u.GetAnnotations(); ann != nil {
		delete(ann, "kubectl.kubernetes.io/last-applied-configuration")
		u.SetAnnotations(ann)
	}
}

// registryHosts lists the registry hosts a pull Secret
// (kubernetes.io/dockerconfigjson or dockercfg) has credentials for, as
// "ghcr.io" / "docker.io" (scheme and path dropped, Docker Hub's
// index.docker.io spelled docker.io): host names are not secret, and they
// tell a runbook whether a workload can pull from a registry.
func registryHosts(u *unstructured.Unstructured) []any {
	key := map[string]string{"kubernetes.io/dockerconfigjson": ".dockerconfigjson", "kubernetes.io/dockercfg": ".dockercfg"}[fmt.Sprint(u.Object["type"])]
	out := []any{}
	data, _ := u.Object["data"].(map[string]any)
	raw, _ := data[key].(string)
	if raw == "" {
		return out
	}
	b, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		return out
	}
	var cfg map[string]json.RawMessage
	if json.Unmarshal(b, &cfg) != nil {
		return out
	}
	if key == ".dockerconfigjson" {
		cfg = nil
		var wrapped struct {
			Auths map[string]json.RawMessage `json:"auths"`
		}
		if json.Unmarshal(b, &wrapped) != nil {
			return out
		}
		cfg = wrapped.Auths
	}
	seen := map[string]bool{}
	for h := range cfg {
		h = strings.TrimPrefix(strings.TrimPrefix(h, "https://"), "http://")
		h, _, _ = strings.Cut(h, "/")
		if h == "index.docker.io" || h == "registry-1.docker.io" {
			h = "docker.io"
		}
		if h != "" && !seen[h] {
			seen[h] = true
			out = append(out, h)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].(string) < out[j].(string) })
	return out
}

// attachEvents lists events once and adds each object's messages as
// `_events` ("Reason: message", every type) and the Warning ones alone as
// `_warnings` (a Normal "Pulled"/"Pulling" event is not a failure).
func attachEvents(ctx context.Context, c *module.Cluster, namespace string, items []unstructured.Unstructured) error {
	evs, err := c.Clientset.CoreV1().Events(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("listing events: %w", err)
	}
	byUID, warn := map[string][]any{}, map[string][]any{}
	sort.Slice(evs.Items, func(i, j int) bool { return evs.Items[i].LastTimestamp.Before(&evs.Items[j].LastTimestamp) })
	for _, ev := range evs.Items {
		uid := string(ev.InvolvedObject.UID)
		key := uid
		if key == "" {
			key = ev.InvolvedObject.Namespace + "/" + ev.InvolvedObject.Name
		}
		byUID[key] = append(byUID[key], ev.Reason+": "+ev.Message)
		if ev.Type == "Warning" {
			warn[key] = append(warn[key], ev.Reason+": "+ev.Message)
		}
	}
	for i := range items {
		msgs := byUID[string(items[i].GetUID())]
		msgs = append(msgs, byUID[items[i].GetNamespace()+"/"+items[i].GetName()]...)
		if msgs == nil {
			msgs = []any{}
		}
		items[i].Object["_events"] = msgs
		w := append(append([]any{}, warn[string(items[i].GetUID())]...), warn[items[i].GetNamespace()+"/"+items[i].GetName()]...)
		if w == nil {
			w = []any{}
		}
		items[i].Object["_warnings"] = w
	}
	return nil
}
