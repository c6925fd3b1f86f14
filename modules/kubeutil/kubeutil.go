// Package kubeutil is what the cluster modules (k8s_patch, set_image,
// rollout_restart) share: finding objects, previewing a patch with a
// server-side dry run, showing a redacted object diff, and applying the
// patch with a resourceVersion precondition so that an object changed
// between plan and apply is reported as a conflict, never overwritten.
package kubeutil

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strings"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"nksrun/engine/module"
	"nksrun/modules/modutil"
)

// Patch types, as runbooks spell them.
const (
	JSONPatch      = "json"
	MergePatch     = "merge"
	StrategicPatch = "strategic"
)

// PatchType maps a runbook patch type to the API's.
func PatchType(t string) (types.PatchType, error) {
	switch t {
	case JSONPatch:
		return types.JSONPatchType, nil
	case MergePatch:
		return types.MergePatchType, nil
	case StrategicPatch:
		return types.StrategicMergePatchType, nil
	}
	return "", fmt.Errorf("patch type %q: want json, merge or strategic", t)
}

// Selector picks objects of one kind.
type Selector struct {
	APIVersion string
	Kind       string
	Namespace  string   // "" = all namespaces
	Name       string   // one object
	Names      []string // several objects (by name, in Namespace)
	// ByNames: only Names (an empty Names then selects nothing, never all).
	ByNames       bool
	LabelSelector string
}

