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
//
// pass are the connection and selection flags given to cron; params.words
// the non-secret params. Secret params never reach the args: the container
// reads each from NKSRUN_SET_<NAME>, filled by the kubelet from the Secret
// nksrun-RUNBOOK-params (secretKeyRef), which the user creates from the
// commented template printed above the manifest.
func (a *app) printCronJob(rb *runbook.Runbook, pass []string, params cronParams) error {
	name := "nksrun-" + rb.Name
	ns := a.opts.namespace
	timeout := a.opts.timeout
	if timeout <= 0 {
		timeout = 55 * time.Minute
	}
	set := map[string]string{}
	for i := 0; i+1 < len(params.words); i += 2 {
		k, v, _ := strings.Cut(params.words[i+1], "=")
		set[k] = v
	}
	rules, notes, err := runbookRBAC(rb, a.registry, set)
	if err != nil {
		return usageError{fmt.Sprintf("cannot write least-privilege RBAC for %s: %v", rb.Name, err)}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# nksrun %s (guide §%s) as a Kubernetes CronJob, printed by nksrun %s.\n", rb.Name, rb.Section, Version)
	fmt.Fprintf(&b, cronJobSetup, ns)
	for _, n := range notes {
		fmt.Fprintf(&b, "# NOTE: %s\n", strings.Join(strings.Fields(n), " "))
	}
	// What the container takes from the Secret nksrun-RUNBOOK-params: the
	// secret params, and the variables --secret-env names (credentials a
	// module reads from the environment, e.g. pull_secret's username_env).
	var entries []secretEntry
	for _, name := range params.secrets {
		entries = append(entries, secretEntry{env: paramEnv(name), key: secretKey(name), required: rb.Params[name].Required,
			what: "secret param " + name + ": " + strings.Join(strings.Fields(rb.Params[name].Description), " ")})
	}
	for _, v := range a.opts.secretEnv {
		entries = append(entries, secretEntry{env: v, key: v, required: true, what: "environment variable " + v})
	}
	if len(entries) > 0 {
		b.WriteString(secretTemplate(rb, ns, entries))
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

	args := []string{"apply", "--auto-approve", "--no-lock", "--log-format", a.opts.cronLogFormat, "--timeout", timeout.String(),
		"-i", "/etc/nksrun/ssh/id", "--known-hosts", "/etc/nksrun/known_hosts/known_hosts"}
	args = append(args, pass...)
	args = append(args, params.words...)
	args = append(args, "/runbooks/"+filepath.Base(rb.Path))
	argsJSON, _ := json.Marshal(args)
	var e strings.Builder
	e.WriteString("              env:\n")
	// The Go runtime collects harder near this soft limit instead of
	// growing its heap to twice what is live: below the container's 512Mi
	// limit, so a large cluster slows the GC down rather than OOM-kills the
	// run (at 1,000 nodes, GOMEMLIMIT=90MiB took apply from 155 to 119 MB).
	e.WriteString("                - {name: GOMEMLIMIT, value: 400MiB}\n")
	for _, se := range entries {
		ref, _ := json.Marshal(map[string]any{"name": paramSecretName(rb), "key": se.key, "optional": !se.required})
		fmt.Fprintf(&e, "                - name: %s\n                  valueFrom: {secretKeyRef: %s}\n", se.env, ref)
	}
	env := e.String()
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
%[7]s              securityContext:
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
`, name, ns, a.opts.schedule, int((timeout + 5*time.Minute).Seconds()), a.opts.image, argsJSON, env)
	_, err = fmt.Fprint(a.stdout, b.String())
	return err
}

// paramSecretName is the Secret the CronJob reads a runbook's secret params from.
func paramSecretName(rb *runbook.Runbook) string {
	return "nksrun-" + rb.Name + "-params"
}

// secretKey is a param's key in that Secret (keys allow [-._a-zA-Z0-9]).
func secretKey(name string) string {
	b := []byte(name)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			b[i] = '_'
		}
	}
	return string(b)
}

// secretEntry is one environment variable of the container filled from
// the Secret.
type secretEntry struct {
	env, key, what string
	required       bool
}

// secretTemplate is the Secret the user creates for the secret values, as
// comments and without any value: the manifest can be committed and
// reviewed, the values go to the cluster only.
func secretTemplate(rb *runbook.Runbook, ns string, entries []secretEntry) string {
	var b strings.Builder
	sec := paramSecretName(rb)
	envs := make([]string, len(entries))
	for i, se := range entries {
		envs[i] = se.env
	}
	fmt.Fprintf(&b, "# Secret values (%s) are never in the args: the container takes them from\n", strings.Join(envs, ", "))
	fmt.Fprintf(&b, "# the Secret %s/%s (secretKeyRef). Create it from files only you can read:\n", ns, sec)
	fmt.Fprintf(&b, "#   kubectl -n %s create secret generic %s", ns, sec)
	for _, se := range entries {
		fmt.Fprintf(&b, " --from-file=%s=%s.txt", se.key, se.key)
	}
	b.WriteString("\n# or from this template (fill in the values; do not commit them):\n")
	fmt.Fprintf(&b, "#   apiVersion: v1\n#   kind: Secret\n#   metadata:\n#     name: %s\n#     namespace: %s\n#   type: Opaque\n#   stringData:\n", sec, ns)
	for _, se := range entries {
		req := "optional"
		if se.required {
			req = "required"
		}
		fmt.Fprintf(&b, "#     %s: \"\"   # %s (%s)\n", se.key, se.what, req)
	}
	return b.String()
}
