package cli

import (
	"fmt"
	"path/filepath"
	"strings"

	"nksrun/engine/runbook"
)

// printCronJob prints a namespace, ServiceAccount, RBAC and a CronJob that
// runs the runbook inside the cluster (in-cluster config; SSH key from a
// Secret, known_hosts from a ConfigMap).
func (a *app) printCronJob(rb *runbook.Runbook) error {
	name := "nksrun-" + rb.Name
	ns := a.opts.namespace
	file := filepath.Base(rb.Path)
	fmt.Fprintf(a.stdout, `# nksrun %[1]s (guide §%[2]s) as a Kubernetes CronJob.
# Before applying: create the SSH key Secret and the known_hosts ConfigMap:
#   kubectl -n %[3]s create secret generic nksrun-ssh --from-file=id=KEYPAIR.pem
#   kubectl -n %[3]s create configmap nksrun-known-hosts --from-file=known_hosts=KNOWN_HOSTS
apiVersion: v1
kind: Namespace
metadata:
  name: %[3]s
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: %[4]s
  namespace: %[3]s
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: %[4]s
rules:
%[5]s---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: %[4]s
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: %[4]s
subjects:
  - kind: ServiceAccount
    name: %[4]s
    namespace: %[3]s
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: %[4]s
  namespace: %[3]s
spec:
  schedule: %[6]q
  concurrencyPolicy: Forbid
  successfulJobsHistoryLimit: 3
  failedJobsHistoryLimit: 3
  jobTemplate:
    spec:
      backoffLimit: 0
      activeDeadlineSeconds: 3600
      template:
        spec:
          serviceAccountName: %[4]s
          restartPolicy: Never
          containers:
            - name: nksrun
              image: %[7]s
              args: ["apply", "--auto-approve", "--no-lock", "--log-format", "json", "--timeout", "55m",
                     "-i", "/etc/nksrun/ssh/id", "--known-hosts", "/etc/nksrun/known_hosts/known_hosts",
                     "/runbooks/%[8]s"]
              securityContext:
                runAsNonRoot: true
                runAsUser: 65532
                allowPrivilegeEscalation: false
                readOnlyRootFilesystem: true
              volumeMounts:
                - {name: ssh, mountPath: /etc/nksrun/ssh, readOnly: true}
                - {name: known-hosts, mountPath: /etc/nksrun/known_hosts, readOnly: true}
          volumes:
            - name: ssh
              secret: {secretName: nksrun-ssh, defaultMode: 0400}
            - name: known-hosts
              configMap: {name: nksrun-known-hosts}
`, rb.Name, rb.Section, ns, name, rbacRules(rb), a.opts.schedule, a.opts.image, file)
	return nil
}

// rbacRules is the least RBAC a runbook needs: reading nodes for the
// inventory, plus what its modules and facts touch.
func rbacRules(rb *runbook.Runbook) string {
	rules := []string{`  - apiGroups: [""]
    resources: ["nodes"]
    verbs: ["get", "list"]
`}
	for _, f := range rb.Facts {
		if f.K8s != nil {
			group := ""
			if g, _, ok := strings.Cut(f.K8s.APIVersion, "/"); ok {
				group = g
			}
			res := strings.ToLower(f.K8s.Kind) + "s"
			rules = append(rules, fmt.Sprintf("  - apiGroups: [%q]\n    resources: [%q]\n    verbs: [\"get\", \"list\"]\n", group, res))
			if f.K8s.Events {
				rules = append(rules, "  - apiGroups: [\"\"]\n    resources: [\"events\"]\n    verbs: [\"list\"]\n")
			}
		}
	}
	for _, s := range rb.Steps {
		if r, ok := moduleRBAC[s.Module]; ok {
			rules = append(rules, r)
		}
	}
	seen := map[string]bool{}
	var b strings.Builder
	for _, r := range rules {
		if !seen[r] {
			seen[r] = true
			b.WriteString(r)
		}
	}
	return b.String()
}

// moduleRBAC is what each cluster-touching module needs. Modules that only
// work over SSH need nothing beyond the node list.
var moduleRBAC = map[string]string{
	"reboot": `  - apiGroups: [""]
    resources: ["nodes"]
    verbs: ["get", "list", "patch", "update"]
  - apiGroups: [""]
    resources: ["pods"]
    verbs: ["get", "list"]
  - apiGroups: [""]
    resources: ["pods/eviction"]
    verbs: ["create"]
  - apiGroups: ["coordination.k8s.io"]
    resources: ["leases"]
    verbs: ["get", "create", "update", "delete"]
  - apiGroups: ["apps"]
    resources: ["daemonsets", "replicasets", "statefulsets"]
    verbs: ["get"]
`,
}