// List finds the selected objects with one list call (or one get for a
// single name). Absent names are not an error: they are simply not there.
func List(ctx context.Context, c *module.Cluster, s Selector) ([]unstructured.Unstructured, error) {
	ri, err := c.Resource(s.APIVersion, s.Kind, s.Namespace)
	if err != nil {
		return nil, err
	}
	if s.ByNames && len(s.Names) == 0 && s.Name == "" {
		return nil, nil
	}
	if s.Name != "" && len(s.Names) == 0 {
		obj, err := ri.Get(ctx, s.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		return []unstructured.Unstructured{*obj}, nil
	}
	list, err := ri.List(ctx, metav1.ListOptions{LabelSelector: s.LabelSelector})
	if err != nil {
		return nil, err
	}
	want := map[string]bool{}
	for _, n := range s.Names {
		want[n] = true
	}
	if s.Name != "" {
		want[s.Name] = true
	}
	var out []unstructured.Unstructured
	for _, o := range list.Items {
		if len(want) > 0 && !want[o.GetName()] {
			continue
		}
		// A list of a kind returns items without apiVersion/kind set on
		// some paths; keep them for diffs and plans.
		if o.GetKind() == "" {
			o.SetAPIVersion(s.APIVersion)
			o.SetKind(s.Kind)
		}
		out = append(out, o)
	}
	sort.Slice(out, func(i, j int) bool { return ObjectName(&out[i]) < ObjectName(&out[j]) })
	return out, nil
}

// ObjectName is "Kind ns/name" (or "Kind name" for cluster-scoped objects).
func ObjectName(o *unstructured.Unstructured) string {
	if o.GetNamespace() == "" {
		return o.GetKind() + " " + o.GetName()
	}
	return o.GetKind() + " " + o.GetNamespace() + "/" + o.GetName()
}

// Patch is what an edit wants sent for one object.
type Patch struct {
	Type string          `json:"type"` // json | merge | strategic
	Body json.RawMessage `json:"body,omitempty"`
	// What says, in a few words and without secret values, what changes.
	What string `json:"what,omitempty"`
}

// Op is one RFC 6902 operation.
type Op struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

// MarshalJSON keeps an explicit null/empty value for add/replace/test.
func (o Op) MarshalJSON() ([]byte, error) {
	m := map[string]any{"op": o.Op, "path": o.Path}
	if o.Op == "add" || o.Op == "replace" || o.Op == "test" {
		m["value"] = o.Value
	}
	return json.Marshal(m)
}

// JSONOps makes a JSON patch; nil when ops is empty (nothing to change).
func JSONOps(what string, ops []Op) (*Patch, error) {
	if len(ops) == 0 {
		return nil, nil
	}
	b, err := json.Marshal(ops)
	if err != nil {
		return nil, err
	}
	return &Patch{Type: JSONPatch, Body: b, What: what}, nil
}

// Pointer escapes one JSON-pointer token.
func Pointer(token string) string {
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(token)
}

// Edit computes the patch for one live object; nil means nothing to change.
// It must be deterministic: Apply recomputes it for Secrets (whose patches
// carry values that must not be stored in plans).
type Edit func(obj *unstructured.Unstructured) (*Patch, error)

// ObjectChange is one object's part of a plan.
type ObjectChange struct {
	APIVersion      string `json:"apiVersion"`
	Kind            string `json:"kind"`
	Namespace       string `json:"namespace,omitempty"`
	Name            string `json:"name"`
	UID             string `json:"uid,omitempty"`
	ResourceVersion string `json:"resourceVersion"`
	// Patch is what apply sends. For Secrets it is left out (it holds
	// values) and apply recomputes it from the object, which it first
	// checks is still at ResourceVersion.
	Patch     *Patch `json:"patch,omitempty"`
	Recompute bool   `json:"recompute,omitempty"`
	What      string `json:"what,omitempty"`
}

// Data is the Planned.Data of the patching modules.
type Data struct {
	Objects []ObjectChange `json:"objects"`
	// NoPrecondition applies without the resourceVersion guard (rollout
	// restart: it only sets its own annotation, it cannot overwrite anything).
	NoPrecondition bool `json:"noPrecondition,omitempty"`
}

// Options tune PlanEdits/ApplyEdits.
type Options struct {
	// Verb is used in summaries ("patch", "set image on", "restart").
	Verb string
	// NoPrecondition: see Data.NoPrecondition.
	NoPrecondition bool
	// GuardNoOp: a JSON patch whose test op fails is "nothing to do"
	// (a guarded user patch), not an error.
	GuardNoOp bool
}

// IsSecret reports whether obj is a core Secret.
func IsSecret(apiVersion, kind string) bool { return apiVersion == "v1" && kind == "Secret" }

// RegisterSecretValues registers every value of a Secret object (plain and
// therefore, through the engine, base64) so that no output shows it.
func RegisterSecretValues(t module.Target, obj map[string]any) {
	if t.Secrets == nil || obj == nil {
		return
	}
	reg := func(v string) {
		if strings.Contains(strings.TrimSpace(v), "\n") {
			RegisterDocument(t.Secrets, v)
		} else {
			t.Secrets.AddSecret(v)
		}
	}
	if data, ok := obj["data"].(map[string]any); ok {
		for _, v := range data {
			if s, ok := v.(string); ok {
				Whole(t.Secrets, s)
				if dec, err := base64.StdEncoding.DecodeString(s); err == nil {
					reg(string(dec))
				}
			}
		}
	}
	if data, ok := obj["stringData"].(map[string]any); ok {
		for _, v := range data {
			if s, ok := v.(string); ok {
				reg(s)
			}
		}
	}
	if md, ok := obj["metadata"].(map[string]any); ok {
		if ann, ok := md["annotations"].(map[string]any); ok {
			if s, ok := ann["kubectl.kubernetes.io/last-applied-configuration"].(string); ok {
				Whole(t.Secrets, s)
			}
		}
	}
}

// Whole registers v without splitting it into lines, when the sink can.
func Whole(sink module.SecretSink, v string) {
	if w, ok := sink.(interface{ AddSecretWhole(string) }); ok {
		w.AddSecretWhole(v)
		return
	}
	sink.AddSecret(v)
}

var (
	kvLine       = regexp.MustCompile(`^\s*([A-Za-z0-9_.\- ]{1,63}?)\s*[=:]\s*(.*?)\s*$`)
	secretishKey = regexp.MustCompile(`(?i)pass|secret|token|key|cred|auth|cert`)
	plainValue   = regexp.MustCompile(`(?i)^(true|false|yes|no|on|off|[0-9.]+|v[0-9.]+)$`)
)

// RegisterDocument registers a multi-line secret (an INI cloud-config, a
// config file) so that neither it nor its secret parts can be printed,
// without redacting its public structure ("[BlockStorage]",
// "rescan-on-resize=true") from every output: the whole document and its
// base64 forms; every option value that is secret-looking by its key, or
// long enough to identify something (≥ 8 bytes, not a bool or number); and
// every other line of 8 bytes or more (certificate bodies).
func RegisterDocument(sink module.SecretSink, doc string) {
	Whole(sink, doc)
	for _, line := range strings.Split(doc, "\n") {
		l := strings.TrimSpace(line)
		if l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, ";") || (strings.HasPrefix(l, "[") && strings.HasSuffix(l, "]")) {
			continue
		}
		if m := kvLine.FindStringSubmatch(l); m != nil {
			v := strings.Trim(m[2], `"'`)
			if plainValue.MatchString(v) {
				continue
			}
			if len(v) >= 8 || (secretishKey.MatchString(m[1]) && len(v) >= 4) {
				Whole(sink, v)
			}
			continue
		}
		if len(l) >= 8 {
			Whole(sink, l)
		}
	}
}

