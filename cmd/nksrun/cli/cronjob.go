package cli

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"nksrun/engine/module"
	"nksrun/engine/runbook"
)

// cronJobSetup is printed above the manifest: what the user creates first.
const cronJobSetup = `# Before applying, create the SSH key Secret and the known_hosts ConfigMap:
#   kubectl create namespace %[1]s
#   kubectl -n %[1]s create secret generic nksrun-ssh --from-file=id=KEYPAIR.pem
#   ssh-keyscan -H NODE_IP... > known_hosts   # or copy the entries from a trusted ~/.ssh/known_hosts
#   kubectl -n %[1]s create configmap nksrun-known-hosts --from-file=known_hosts=known_hosts
# Then: kubectl apply -f THIS_FILE; logs: kubectl -n %[1]s logs job/<job> (JSON lines).
`

// printCronJob prints a Namespace, ServiceAccount, the least RBAC the
// runbook needs and a CronJob that runs it inside the cluster (in-cluster
// config; SSH key from a Secret, known_hosts from a ConfigMap; image built
// from cmd/nksrun/Dockerfile, runbooks under /runbooks).
func (a *app) printCronJob(rb *runbook.Runbook, set map[string]string) error {
	name := "nksrun-" + rb.Name
	ns := a.opts.namespace
	timeout := a.opts.timeout
	if timeout <= 0 {
		timeout = 55 * time.Minute
	}
	rules, notes := runbookRBAC(rb, a.registry, set)
	var b strings.Builder
	fmt.Fprintf(&b, "# nksrun %s (guide §%s) as a Kubernetes CronJob, printed by nksrun %s.\n", rb.Name, rb.Section, Version)
	fmt.Fprintf(&b, cronJobSetup, ns)
	for _, n := range notes {
		fmt.Fprintf(&b, "# NOTE: %s\n", strings.Join(strings.Fields(n), " "))
	}
	fmt.Fprintf(&b, `apiVersion: v1
kind: Namespace
metadata:
  name: %[1]s
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: %[2]s
  namespace: %[1]s
automountServiceAccountToken: true
`, ns, name)

	// Cluster-wide rules in a ClusterRole, namespaced ones in a Role per
	// namespace: nothing broader than the runbook's steps need.
	byNS := map[string][]rbacRule{}
	for _, r := range rules {
		byNS[r.ns] = append(byNS[r.ns], r)
	}
	namespaces := make([]string, 0, len(byNS))
	for n := range byNS {
		namespaces = append(namespaces, n)
	}
	sort.Strings(namespaces)
	for _, rns := range namespaces {
		kind, bind, meta := "ClusterRole", "ClusterRoleBinding", fmt.Sprintf("  name: %s\n", name)
		if rns != "" {
			kind, bind, meta = "Role", "RoleBinding", fmt.Sprintf("  name: %s\n  namespace: %s\n", name, rns)
		}
		fmt.Fprintf(&b, "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: %s\nmetadata:\n%s  labels: {app.kubernetes.io/managed-by: nksrun}\nrules:\n", kind, meta)
		for _, r := range byNS[rns] {
			b.WriteString(r.yaml())
		}
		fmt.Fprintf(&b, `---
apiVersion: rbac.authorization.k8s.io/v1
kind: %[1]s
metadata:
%[2]s  labels: {app.kubernetes.io/managed-by: nksrun}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: %[3]s
  name: %[4]s
subjects:
  - kind: ServiceAccount
    name: %[4]s
    namespace: %[5]s
`, bind, meta, kind, name, ns)
	}

	args := []string{"apply", "--auto-approve", "--no-lock", "--log-format", "json", "--timeout", timeout.String(),
		"-i", "/etc/nksrun/ssh/id", "--known-hosts", "/etc/nksrun/known_hosts/known_hosts"}
	keys := make([]string, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		args = append(args, "--set", k+"="+set[k])
	}
	args = append(args, "/runbooks/"+filepath.Base(rb.Path))
	argsJSON, _ := json.Marshal(args)
	fmt.Fprintf(&b, `---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: %[1]s
  namespace: %[2]s
  labels: {app.kubernetes.io/managed-by: nksrun}
spec:
  schedule: %[3]q
  # Forbid: a run never overlaps the previous one (the in-cluster
  # equivalent of the lock a crontab run takes).
  concurrencyPolicy: Forbid
  startingDeadlineSeconds: 600
  successfulJobsHistoryLimit: 3
  failedJobsHistoryLimit: 3
  jobTemplate:
    spec:
      backoffLimit: 0
      activeDeadlineSeconds: %[4]d
      template:
        metadata:
          labels: {app.kubernetes.io/name: nksrun, app.kubernetes.io/instance: %[1]s}
        spec:
          serviceAccountName: %[1]s
          restartPolicy: Never
          securityContext:
            runAsNonRoot: true
            runAsUser: 65532
            runAsGroup: 65532
            fsGroup: 65532
            seccompProfile: {type: RuntimeDefault}
          containers:
            - name: nksrun
              image: %[5]s
              args: %[6]s
              securityContext:
                allowPrivilegeEscalation: false
                readOnlyRootFilesystem: true
                capabilities: {drop: ["ALL"]}
              resources:
                requests: {cpu: 50m, memory: 64Mi}
                limits: {memory: 512Mi}
              volumeMounts:
                - {name: ssh, mountPath: /etc/nksrun/ssh, readOnly: true}
                - {name: known-hosts, mountPath: /etc/nksrun/known_hosts, readOnly: true}
                - {name: tmp, mountPath: /tmp}
          volumes:
            - name: ssh
              # 288 = 0440: readable by the fsGroup (the non-root user), nobody else.
              secret: {secretName: nksrun-ssh, defaultMode: 288}
            - name: known-hosts
              configMap: {name: nksrun-known-hosts}
            - name: tmp
              emptyDir: {}
`, name, ns, a.opts.schedule, int((timeout + 5*time.Minute).Seconds()), a.opts.image, argsJSON)
	_, err := fmt.Fprint(a.stdout, b.String())
	return err
}

