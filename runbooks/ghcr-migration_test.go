package runbooks_test

import (
	"encoding/base64"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"nksrun/engine/module"
)

func images(o *unstructured.Unstructured, path ...string) []string {
	var out []string
	for _, f := range []string{"initContainers", "containers"} {
		cs, _, _ := unstructured.NestedSlice(o.Object, append(append([]string{}, path...), f)...)
		for _, c := range cs {
			out = append(out, c.(map[string]any)["image"].(string))
		}
	}
	return out
}

// registrySecret is a pull Secret with credentials for the given hosts.
func registrySecret(ns, name string, hosts ...string) string {
	var auths []string
	for _, h := range hosts {
		auths = append(auths, fmt.Sprintf("%q:{\"auth\":\"Z2gtdXNlcjpnaHBfVG9rZW5WYWx1ZTEyMzQ1Ng==\"}", h))
	}
	cfg := `{"auths":{` + strings.Join(auths, ",") + `}}`
	return fmt.Sprintf("apiVersion: v1\nkind: Secret\nmetadata: {name: %s, namespace: %s}\ntype: kubernetes.io/dockerconfigjson\ndata: {.dockerconfigjson: %s}\n",
		name, ns, base64.StdEncoding.EncodeToString([]byte(cfg)))
}

func wantImages(k *kenv, apiVersion, kind, ns, name, want string, path ...string) {
	k.t.Helper()
	if got := strings.Join(images(k.get(apiVersion, kind, ns, name), path...), " "); got != want {
		k.t.Errorf("%s %s/%s images: %s, want %s", kind, ns, name, got, want)
	}
}

const ghcrDigest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

var ghcrBystanders = docs(
	workload("Deployment", "$NS9", "fine", "", "containers: [{name: a, image: ghcr.io/acme/api:1.0}]\n"),
	workload("DaemonSet", "$NS9", "agent", "", "containers: [{name: a, image: nginx:1.25}]\n"),
	sa("$NS9", "default", "regcred"),
	registrySecret("$NS9", "regcred", "docker.io"),
)