// Outputs are the keys PlanEdits and ApplyEdits register for later steps:
// the objects changed (count, objects) and those already as desired.
var Outputs = []string{"count", "objects", "unchanged"}

// PlanEdits computes edit for every object, previews each real change with
// a server-side dry run and returns the plan.
func PlanEdits(ctx context.Context, t module.Target, objs []unstructured.Unstructured, edit Edit, o Options) (module.Planned, error) {
	var data Data
	data.NoPrecondition = o.NoPrecondition
	fp := map[string]string{}
	var diffs []string
	var unchanged []string
	for i := range objs {
		obj := &objs[i]
		apiVersion, kind := obj.GetAPIVersion(), obj.GetKind()
		secret := IsSecret(apiVersion, kind)
		if secret {
			RegisterSecretValues(t, obj.Object)
		}
		p, err := edit(obj.DeepCopy())
		if err != nil {
			return module.Planned{}, fmt.Errorf("%s: %w", ObjectName(obj), err)
		}
		if p == nil {
			unchanged = append(unchanged, ObjectName(obj))
			continue
		}
		ri, err := t.Cluster.Resource(apiVersion, kind, obj.GetNamespace())
		if err != nil {
			return module.Planned{}, err
		}
		if o.GuardNoOp && p.Type == JSONPatch {
			// The patch's own test ops are its guard: checked on the object
			// as listed (the API server's 422 for a failed test cannot be
			// told from any other invalid patch).
			holds, err := testOpsHold(obj.Object, p.Body)
			if err != nil {
				return module.Planned{}, fmt.Errorf("%s: %w", ObjectName(obj), err)
			}
			if !holds {
				unchanged = append(unchanged, ObjectName(obj)+" (test guard does not hold)")
				continue
			}
		}
		body, pt, err := withPrecondition(p, obj.GetResourceVersion(), !o.NoPrecondition)
		if err != nil {
			return module.Planned{}, err
		}
		after, err := ri.Patch(ctx, obj.GetName(), pt, body, metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			return module.Planned{}, fmt.Errorf("%s: dry run: %w", ObjectName(obj), err)
		}
		if secret {
			RegisterSecretValues(t, after.Object)
		}
		before := Normalize(obj.Object, secret, nil)
		afterN := Normalize(after.Object, secret, obj.Object)
		d := objectDiff(before, afterN, obj)
		if d == "" {
			unchanged = append(unchanged, ObjectName(obj))
			continue
		}
		diffs = append(diffs, d)
		oc := ObjectChange{
			APIVersion: apiVersion, Kind: kind, Namespace: obj.GetNamespace(), Name: obj.GetName(),
			UID: string(obj.GetUID()), ResourceVersion: obj.GetResourceVersion(), What: p.What,
		}
		if secret {
			oc.Recompute = true
		} else {
			oc.Patch = p
		}
		data.Objects = append(data.Objects, oc)
		fp[ObjectName(obj)] = obj.GetResourceVersion()
	}
	verb := o.Verb
	if verb == "" {
		verb = "patch"
	}
	names := make([]any, 0, len(data.Objects))
	for _, oc := range data.Objects {
		names = append(names, refName(oc))
	}
	outputs := map[string]any{Outputs[0]: len(data.Objects), Outputs[1]: names, Outputs[2]: len(unchanged)}
	if len(data.Objects) == 0 {
		sum := "nothing to " + verb + ": no matching objects"
		if len(unchanged) > 0 {
			sum = fmt.Sprintf("nothing to %s: %d object(s) already as desired", verb, len(unchanged))
		}
		return module.Planned{Action: module.NoOp, Summary: sum, Outputs: outputs}, nil
	}
	raw, err := json.Marshal(data)
	if err != nil {
		return module.Planned{}, err
	}
	var parts []string
	for _, oc := range data.Objects {
		s := refName(oc)
		if oc.What != "" {
			s += " (" + oc.What + ")"
		}
		parts = append(parts, s)
	}
	sum := verb + " " + strings.Join(parts, "; ")
	if len(unchanged) > 0 {
		sum += fmt.Sprintf("; %d other object(s) already as desired", len(unchanged))
	}
	return module.Planned{
		Action: module.Change, Summary: sum, Diff: strings.Join(diffs, ""),
		Fingerprint: fp, Data: raw, Outputs: outputs,
	}, nil
}

