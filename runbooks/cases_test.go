package runbooks_test

// A table-driven scenario runner for the cluster runbooks: each case is
// data (objects as YAML, params, expected step actions and evidence, the
// objects apply must change and, implicitly, every other seeded object it
// must leave alone), so that cases can move into a data-driven harness
// unchanged. Every case checks the contract of issue #12: plan, apply
// (exit 0, verify passes), the resourceVersion of every seeded object not
// listed as changed is the same after apply, and a second plan has
// nothing to do.

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"nksrun/engine/module"
	"nksrun/engine/plans"
)

type rbCase struct {
	name string
	// objects are YAML documents separated by "\n---\n". $NS, $NS2 … are
	// replaced by fresh namespaces (created for the case); objects in
	// kube-system or other fixed namespaces are deleted after the case.
	objects string
	// sets are --set params ($NS… replaced too); env is set for the case.
	sets []string
	env  map[string]string
	// plan: the first plan's action of each listed step.
	plan map[string]module.Action
	// evidence must appear in the first plan's cluster steps (summary,
	// reason, diff or findings); absent must not.
	evidence, absent []string
	// changed: "Kind namespace/name" of seeded objects apply must change;
	// every other seeded object must keep its resourceVersion. created:
	// objects apply must create.
	changed, created []string
	// applyFails: apply must fail (exit ≠ 0) with this in a reason.
	applyFails string
	// after: the second plan's actions of listed steps; nil = nothing to do.
	after map[string]module.Action
	// between runs after apply and before the second plan (e.g. play the
	// controller that finishes a rollout).
	between func(k *kenv, ns map[string]string)
	// check runs last, for what the fields above cannot say.
	check func(k *kenv, ns map[string]string)
	// secrets must never appear in any output of the case.
	secrets []string
	// as, when set, are the RBAC rules (a YAML list) of the ServiceAccount
	// plan and apply run as, instead of the testbed's admin.
	as string
}

// tick, as a document of rbCase.objects, waits for the next second.
const tick = "TICK"

var nsVar = regexp.MustCompile(`\$NS[0-9]*\b`)

// runCases runs each case of a runbook as its own subtest.
func runCases(k *kenv, runbook string, cases []rbCase) {
	for _, c := range cases {
		k.t.Run(c.name, func(t *testing.T) {
			kc := *k
			kc.t = t
			kc.dir = t.TempDir()
			kc.all = &bytes.Buffer{}
			runCase(&kc, runbook, c)
		})
	}
}

func runCase(k *kenv, runbook string, c rbCase) {
	k.t.Helper()
	for key, v := range c.env {
		k.t.Setenv(key, v)
	}
	ns := map[string]string{}
	subst := func(s string) string {
		return nsVar.ReplaceAllStringFunc(s, func(v string) string {
			if ns[v] == "" {
				ns[v] = fmt.Sprintf("%s-%s-%d", strings.ToLower(strings.TrimPrefix(v, "$")), shortName(k.t.Name()), time.Now().UnixNano()%1e9)
			}
			return ns[v]
		})
	}
	objects := subst(c.objects)
	if c.as != "" {
		subst("$NS") // the restricted ServiceAccount lives there
	}
	// Namespaces the case does not declare itself (with its labels) are
	// created plain, first.
	for _, name := range ns {
		if !strings.Contains(objects, "kind: Namespace\nmetadata: {name: "+name+",") && !strings.Contains(objects, "kind: Namespace\nmetadata: {name: "+name+"}") {
			k.create(fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata: {name: %s}\n", name))
		}
	}
	var seeded []*unstructured.Unstructured
	for _, doc := range strings.Split(objects, "\n---\n") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		if strings.TrimSpace(doc) == tick {
			// The API server records times in whole seconds: let one pass
			// so that what follows is strictly newer than what precedes.
			for s := time.Now().Unix(); time.Now().Unix() == s; {
				time.Sleep(20 * time.Millisecond)
			}
			continue
		}
		objs := k.create(doc)
		seeded = append(seeded, objs...)
		for _, o := range objs {
			if o.GetKind() == "Namespace" {
				// A deleted Namespace stays (Terminating) in the testbed,
				// which has no namespace controller: drop its labels so
				// that later cases do not see it as, e.g., istio-injected.
				name := o.GetName()
				k.t.Cleanup(func() {
					ri := k.res("v1", "Namespace", "")
					if cur, err := ri.Get(context.Background(), name, metav1.GetOptions{}); err == nil {
						cur.SetLabels(nil)
						ri.Update(context.Background(), cur, metav1.UpdateOptions{})
					}
				})
			}
		}
	}
	if c.as != "" {
		k.asKubeconfig = restrictedKubeconfig(k, subst("$NS"), c.as)
	}
	sets := make([]string, len(c.sets))
	for i, s := range c.sets {
		sets[i] = subst(s)
	}
	path, p := k.plan(runbook, sets...)
	if c.plan != nil {
		wantActions(k, p, c.plan)
	} else {
		nothingToDo(k, p)
	}
	text := planText(k, p)
	for _, e := range c.evidence {
		if e = subst(e); !strings.Contains(text, e) {
			k.t.Errorf("plan does not say %q:\n%s", e, text)
		}
	}
	for _, e := range c.absent {
		if e = subst(e); strings.Contains(text, e) {
			k.t.Errorf("plan says %q:\n%s", e, text)
		}
	}
	changed := map[string]bool{}
	for _, s := range c.changed {
		changed[subst(s)] = true
	}
	r, code := k.apply(path)
	if c.applyFails != "" {
		var reasons []string
		for _, tr := range r.Targets {
			reasons = append(reasons, tr.Reason)
		}
		if code == 0 || !strings.Contains(strings.Join(reasons, "\n"), c.applyFails) {
			k.t.Errorf("want a failed apply with %q, got exit %d: %v", c.applyFails, code, reasons)
		}
	} else {
		appliedOK(k, r, code)
	}
	// Bystanders: every seeded object not listed as changed is untouched;
	// every listed one did change.
	for _, o := range seeded {
		name := objName(o)
		cur, err := k.res(o.GetAPIVersion(), o.GetKind(), o.GetNamespace()).Get(context.Background(), o.GetName(), metav1.GetOptions{})
		if err != nil {
			k.t.Errorf("%s: %v", name, err)
			continue
		}
		same := cur.GetResourceVersion() == o.GetResourceVersion()
		switch {
		case changed[name] && same:
			k.t.Errorf("%s: not changed by apply", name)
		case !changed[name] && !same:
			k.t.Errorf("%s: a bystander, changed by apply (resourceVersion %s → %s)", name, o.GetResourceVersion(), cur.GetResourceVersion())
		}
		delete(changed, name)
	}
	for name := range changed {
		k.t.Errorf("case lists %s as changed but did not seed it", name)
	}
	for _, s := range c.created {
		kind, rest, _ := strings.Cut(subst(s), " ")
		nsName, name, _ := strings.Cut(rest, "/")
		apiVersion := "v1"
		if kind == "Deployment" || kind == "DaemonSet" || kind == "StatefulSet" {
			apiVersion = "apps/v1"
		}
		if _, err := k.res(apiVersion, kind, nsName).Get(context.Background(), name, metav1.GetOptions{}); err != nil {
			k.t.Errorf("%s not created: %v", s, err)
		} else {
			k.cleanup(apiVersion, kind, nsName, name)
		}
	}
	if c.between != nil {
		c.between(k, ns)
	}
	_, p = k.plan(runbook, sets...)
	if c.after != nil {
		wantActions(k, p, c.after)
	} else {
		nothingToDo(k, p)
	}
	if c.check != nil {
		c.check(k, ns)
	}
	noSecrets(k, c.secrets...)
}

