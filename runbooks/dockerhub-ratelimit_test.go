package runbooks_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"nksrun/engine/module"
)

const (
	hubUser     = "nks-puller"
	hubPassword = "dckr_pat_Zq8yW3xV5uT1sR9pO2nM"
	// foreignAuth is in a tenant's own Secret: nksrun never reads it out.
	foreignAuth = "dGVuYW50OnRlbmFudC1vd24tcGFzc3dvcmQtOTk="
)

const hubLimit = `Failed to pull image "nginx:1.25": rpc error: code = Unknown desc = failed to pull and unpack image "docker.io/library/nginx:1.25": 429 Too Many Requests - Server message: toomanyrequests: You have reached your pull rate limit.`

// pod is a pod (YAML) running as sa with one container whose state is
// waiting (ImagePullBackOff) or running.
func pod(ns, name, sa, image, state string) string {
	st := `{running: {startedAt: "2026-01-01T00:00:00Z"}}`
	if state != "running" {
		st = fmt.Sprintf(`{waiting: {reason: %s, message: "Back-off pulling image %s"}}`, state, image)
	}
	saLine := ""
	if sa != "" {
		saLine = "  serviceAccountName: " + sa + "\n"
	}
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: %s}
spec:
%s  containers: [{name: app, image: %q}]
status:
  phase: Pending
  containerStatuses:
  - {name: app, image: %q, imageID: "", ready: false, restartCount: 0, state: %s}