func refName(oc ObjectChange) string {
	if oc.Namespace == "" {
		return oc.Kind + " " + oc.Name
	}
	return oc.Kind + " " + oc.Namespace + "/" + oc.Name
}

// ApplyEdits sends exactly the planned patches. Every object is first
// checked to still be at the planned resourceVersion (so a conflict changes
// nothing at all), and every patch carries the precondition again (so a
// change racing with apply is refused by the API server).
func ApplyEdits(ctx context.Context, t module.Target, p module.Planned, edit Edit, verb string) (module.Applied, error) {
	var data Data
	if err := json.Unmarshal(p.Data, &data); err != nil {
		return module.Applied{}, fmt.Errorf("plan data: %w", err)
	}
	type work struct {
		oc    ObjectChange
		ri    dynamic.ResourceInterface
		patch *Patch
	}
	var todo []work
	for _, oc := range data.Objects {
		ri, err := t.Cluster.Resource(oc.APIVersion, oc.Kind, oc.Namespace)
		if err != nil {
			return module.Applied{}, err
		}
		w := work{oc: oc, ri: ri, patch: oc.Patch}
		if !data.NoPrecondition || oc.Recompute {
			live, err := ri.Get(ctx, oc.Name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return module.Applied{}, fmt.Errorf("%s: %w (it was deleted)", refName(oc), module.ErrConflict)
			}
			if err != nil {
				return module.Applied{}, fmt.Errorf("%s: %w", refName(oc), err)
			}
			if IsSecret(oc.APIVersion, oc.Kind) {
				RegisterSecretValues(t, live.Object)
			}
			if !data.NoPrecondition && live.GetResourceVersion() != oc.ResourceVersion {
				return module.Applied{}, fmt.Errorf("%s: resourceVersion %s at plan, %s now: %w; nothing was changed, plan again",
					refName(oc), oc.ResourceVersion, live.GetResourceVersion(), module.ErrConflict)
			}
			if oc.Recompute {
				if edit == nil {
					return module.Applied{}, fmt.Errorf("%s: cannot recompute the patch", refName(oc))
				}
				w.patch, err = edit(live)
				if err != nil {
					return module.Applied{}, fmt.Errorf("%s: %w", refName(oc), err)
				}
				if w.patch == nil {
					return module.Applied{}, fmt.Errorf("%s: %w (the edit no longer changes anything)", refName(oc), module.ErrStale)
				}
			}
		}
		if w.patch == nil {
			return module.Applied{}, fmt.Errorf("%s: plan has no patch", refName(oc))
		}
		todo = append(todo, w)
	}
	var done []any
	for _, w := range todo {
		body, pt, err := withPrecondition(w.patch, w.oc.ResourceVersion, !data.NoPrecondition)
		if err != nil {
			return module.Applied{}, err
		}
		_, err = w.ri.Patch(ctx, w.oc.Name, pt, body, metav1.PatchOptions{})
		if err != nil {
			if apierrors.IsConflict(err) || (isTestFailure(err) && rvChanged(ctx, w.ri, w.oc)) {
				err = fmt.Errorf("%s changed since the plan (%v): %w", refName(w.oc), err, module.ErrConflict)
			}
			if len(done) > 0 {
				err = fmt.Errorf("%w (already done: %v)", err, done)
			}
			return module.Applied{Changed: len(done) > 0, Outputs: map[string]any{"count": len(done), "objects": done}}, err
		}
		done = append(done, refName(w.oc))
		if t.Log != nil {
			t.Log("%s %s", verb, refName(w.oc))
		}
	}
	return module.Applied{
		Changed: len(done) > 0,
		Summary: fmt.Sprintf("%s %d object(s)", verbPast(verb), len(done)),
		Outputs: map[string]any{"count": len(done), "objects": done},
	}, nil
}

