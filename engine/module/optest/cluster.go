package optest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"nksrun/engine/module"
	"nksrun/testdata/golden"
)

// RunCluster runs every case of testdata/modules/<dir> for a cluster-scope
// module against c, a real API server: client-go's fake dynamic client
// applies a DryRun patch for real (a plan would change the object), keeps
// no resourceVersions and cannot apply strategic merge patches to
// unstructured objects, so it cannot stand in for the server-side dry run
// the modules plan with.
//
// Each case gets its own namespace ("$NS"), creates its objects there,
// plans (which must change nothing: every object keeps its
// resourceVersion), applies, checks that exactly the objects the plan named
// changed (bystanders keep their resourceVersion), and plans again with the
// same time, which must be a no-op.
func RunCluster(t *testing.T, c *module.Cluster, m module.Module, dir string) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(Dir(), dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no cases in %s (%v)", filepath.Join(Dir(), dir), err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		ns := nsName(dir + "-" + name)
		t.Run(name, func(t *testing.T) { runClusterCase(t, c, m, f, ns) })
	}
}

var nonDNS = regexp.MustCompile(`[^a-z0-9-]+`)

func nsName(s string) string {
	s = strings.Trim(nonDNS.ReplaceAllString(strings.ToLower(s), "-"), "-")
	if len(s) > 60 {
		s = strings.TrimRight(s[:60], "-")
	}
	return s
}

// substNS replaces "$NS" in every string of v.
func substNS(v any, ns string) any {
	switch x := v.(type) {
	case string:
		return strings.ReplaceAll(x, "$NS", ns)
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = substNS(e, ns)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = substNS(e, ns)
		}
		return out
	}
	return v
}

type kindRef struct{ apiVersion, kind string }