// rbacRule is one RBAC rule; ns "" means cluster-wide (ClusterRole).
type rbacRule struct {
	ns        string
	groups    []string
	resources []string
	names     []string
	verbs     []string
	why       string
}

func (r rbacRule) yaml() string {
	r.why = strings.Join(strings.Fields(r.why), " ")
	q := func(ss []string) string {
		b, _ := json.Marshal(ss)
		return strings.ReplaceAll(string(b), ",", ", ")
	}
	s := fmt.Sprintf("  # %s\n  - apiGroups: %s\n    resources: %s\n", r.why, q(r.groups), q(r.resources))
	if len(r.names) > 0 {
		s += fmt.Sprintf("    resourceNames: %s\n", q(r.names))
	}
	return s + fmt.Sprintf("    verbs: %s\n", q(r.verbs))
}

// runbookRBAC is the least RBAC a runbook needs: listing nodes for the
// inventory, reading the objects of its k8s facts, and what each step's
// module does with the step's own parameters (evaluated with the runbook's
// defaults and set, as the CronJob will run it). Notes say what could not be
// derived (a parameter that depends on facts).
func runbookRBAC(rb *runbook.Runbook, reg module.Registry, set map[string]string) ([]rbacRule, []string) {
	rules := []rbacRule{{groups: []string{""}, resources: []string{"nodes"}, verbs: []string{"get", "list"}, why: "inventory: the cluster's nodes, their addresses and facts"}}
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
		rules = append(rules, rbacRule{ns: f.K8s.Namespace, groups: []string{apiGroup(f.K8s.APIVersion)}, resources: []string{resourceOf(f.K8s.Kind)},
			verbs: []string{"get", "list"}, why: "fact " + name + ": reads " + f.K8s.Kind})
		if f.K8s.Events {
			rules = append(rules, rbacRule{ns: f.K8s.Namespace, groups: []string{""}, resources: []string{"events"}, verbs: []string{"list"}, why: "fact " + name + ": events of the objects"})
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
		need, ok := moduleRBAC[s.Module]
		if !ok {
			continue // SSH-only module: nothing in the API
		}
		var p stepParams
		if f, ok := reg[s.Module]; ok {
			if v, err := s.Params(f(), env); err == nil {
				b, _ := json.Marshal(v)
				_ = json.Unmarshal(b, &p)
			} else {
				// Some parameter depends on facts read at run time (e.g. the
				// names of objects that have finalizers): use the literal
				// parameters only, so the rule covers every such object.
				b, _ := json.Marshal(literalParams(&s.With))
				_ = json.Unmarshal(b, &p)
				notes = append(notes, fmt.Sprintf("step %s (%s): some parameters are only known at run time; its rules come from the literal ones", s.ID, s.Module))
			}
		}
		for _, r := range need(p) {
			r.why = fmt.Sprintf("step %s (%s): %s", s.ID, s.Module, r.why)
			rules = append(rules, r)
		}
	}
	return mergeRules(rules), notes
}