func verbPast(v string) string {
	switch v {
	case "", "patch":
		return "patched"
	case "restart":
		return "restarted"
	}
	return v + ":"
}

func rvChanged(ctx context.Context, ri dynamic.ResourceInterface, oc ObjectChange) bool {
	live, err := ri.Get(ctx, oc.Name, metav1.GetOptions{})
	return err != nil || live.GetResourceVersion() != oc.ResourceVersion
}

// isTestFailure: the API server answers a JSON patch whose test op fails
// with 422 and the patch library's message.
func isTestFailure(err error) bool {
	var se apierrors.APIStatus
	// A failed JSON patch test op is a 422 whose message does not say so
	// (v1.36: "the server rejected our request due to an error in our
	// request"): any 422 may be one; callers confirm with the object's
	// resourceVersion.
	return errors.As(err, &se) && se.Status().Code == http.StatusUnprocessableEntity
}

// testOpsHold reports whether every `test` op of a JSON patch holds on obj.
func testOpsHold(obj map[string]any, body []byte) (bool, error) {
	var ops []map[string]any
	if err := json.Unmarshal(body, &ops); err != nil {
		return false, fmt.Errorf("JSON patch: %w", err)
	}
	var tests []map[string]any
	for _, op := range ops {
		if op["op"] == "test" {
			tests = append(tests, op)
		}
	}
	if len(tests) == 0 {
		return true, nil
	}
	tb, err := json.Marshal(tests)
	if err != nil {
		return false, err
	}
	patch, err := jsonpatch.DecodePatch(tb)
	if err != nil {
		return false, fmt.Errorf("JSON patch: %w", err)
	}
	doc, err := json.Marshal(obj)
	if err != nil {
		return false, err
	}
	_, err = patch.Apply(doc)
	return err == nil, nil
}

