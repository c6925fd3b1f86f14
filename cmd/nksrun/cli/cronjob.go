package cli

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"time"

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
	rules, notes, err := runbookRBAC(rb, a.registry, set)
	if err != nil {
		return fmt.Errorf("cannot write least-privilege RBAC for %s: %w", rb.Name, err)
	}
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
	byNS := map[string][]module.Rule{}
	for _, r := range rules {
		byNS[r.Namespace] = append(byNS[r.Namespace], r)
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
			b.WriteString(ruleYAML(r))
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
	_, err = fmt.Fprint(a.stdout, b.String())
	return err
}