`, name, ns, saLine, image, image, st)
}

func sa(ns, name string, pullSecrets ...string) string {
	refs := ""
	for _, s := range pullSecrets {
		refs += "{name: " + s + "},"
	}
	return fmt.Sprintf("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: %s, namespace: %s}\nimagePullSecrets: [%s]\n", name, ns, strings.TrimSuffix(refs, ","))
}

func pullSecretDoc(ns, name, auth string, ours bool) string {
	labels := ""
	if ours {
		labels = "labels: {app.kubernetes.io/managed-by: nksrun}, "
	}
	cfg := `{"auths":{"https://index.docker.io/v1/":{"auth":"` + auth + `"}}}`
	return fmt.Sprintf("apiVersion: v1\nkind: Secret\nmetadata: {%sname: %s, namespace: %s}\ntype: kubernetes.io/dockerconfigjson\ndata: {.dockerconfigjson: %s}\n",
		labels, name, ns, base64.StdEncoding.EncodeToString([]byte(cfg)))
}

func docs(d ...string) string { return strings.Join(d, "\n---\n") }

var hubEnv = map[string]string{"HUB_USER": hubUser, "HUB_TOKEN": hubPassword}
var hubSets = []string{"username_env=HUB_USER", "password_env=HUB_TOKEN"}

// Bystanders every case seeds: another namespace with its own default
// ServiceAccount, a pod failing for another reason (not Docker Hub, not a
// rate limit) and an unrelated Secret.
var hubBystanders = docs(
	sa("$NS9", "default"),
	sa("$NS9", "builder", "regcred"),
	pod("$NS9", "api-1", "builder", "harbor.example.com/app/api:1", "ImagePullBackOff"),
	ev("$NS9", "api-1", "Warning", "Failed", `Failed to pull image "harbor.example.com/app/api:1": not found`),
	"apiVersion: v1\nkind: Secret\nmetadata: {name: app-config, namespace: $NS9}\ntype: Opaque\nstringData: {password: bystander-secret-value}\n",
)

func e2eDockerHubRateLimit(k *kenv) {
	runCases(k, "dockerhub-ratelimit", []rbCase{{
		name: "healthy",
		objects: docs(hubBystanders, sa("$NS", "default"), pod("$NS", "web-1", "", "nginx:1.25", "running"),
			ev("$NS", "web-1", "Normal", "Pulled", `Successfully pulled image "nginx:1.25"`)),
		sets: hubSets, env: hubEnv,
	}, {
		name: "broken: pods run as their own ServiceAccounts",
		objects: docs(hubBystanders, sa("$NS", "default"), sa("$NS", "shop-web"), sa("$NS", "shop-idle"),
			pod("$NS", "web-1", "shop-web", "nginx:1.25", "ImagePullBackOff"), ev("$NS", "web-1", "Warning", "Failed", hubLimit),
			pod("$NS", "web-2", "shop-web", "nginx:1.25", "ErrImagePull"), ev("$NS", "web-2", "Warning", "Failed", hubLimit),
			pod("$NS", "idle-1", "shop-idle", "redis:7", "running")),
		sets: hubSets, env: hubEnv,
		plan:     map[string]module.Action{"diagnose": module.Finding, "pull_secret": module.Change},
		evidence: []string{"Pod $NS/web-1 (ServiceAccount shop-web)", "toomanyrequests", "$NS: create Secret dockerhub-pull, reference it from ServiceAccount shop-web"},
		absent:   []string{"ServiceAccount default", "$NS9", "shop-idle"},
		changed:  []string{"ServiceAccount $NS/shop-web"},
		created:  []string{"Secret $NS/dockerhub-pull"},
		secrets:  []string{hubPassword, hubUser + ":" + hubPassword, "bystander-secret-value"},
		check: func(k *kenv, ns map[string]string) {
			sec, err := k.tb.Client.CoreV1().Secrets(ns["$NS"]).Get(context.Background(), "dockerhub-pull", metav1.GetOptions{})
			if err != nil || sec.Type != corev1.SecretTypeDockerConfigJson || sec.Labels["app.kubernetes.io/managed-by"] != "nksrun" ||
				!strings.Contains(string(sec.Data[".dockerconfigjson"]), hubPassword) {
				k.t.Errorf("pull secret: %v %v", sec, err)
			}
		},
	}, {
		name: "broken, no credentials given: finding only",
		objects: docs(hubBystanders, pod("$NS", "web-1", "", "library/nginx:1.25", "ImagePullBackOff"),
			ev("$NS", "web-1", "Warning", "Failed", hubLimit)),
		plan:     map[string]module.Action{"diagnose": module.Finding, "pull_secret": module.Skip},
		evidence: []string{"Pod $NS/web-1 (ServiceAccount default)"},
		after:    map[string]module.Action{"diagnose": module.Finding, "pull_secret": module.Skip},
	}, {
		name: "a Secret of that name that nksrun did not create is never overwritten",
		objects: docs(hubBystanders, sa("$NS", "default"), pullSecretDoc("$NS", "dockerhub-pull", foreignAuth, false),
			pod("$NS", "web-1", "", "nginx:1.25", "ImagePullBackOff"), ev("$NS", "web-1", "Warning", "Failed", hubLimit)),
		sets: hubSets, env: hubEnv,
		plan:       map[string]module.Action{"diagnose": module.Finding, "pull_secret": module.Finding},
		evidence:   []string{"Secret dockerhub-pull exists and was not created by nksrun"},
		applyFails: "verify failed",
		after:      map[string]module.Action{"diagnose": module.Finding, "pull_secret": module.Finding},
		secrets:    []string{hubPassword, "tenant-own-password-99"},
		check: func(k *kenv, _ map[string]string) {
			// The tenant's Secret was not registered with the redactor:
			// its auth value is not masked where a plan shows it (nowhere).
			if strings.Contains(k.all.String(), foreignAuth) {
				k.t.Errorf("the tenant's Secret value reached an output")
			}
		},
	}, {
		name: "partly fixed: stale nksrun Secret, one ServiceAccount already references it",
		objects: docs(hubBystanders, pullSecretDoc("$NS", "dockerhub-pull", base64.StdEncoding.EncodeToString([]byte(hubUser+":old-token-aaaaaaaa")), true),
			sa("$NS", "default", "dockerhub-pull"), sa("$NS", "worker"),
			pod("$NS", "web-1", "", "nginx:1.25", "ImagePullBackOff"), ev("$NS", "web-1", "Warning", "Failed", hubLimit),
			pod("$NS", "job-1", "worker", "busybox:1.36", "ImagePullBackOff"), ev("$NS", "job-1", "Warning", "Failed", hubLimit)),
		sets: hubSets, env: hubEnv,
		plan:     map[string]module.Action{"diagnose": module.Finding, "pull_secret": module.Change},
		evidence: []string{"$NS: update Secret dockerhub-pull, reference it from ServiceAccount worker", "Pod $NS/job-1 (ServiceAccount worker)"},
		absent:   []string{"Pod $NS/web-1"},
		changed:  []string{"Secret $NS/dockerhub-pull", "ServiceAccount $NS/worker"},
		secrets:  []string{hubPassword},
	}, {
		name: "--set namespaces limits the fix and adds the namespace's default ServiceAccount",
		objects: docs(hubBystanders,
			pod("$NS", "web-1", "", "nginx:1.25", "ImagePullBackOff"), ev("$NS", "web-1", "Warning", "Failed", hubLimit),
			sa("$NS2", "api"),
			pod("$NS2", "api-1", "api", "docker.io/library/python:3.12", "ImagePullBackOff"), ev("$NS2", "api-1", "Warning", "Failed", hubLimit)),
		sets: append([]string{"namespaces=$NS2"}, hubSets...), env: hubEnv,
		plan:     map[string]module.Action{"diagnose": module.Finding, "pull_secret": module.Change},
		evidence: []string{"$NS2: create Secret dockerhub-pull, reference it from ServiceAccount api, create ServiceAccount default"},
		absent:   []string{"$NS: "},
		changed:  []string{"ServiceAccount $NS2/api"},
		created:  []string{"Secret $NS2/dockerhub-pull", "ServiceAccount $NS2/default"},
		// $NS is outside --set namespaces: still reported, never changed.
		after:   map[string]module.Action{"diagnose": module.Finding, "pull_secret": module.NoOp},
		secrets: []string{hubPassword},
	}})
}