// cleanup deletes an object apply created when the case ends.
func (k *kenv) cleanup(apiVersion, kind, ns, name string) {
	k.t.Cleanup(func() { k.res(apiVersion, kind, ns).Delete(context.Background(), name, metav1.DeleteOptions{}) })
}

func objName(o *unstructured.Unstructured) string {
	if o.GetNamespace() == "" {
		return o.GetKind() + " " + o.GetName()
	}
	return o.GetKind() + " " + o.GetNamespace() + "/" + o.GetName()
}

// planText is every human string of the plan's cluster steps.
func planText(k *kenv, p *plans.Plan) string {
	var b strings.Builder
	ids := []string{}
	st := steps(k, p)
	for id := range st {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		s := st[id]
		fmt.Fprintf(&b, "[%s %s] %s\n%s\n%s\n", id, s.Action, s.Summary, s.Reason, s.Diff)
		for _, f := range s.Findings {
			fmt.Fprintf(&b, "  finding %s: %s\n    %s\n    → %s\n", f.Severity, f.Title, strings.Join(f.Evidence, "\n    "), f.Recommendation)
		}
	}
	return b.String()
}

func shortName(s string) string {
	s = strings.ToLower(s[strings.LastIndex(s, "/")+1:])
	s = regexp.MustCompile(`[^a-z0-9]+`).ReplaceAllString(s, "-")
	if len(s) > 20 {
		s = s[:20]
	}
	return strings.Trim(s, "-")
}

// ev is a kubelet event about a pod, as YAML.
func ev(ns, pod, typ, reason, msg string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Event
metadata: {name: %s.%d, namespace: %s}
involvedObject: {kind: Pod, namespace: %s, name: %s, apiVersion: v1}
type: %s
reason: %s
message: %q
source: {component: kubelet}
firstTimestamp: %q
lastTimestamp: %q
count: 1
`, pod, time.Now().UnixNano(), ns, ns, pod, typ, reason, msg, time.Now().UTC().Format(time.RFC3339), time.Now().UTC().Format(time.RFC3339))
}

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }

// mustYAML decodes one YAML document into an object.
func mustYAML(k *kenv, doc string) *unstructured.Unstructured {
	k.t.Helper()
	var m map[string]any
	if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
		k.t.Fatalf("%v\n%s", err, doc)
	}
	return &unstructured.Unstructured{Object: m}
}

// restrictedKubeconfig creates a ServiceAccount in ns bound to a
// ClusterRole with rules (a YAML list) and returns a kubeconfig with its
// token: plan and apply then see what such credentials may read.
func restrictedKubeconfig(k *kenv, ns, rules string) string {
	k.t.Helper()
	name := "nksrun-restricted-" + ns
	k.create(
		fmt.Sprintf("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: reader, namespace: %s}\n", ns),
		fmt.Sprintf("apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: %s}\nrules:\n%s", name, rules),
		fmt.Sprintf("apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: %s}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: %s}\nsubjects: [{kind: ServiceAccount, name: reader, namespace: %s}]\n", name, name, ns))
	exp := int64(600)
	tok, err := k.tb.Client.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), "reader",
		&authv1.TokenRequest{Spec: authv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		k.t.Fatal(err)
	}
	cfg, err := clientcmd.LoadFromFile(k.tb.Kubeconfig)
	if err != nil {
		k.t.Fatal(err)
	}
	for _, ai := range cfg.AuthInfos {
		ai.Token = tok.Status.Token
		ai.ClientCertificateData, ai.ClientKeyData = nil, nil
	}
	path := filepath.Join(k.dir, "restricted-kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		k.t.Fatal(err)
	}
	return path
}
