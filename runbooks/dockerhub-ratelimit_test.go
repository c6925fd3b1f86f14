package runbooks_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"nksrun/engine/module"
)

const (
	hubUser     = "nks-puller"
	hubPassword = "dckr_pat_Zq8yW3xV5uT1sR9pO2nM"
)

// rateLimitedPod seeds a pod in ImagePullBackOff with the Docker Hub
// rate-limit event.
func rateLimitedPod(k *kenv, ns, name, image, event string) {
	objs := k.create(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: %s}
spec:
  containers: [{name: app, image: %q}]
status:
  phase: Pending
  containerStatuses:
  - name: app
    image: %q
    imageID: ""
    ready: false
    restartCount: 0
    state: {waiting: {reason: ImagePullBackOff, message: "Back-off pulling image %s"}}
`, name, ns, image, image, image))
	_, err := k.tb.Client.CoreV1().Events(ns).Create(context.Background(), &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Name: name + ".pull", Namespace: ns},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: name, UID: objs[0].GetUID(), APIVersion: "v1"},
		Reason:         "Failed", Message: event, Type: "Warning",
		Source:         corev1.EventSource{Component: "kubelet"},
		FirstTimestamp: metav1.Now(), LastTimestamp: metav1.Now(), Count: 1,
	}, metav1.CreateOptions{})
	if err != nil {
		k.t.Fatal(err)
	}
}

func e2eDockerHubRateLimit(k *kenv) {
	_, p := k.plan("dockerhub-ratelimit")
	nothingToDo(k, p)

	ns := k.namespace("shop")
	other := k.namespace("private")
	rateLimitedPod(k, ns, "web-1", "nginx:1.25", `Failed to pull image "nginx:1.25": rpc error: code = Unknown desc = failed to pull and unpack image "docker.io/library/nginx:1.25": failed to copy: httpReadSeeker: failed open: unexpected status code https://registry-1.docker.io/v2/library/nginx/manifests/sha256:abc: 429 Too Many Requests - Server message: toomanyrequests: You have reached your pull rate limit.`)
	// Not Docker Hub, not a rate limit: not a target.
	rateLimitedPod(k, other, "api-1", "harbor.example.com/app/api:1", `Failed to pull image "harbor.example.com/app/api:1": not found`)
	k.create(fmt.Sprintf("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: default, namespace: %s}\n", ns))

	// Without credentials: the finding, and the fix is skipped.
	_, p = k.plan("dockerhub-ratelimit")
	wantActions(k, p, map[string]module.Action{"diagnose": module.Finding, "pull_secret": module.Skip})
	if ev := steps(k, p)["diagnose"].Findings[0].Evidence; len(ev) != 1 || !strings.Contains(ev[0], ns+"/web-1") || !strings.Contains(ev[0], "toomanyrequests") {
		k.t.Errorf("evidence: %v", ev)
	}

	// Credentials from environment variables (names only in the runbook params).
	k.t.Setenv("HUB_USER", hubUser)
	k.t.Setenv("HUB_TOKEN", hubPassword)
	path, p := k.plan("dockerhub-ratelimit", "username_env=HUB_USER", "password_env=HUB_TOKEN")
	wantActions(k, p, map[string]module.Action{"diagnose": module.Finding, "pull_secret": module.Change})
	if s := steps(k, p)["pull_secret"].Summary; !strings.Contains(s, ns+": create Secret dockerhub-pull") || strings.Contains(s, other) {
		k.t.Errorf("summary: %s", s)
	}
	r, code := k.apply(path)
	appliedOK(k, r, code)
	sec, err := k.tb.Client.CoreV1().Secrets(ns).Get(context.Background(), "dockerhub-pull", metav1.GetOptions{})
	if err != nil || sec.Type != corev1.SecretTypeDockerConfigJson || !strings.Contains(string(sec.Data[".dockerconfigjson"]), hubPassword) {
		k.t.Fatalf("secret: %v %v", sec, err)
	}
	sa, _ := k.tb.Client.CoreV1().ServiceAccounts(ns).Get(context.Background(), "default", metav1.GetOptions{})
	if len(sa.ImagePullSecrets) != 1 || sa.ImagePullSecrets[0].Name != "dockerhub-pull" {
		k.t.Errorf("service account: %+v", sa.ImagePullSecrets)
	}
	_, p = k.plan("dockerhub-ratelimit", "username_env=HUB_USER", "password_env=HUB_TOKEN")
	wantActions(k, p, map[string]module.Action{"pull_secret": module.NoOp})

	// Refresh from a docker config.json file with other credentials; an
	// explicit namespace without a default ServiceAccount gets one.
	file := filepath.Join(k.dir, "config.json")
	newPass := "dckr_pat_Refreshed_77aa66bb55cc"
	os.WriteFile(file, []byte(`{"auths":{"https://index.docker.io/v1/":{"auth":"`+b64(hubUser+":"+newPass)+`"}}}`), 0o600)
	path, p = k.plan("dockerhub-ratelimit", "credentials_file="+file, "namespaces="+ns+","+other)
	wantActions(k, p, map[string]module.Action{"pull_secret": module.Change})
	sum := steps(k, p)["pull_secret"].Summary
	if !strings.Contains(sum, ns+": update Secret") || !strings.Contains(sum, other+": create Secret dockerhub-pull, create ServiceAccount default") {
		k.t.Errorf("summary: %s", sum)
	}
	r, code = k.apply(path)
	appliedOK(k, r, code)
	sec, _ = k.tb.Client.CoreV1().Secrets(ns).Get(context.Background(), "dockerhub-pull", metav1.GetOptions{})
	if !strings.Contains(string(sec.Data[".dockerconfigjson"]), b64(hubUser+":"+newPass)) {
		k.t.Errorf("secret not refreshed")
	}
	_, p = k.plan("dockerhub-ratelimit", "credentials_file="+file, "namespaces="+ns+","+other)
	wantActions(k, p, map[string]module.Action{"pull_secret": module.NoOp})

	// Nothing printed anywhere shows a credential.
	noSecrets(k, hubPassword, newPass, hubUser+":"+hubPassword, hubUser+":"+newPass)
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
