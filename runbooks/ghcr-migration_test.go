package runbooks_test

import (
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

func e2eGHCRMigration(k *kenv) {
	ns := k.namespace("ghcr")
	k.create(workload("Deployment", ns, "already-fine", "", "containers: [{name: a, image: ghcr.io/acme/api:1.0}]\n"))
	_, p := k.plan("ghcr-migration")
	nothingToDo(k, p)

	k.create(
		workload("Deployment", ns, "api", "", "initContainers: [{name: migrate, image: docker.pkg.github.com/acme/shop/migrate:2.1}]\ncontainers:\n- {name: api, image: docker.pkg.github.com/acme/shop/api:1.4.2}\n- {name: sidecar, image: nginx:1.25}\n"),
		workload("CronJob", ns, "report", "", "containers: [{name: r, image: \"docker.pkg.github.com/acme/shop/report@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"}]\n"),
	)
	path, p := k.plan("ghcr-migration")
	wantActions(k, p, map[string]module.Action{"diagnose": module.Finding, "rewrite": module.Change})
	st := steps(k, p)["rewrite"]
	if !strings.Contains(st.Summary, "Deployment "+ns+"/api") || !strings.Contains(st.Summary, "CronJob "+ns+"/report") || strings.Contains(st.Summary, "already-fine (") {
		k.t.Errorf("summary: %s", st.Summary)
	}
	if !strings.Contains(st.Diff, "+      - image: ghcr.io/acme/api:1.4.2") {
		k.t.Errorf("diff:\n%s", st.Diff)
	}
	r, code := k.apply(path)
	appliedOK(k, r, code)
	got := strings.Join(images(k.get("apps/v1", "Deployment", ns, "api"), "spec", "template", "spec"), " ")
	if got != "ghcr.io/acme/migrate:2.1 ghcr.io/acme/api:1.4.2 nginx:1.25" {
		k.t.Errorf("deployment images: %s", got)
	}
	got = strings.Join(images(k.get("batch/v1", "CronJob", ns, "report"), "spec", "jobTemplate", "spec", "template", "spec"), " ")
	if got != "ghcr.io/acme/report@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" {
		k.t.Errorf("cronjob images: %s", got)
	}
	_, p = k.plan("ghcr-migration")
	nothingToDo(k, p)
}