// stepParams are the parameter fields (by their JSON names, as in plans)
// that decide what a cluster module touches.
type stepParams struct {
	APIVersion    string    `json:"apiVersion"`
	Kind          string    `json:"kind"`
	Namespace     string    `json:"namespace"`
	Name          string    `json:"name"`
	Names         *[]string `json:"names"`
	LabelSelector string    `json:"labelSelector"`
	Namespaces    []string  `json:"namespaces"`
	LockNamespace string    `json:"lock_namespace"`
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

// objectNames narrows a rule to named objects when a step names them (get
// and patch work with resourceNames; list does not).
func (p stepParams) objectNames() []string {
	if p.LabelSelector != "" {
		return nil
	}
	if p.Names != nil && len(*p.Names) > 0 {
		return append([]string(nil), (*p.Names)...)
	}
	if p.Name != "" {
		return []string{p.Name}
	}
	return nil
}

func (p stepParams) objectRules(group, resource, what string) []rbacRule {
	if names := p.objectNames(); names != nil {
		return []rbacRule{{ns: p.Namespace, groups: []string{group}, resources: []string{resource}, names: names, verbs: []string{"get", "patch"}, why: what}}
	}
	return []rbacRule{{ns: p.Namespace, groups: []string{group}, resources: []string{resource}, verbs: []string{"get", "list", "patch"}, why: what}}
}

// workloadKinds are what set_image and rollout_restart work on.
var workloadKinds = []struct{ group, kind string }{
	{"apps", "Deployment"}, {"apps", "DaemonSet"}, {"apps", "StatefulSet"}, {"batch", "CronJob"}, {"batch", "Job"},
}

func workloadRules(p stepParams, what string, kinds []string) []rbacRule {
	var out []rbacRule
	for _, k := range workloadKinds {
		match := len(kinds) == 0
		for _, want := range kinds {
			match = match || strings.EqualFold(want, k.kind)
		}
		if match {
			out = append(out, p.objectRules(k.group, resourceOf(k.kind), what+" "+k.kind+"s")...)
		}
	}
	return out
}

// moduleRBAC says what each cluster-touching module needs, from the step's
// parameters. Modules that only work over SSH (file_sync, grub_arg,
// systemd_restart, report) need nothing beyond the node list.
var moduleRBAC = map[string]func(p stepParams) []rbacRule{
	// k8s_patch previews with a server-side dry-run patch (verb patch) and
	// applies with a resourceVersion precondition.
	"k8s_patch": func(p stepParams) []rbacRule {
		if p.Kind == "" {
			return []rbacRule{{groups: []string{"*"}, resources: []string{"*"}, verbs: []string{"get", "list", "patch"}, why: "kind unknown until run time: narrow this rule by hand"}}
		}
		return p.objectRules(apiGroup(p.APIVersion), resourceOf(p.Kind), "patches "+p.Kind)
	},
	// set_image: one workload kind, or every kind with a pod template.
	"set_image": func(p stepParams) []rbacRule {
		var kinds []string
		if p.Kind != "" {
			kinds = []string{p.Kind}
		}
		return workloadRules(p, "sets images of", kinds)
	},
	// rollout_restart patches the pod template annotation and (wait: true)
	// polls the workload's status.
	"rollout_restart": func(p stepParams) []rbacRule {
		var kinds []string
		if p.Kind != "" {
			kinds = []string{p.Kind}
		}
		return workloadRules(p, "restarts", kinds)
	},
	// pull_secret creates/updates a docker-registry Secret and adds it to a
	// ServiceAccount's imagePullSecrets, in each namespace it names.
	"pull_secret": func(p stepParams) []rbacRule {
		var out []rbacRule // no namespaces: the step is a no-op
		for _, n := range p.Namespaces {
			out = append(out,
				rbacRule{ns: n, groups: []string{""}, resources: []string{"secrets"}, verbs: []string{"get", "create", "update"}, why: "the pull Secret"},
				rbacRule{ns: n, groups: []string{""}, resources: []string{"serviceaccounts"}, verbs: []string{"get", "create", "patch"}, why: "imagePullSecrets of the ServiceAccount"})
		}
		return out
	},
	// reboot cordons and drains through the Eviction API (PDBs honoured),
	// serialises reboots with a Lease and uncordons what it cordoned.
	"reboot": func(p stepParams) []rbacRule {
		lockNS := p.LockNamespace
		if lockNS == "" {
			lockNS = "kube-system"
		}
		return []rbacRule{
			{groups: []string{""}, resources: []string{"nodes"}, verbs: []string{"get", "patch"}, why: "cordon/uncordon"},
			{groups: []string{""}, resources: []string{"pods"}, verbs: []string{"get", "list"}, why: "pods to drain"},
			{groups: []string{""}, resources: []string{"pods/eviction"}, verbs: []string{"create"}, why: "drain through the Eviction API"},
			{ns: lockNS, groups: []string{"coordination.k8s.io"}, resources: []string{"leases"}, verbs: []string{"get", "create", "update"}, why: "one reboot at a time (Lease lock)"},
		}
	},
}

// mergeRules joins rules on the same objects (verbs united, first reason
// kept) and keeps the order of first appearance.
func mergeRules(rules []rbacRule) []rbacRule {
	var out []rbacRule
	idx := map[string]int{}
	for _, r := range rules {
		k := strings.Join([]string{r.ns, strings.Join(r.groups, ","), strings.Join(r.resources, ","), strings.Join(r.names, ",")}, "|")
		if i, ok := idx[k]; ok {
			out[i].verbs = unionVerbs(out[i].verbs, r.verbs)
			if !strings.Contains(out[i].why, r.why) {
				out[i].why += "; " + r.why
			}
			continue
		}
		idx[k] = len(out)
		r.verbs = unionVerbs(nil, r.verbs)
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

// apiGroup is the group of an apiVersion ("apps/v1" → "apps", "v1" → "").
func apiGroup(apiVersion string) string {
	if g, _, ok := strings.Cut(apiVersion, "/"); ok {
		return g
	}
	return ""
}

// resourceOf is the resource name of a kind, as the API server pluralises
// the built-in kinds (Endpoints stays, NetworkPolicy → networkpolicies,
// Ingress → ingresses).
func resourceOf(kind string) string {
	k := strings.ToLower(kind)
	switch {
	case k == "endpoints":
		return k
	case strings.HasSuffix(k, "s"), strings.HasSuffix(k, "x"), strings.HasSuffix(k, "ch"), strings.HasSuffix(k, "sh"):
		return k + "es"
	case strings.HasSuffix(k, "y") && len(k) > 1 && !strings.ContainsRune("aeiou", rune(k[len(k)-2])):
		return k[:len(k)-1] + "ies"
	}
	return k + "s"
}