func runClusterCase(t *testing.T, c *module.Cluster, m module.Module, path, ns string) {
	cs, err := LoadCase(path)
	if err != nil {
		t.Fatal(err)
	}
	if cs.KnownBug != "" && os.Getenv("CI") == "" {
		t.Skipf("known bug (fails with CI set): %s", cs.KnownBug)
	}
	// Params with $NS replaced, through YAML.
	var raw any
	if err := cs.Params.Decode(&raw); err != nil {
		t.Fatal(err)
	}
	var pn yaml.Node
	if err := pn.Encode(substNS(raw, ns)); err != nil {
		t.Fatal(err)
	}
	params, err := DecodeParams(m, &pn)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.Clientset.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	var kinds []kindRef
	for _, o := range cs.Objects {
		u := &unstructured.Unstructured{Object: substNS(o, ns).(map[string]any)}
		if u.GetNamespace() == "" {
			u.SetNamespace(ns)
		}
		ri, err := c.Resource(u.GetAPIVersion(), u.GetKind(), u.GetNamespace())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ri.Create(ctx, u, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating %s %s: %v", u.GetKind(), u.GetName(), err)
		}
		if k := (kindRef{u.GetAPIVersion(), u.GetKind()}); !slices.Contains(kinds, k) {
			kinds = append(kinds, k)
		}
	}
	for _, d := range cs.Deleting {
		kind, name, _ := strings.Cut(d, " ")
		var apiVersion string
		for _, o := range cs.Objects {
			u := unstructured.Unstructured{Object: o}
			if u.GetKind() == kind && u.GetName() == name {
				apiVersion = u.GetAPIVersion()
			}
		}
		ri, err := c.Resource(apiVersion, kind, ns)
		if err != nil {
			t.Fatalf("deleting %s: %v", d, err)
		}
		if err := ri.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatalf("deleting %s: %v", d, err)
		}
	}
	snapshot := func() map[string]string {
		t.Helper()
		out := map[string]string{}
		for _, k := range kinds {
			ri, err := c.Resource(k.apiVersion, k.kind, ns)
			if err != nil {
				t.Fatal(err)
			}
			l, err := ri.List(ctx, metav1.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range l.Items {
				out[k.kind+" "+o.GetNamespace()+"/"+o.GetName()] = o.GetResourceVersion()
			}
		}
		return out
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if cs.Now != "" {
		if now, err = time.Parse(time.RFC3339, cs.Now); err != nil {
			t.Fatalf("now: %v", err)
		}
	}
	secrets := &sink{}
	tgt := module.Target{Now: now, Cluster: c, RunbookDir: filepath.Dir(path), Secrets: secrets}
	step := module.Step{ID: "step", Params: params}
	plan := func() (module.Planned, error) {
		t.Helper()
		pl, err := m.Plan(ctx, tgt, step, nil)
		if err != nil {
			return pl, err
		}
		return plannedAsInPlan(t, pl), nil
	}

	var g strings.Builder
	fmt.Fprintf(&g, "# %s\n", cs.About)
	finish := func() {
		t.Helper()
		out := strings.ReplaceAll(g.String(), ns, "$NS")
		// What the API server assigns differs from run to run.
		out = rvRE.ReplaceAllString(out, `${1}RV`)
		out = fpRE.ReplaceAllString(out, `${1}RV`)
		out = uidRE.ReplaceAllString(out, `UID`)
		out = createdRE.ReplaceAllString(out, `${1}"TIME"`)
		for _, s := range append(cs.Secrets, secrets.values...) {
			if len(s) >= 4 {
				out = strings.ReplaceAll(out, s, "(secret)")
			}
		}
		golden.Assert(t, strings.TrimSuffix(path, ".yaml")+".golden", []byte(out))
	}

	before := snapshot()
	pl, err := plan()
	if after := snapshot(); !sameRVs(before, after) {
		t.Errorf("planning changed objects (server-side dry run must not): before %v, after %v", before, after)
	}
	if cs.Expect.PlanError != "" {
		if err == nil || !strings.Contains(err.Error(), cs.Expect.PlanError) {
			t.Fatalf("plan error = %v, want one containing %q", err, cs.Expect.PlanError)
		}
		g.WriteString("plan error: " + err.Error() + "\n")
		finish()
		return
	}
	if err != nil {
		t.Fatalf("plan: %v", err)
	}
	if pl.Action != cs.Expect.Action {
		t.Errorf("action = %s, want %s (summary %q, reason %q)", pl.Action, cs.Expect.Action, pl.Summary, pl.Reason)
	}
	writePlan(&g, "plan", pl)
	planJSON, _ := json.Marshal(pl)
	for _, s := range cs.Secrets {
		if strings.Contains(string(planJSON), s) {
			t.Errorf("secret %q is in the plan", s)
		}
	}
	if pl.Action != module.Change {
		finish()
		return
	}
	var data struct {
		Objects []struct {
			Kind, Namespace, Name string
		} `json:"objects"`
	}
	if err := json.Unmarshal(pl.Data, &data); err != nil {
		t.Fatalf("plan data: %v", err)
	}
	var named []string
	for _, o := range data.Objects {
		named = append(named, o.Kind+" "+o.Namespace+"/"+o.Name)
	}
	slices.Sort(named)

	// Apply gets the params as a saved plan holds them, like pl.
	ap, err := m.Apply(ctx, tgt, module.Step{ID: step.ID, Params: AsInPlan(t, m, params)}, pl)
	if cs.Expect.ApplyError != "" {
		if err == nil || !strings.Contains(err.Error(), cs.Expect.ApplyError) {
			t.Fatalf("apply error = %v, want one containing %q", err, cs.Expect.ApplyError)
		}
		fmt.Fprintf(&g, "\n== apply error\n%s\n", err)
		if after := snapshot(); !sameRVs(before, after) {
			t.Errorf("failed apply changed objects: before %v, after %v", before, after)
		}
		finish()
		return
	}
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	fmt.Fprintf(&g, "\n== applied\nchanged: %v\nsummary: %s\noutputs: %s\n", ap.Changed, ap.Summary, jsonString(ap.Outputs))
	// Exactly the objects the plan named changed; bystanders did not.
	after := snapshot()
	var changed []string
	for k, rv := range after {
		if before[k] != rv {
			changed = append(changed, k)
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			changed = append(changed, k) // deleted (finalizers removed)
		}
	}
	slices.Sort(changed)
	if !slices.Equal(changed, named) {
		t.Errorf("apply changed %v, the plan named %v", changed, named)
	}
	fmt.Fprintf(&g, "changed objects: %s\n", strings.Join(changed, ", "))
	var kept []string
	for k := range before {
		if !slices.Contains(changed, k) {
			kept = append(kept, k)
		}
	}
	slices.Sort(kept)
	fmt.Fprintf(&g, "unchanged objects: %s\n", strings.Join(kept, ", "))

	checkAgain(t, plan, cs.Expect.Again, &g)
	finish()
}

var (
	fpRE      = regexp.MustCompile(`(?m)^(fingerprint [^:]+: )\d+$`)
	uidRE     = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)
	createdRE = regexp.MustCompile(`((?:creation|deletion)Timestamp: )"[^"]*"`)
)

var rvRE = regexp.MustCompile(`((?i:resourceVersion)["]?[:=]? ?["]?)\d+`)

func sameRVs(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// sink collects what modules register as secret.
type sink struct{ values []string }

func (s *sink) AddSecret(v string) { s.values = append(s.values, v) }