// withPrecondition adds the resourceVersion guard: a leading `test` op for
// JSON patches, metadata.resourceVersion for merge and strategic patches
// (the API server answers 409 Conflict when it does not match).
func withPrecondition(p *Patch, rv string, guard bool) ([]byte, types.PatchType, error) {
	pt, err := PatchType(p.Type)
	if err != nil {
		return nil, "", err
	}
	if !guard || rv == "" {
		return p.Body, pt, nil
	}
	if p.Type == JSONPatch {
		var ops []json.RawMessage
		if err := json.Unmarshal(p.Body, &ops); err != nil {
			return nil, "", fmt.Errorf("json patch: %w", err)
		}
		test, _ := json.Marshal(Op{Op: "test", Path: "/metadata/resourceVersion", Value: rv})
		b, err := json.Marshal(append([]json.RawMessage{test}, ops...))
		return b, pt, err
	}
	var m map[string]any
	if err := json.Unmarshal(p.Body, &m); err != nil {
		return nil, "", fmt.Errorf("%s patch: want a JSON object: %w", p.Type, err)
	}
	md, _ := m["metadata"].(map[string]any)
	if md == nil {
		md = map[string]any{}
	}
	md["resourceVersion"] = rv
	m["metadata"] = md
	b, err := json.Marshal(m)
	return b, pt, err
}

// noiseAnnotations change on every write and say nothing to a reviewer.
var noiseAnnotations = []string{"deprecated.daemonset.template.generation"}

// Normalize strips what changes on every write (managedFields,
// resourceVersion, generation, status) and, for Secrets, replaces values by
// their size: "(secret, 42 bytes)", "(secret, 44 bytes, changed)" when it
// differs from the same key in ref.
func Normalize(obj map[string]any, secret bool, ref map[string]any) map[string]any {
	c := deepCopy(obj)
	delete(c, "status")
	if md, ok := c["metadata"].(map[string]any); ok {
		for _, k := range []string{"managedFields", "resourceVersion", "generation"} {
			delete(md, k)
		}
		if ann, ok := md["annotations"].(map[string]any); ok {
			for _, k := range noiseAnnotations {
				delete(ann, k)
			}
			if secret {
				if _, ok := ann["kubectl.kubernetes.io/last-applied-configuration"]; ok {
					ann["kubectl.kubernetes.io/last-applied-configuration"] = "(redacted)"
				}
			}
			if len(ann) == 0 {
				delete(md, "annotations")
			}
		}
	}
	if secret {
		for _, field := range []string{"data", "stringData"} {
			data, ok := c[field].(map[string]any)
			if !ok {
				continue
			}
			var refData map[string]any
			if ref != nil {
				refData, _ = ref[field].(map[string]any)
			}
			for k, v := range data {
				s, _ := v.(string)
				n := len(s)
				if field == "data" {
					if dec, err := base64.StdEncoding.DecodeString(s); err == nil {
						n = len(dec)
					}
				}
				label := fmt.Sprintf("(secret, %d bytes)", n)
				if refData != nil {
					if old, ok := refData[k]; !ok || old != v {
						label = fmt.Sprintf("(secret, %d bytes, changed)", n)
					}
				}
				data[k] = label
			}
		}
	}
	return c
}

func deepCopy(m map[string]any) map[string]any {
	b, _ := json.Marshal(m)
	var out map[string]any
	_ = json.Unmarshal(b, &out)
	return out
}

func objectDiff(before, after map[string]any, obj *unstructured.Unstructured) string {
	a, err1 := yaml.Marshal(before)
	b, err2 := yaml.Marshal(after)
	if err1 != nil || err2 != nil {
		return "object differs (cannot render)\n"
	}
	name := strings.ToLower(obj.GetKind()) + "/"
	if obj.GetNamespace() != "" {
		name += obj.GetNamespace() + "/"
	}
	name += obj.GetName()
	return modutil.Diff(a, b, "a/"+name, "b/"+name)
}

// DiffObjects renders the diff a plan shows between two object states
// (exported for tests and modules that create objects).
func DiffObjects(before, after map[string]any, secret bool, name string) string {
	var a []byte
	if before != nil {
		a, _ = yaml.Marshal(Normalize(before, secret, nil))
	}
	b, _ := yaml.Marshal(Normalize(after, secret, before))
	return modutil.Diff(a, b, "a/"+name, "b/"+name)
}