func e2eGHCRMigration(k *kenv) {
	api := workload("Deployment", "$NS", "api", "", "initContainers: [{name: migrate, image: docker.pkg.github.com/acme/shop/migrate:2.1}]\ncontainers:\n- {name: api, image: docker.pkg.github.com/acme/shop/api:1.4.2}\n- {name: sidecar, image: nginx:1.25}\n")
	report := workload("CronJob", "$NS", "report", "", "containers: [{name: r, image: \"docker.pkg.github.com/acme/shop/report@"+ghcrDigest+"\"}]\n")
	runCases(k, "ghcr-migration", []rbCase{{
		name: "healthy",
		objects: docs(ghcrBystanders, sa("$NS", "default"), registrySecret("$NS", "gh", "docker.pkg.github.com", "ghcr.io"),
			workload("Deployment", "$NS", "private", "", "imagePullSecrets: [{name: gh}]\ncontainers: [{name: a, image: ghcr.io/acme/private:3}]\n")),
	}, {
		name:     "broken: old host in containers, init containers and a CronJob (digest kept)",
		objects:  docs(ghcrBystanders, api, report),
		plan:     map[string]module.Action{"diagnose": module.Finding, "credentials": module.NoOp, "rewrite": module.Change},
		evidence: []string{"Deployment $NS/api: docker.pkg.github.com/acme/shop/migrate:2.1, docker.pkg.github.com/acme/shop/api:1.4.2", "+      - image: ghcr.io/acme/api:1.4.2", "CronJob $NS/report"},
		absent:   []string{"$NS9"},
		changed:  []string{"Deployment $NS/api", "CronJob $NS/report"},
		check: func(k *kenv, ns map[string]string) {
			wantImages(k, "apps/v1", "Deployment", ns["$NS"], "api", "ghcr.io/acme/migrate:2.1 ghcr.io/acme/api:1.4.2 nginx:1.25", "spec", "template", "spec")
			wantImages(k, "batch/v1", "CronJob", ns["$NS"], "report", "ghcr.io/acme/report@"+ghcrDigest, "spec", "jobTemplate", "spec", "template", "spec")
		},
	}, {
		name: "--set namespace: diagnose, rewrite and verify look at that namespace only",
		objects: docs(ghcrBystanders, api,
			workload("StatefulSet", "$NS2", "db", "", "containers: [{name: db, image: docker.pkg.github.com/acme/infra/db:9}]\n")),
		sets:     []string{"namespace=$NS"},
		plan:     map[string]module.Action{"diagnose": module.Finding, "rewrite": module.Change},
		evidence: []string{"Deployment $NS/api"},
		absent:   []string{"$NS2", "StatefulSet"},
		changed:  []string{"Deployment $NS/api"},
		check: func(k *kenv, ns map[string]string) {
			wantImages(k, "apps/v1", "StatefulSet", ns["$NS2"], "db", "docker.pkg.github.com/acme/infra/db:9", "spec", "template", "spec")
		},
	}, {
		name: "pull Secrets with old-host credentials only: warned (own and ServiceAccount's), never edited",
		objects: docs(ghcrBystanders, registrySecret("$NS", "gh-old", "docker.pkg.github.com"), registrySecret("$NS", "gh-both", "docker.pkg.github.com", "ghcr.io"),
			sa("$NS", "default"), sa("$NS", "builder", "gh-both"), sa("$NS", "runner", "gh-old"),
			workload("Deployment", "$NS", "priv", "", "imagePullSecrets: [{name: gh-old}]\ncontainers: [{name: a, image: docker.pkg.github.com/acme/shop/priv:1}]\n"),
			workload("Deployment", "$NS", "built", "", "serviceAccountName: builder\ncontainers: [{name: a, image: docker.pkg.github.com/acme/shop/built:1}]\n"),
			workload("Deployment", "$NS", "ran", "", "serviceAccountName: runner\ncontainers: [{name: a, image: ghcr.io/acme/ran:1}]\n")),
		plan:     map[string]module.Action{"diagnose": module.Finding, "credentials": module.Finding, "rewrite": module.Change},
		evidence: []string{"Deployment $NS/priv: pull Secret(s) gh-old have credentials for docker.pkg.github.com and none for ghcr.io", "Deployment $NS/ran: pull Secret(s) gh-old"},
		absent:   []string{"Deployment $NS/built: pull", "Z2gtdXNlcjpnaHBfVG9rZW5WYWx1ZTEyMzQ1Ng"},
		changed:  []string{"Deployment $NS/priv", "Deployment $NS/built"},
		after:    map[string]module.Action{"diagnose": module.NoOp, "credentials": module.Finding, "rewrite": module.NoOp},
		secrets:  []string{"ghp_TokenValue123456"},
	}, {
		name: "partly fixed: one workload rewritten by hand; an unfinished Job is reported, not patched",
		objects: docs(ghcrBystanders,
			workload("Deployment", "$NS", "done", "", "containers: [{name: a, image: ghcr.io/acme/done:1}]\n"),
			workload("Deployment", "$NS", "todo", "", "containers: [{name: a, image: docker.pkg.github.com/acme/shop/todo:1}]\n"),
			"apiVersion: batch/v1\nkind: Job\nmetadata: {name: once, namespace: $NS}\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: a, image: docker.pkg.github.com/acme/shop/once:1}]\n"),
		plan:     map[string]module.Action{"diagnose": module.Finding, "rewrite": module.Change},
		evidence: []string{"Deployment $NS/todo", "Job $NS/once: docker.pkg.github.com/acme/shop/once:1 (a Job's template is immutable: re-create it)"},
		absent:   []string{"Deployment $NS/done"},
		changed:  []string{"Deployment $NS/todo"},
		after:    map[string]module.Action{"diagnose": module.Finding, "rewrite": module.NoOp},
	}})
}
