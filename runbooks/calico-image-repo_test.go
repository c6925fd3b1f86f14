package runbooks_test

import (
	"fmt"
	"strings"

	"nksrun/engine/module"
)

func e2eCalicoImageRepo(k *kenv) {
	_, p := k.plan("calico-image-repo")
	nothingToDo(k, p)

	calicoNode(k, "v3.26.4", "- {name: FELIX_BPFENABLED, value: \"false\"}\n")
	k.create(
		workload("Deployment", "kube-system", "calico-typha", "labels: {k8s-app: calico-typha}\n", "containers: [{name: calico-typha, image: harbor-kr1.cloud.toast.com/nks/calico/typha:v3.26.4}]\n"),
		workload("Deployment", "kube-system", "calico-kube-controllers", "labels: {k8s-app: calico-kube-controllers}\n", "containers: [{name: calico-kube-controllers, image: harbor-kr1.cloud.toast.com/nks/calico/kube-controllers:v3.26.4}]\n"),
	)
	// Healthy so far: the images come from the NKS registry but pull fine.
	_, p = k.plan("calico-image-repo")
	nothingToDo(k, p)

	k.create(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: calico-node-x7k2p, namespace: kube-system, labels: {k8s-app: calico-node}}
spec:
  containers: [{name: calico-node, image: %[1]s}]
status:
  phase: Pending
  containerStatuses:
  - {name: calico-node, image: %[1]s, imageID: "", ready: false, restartCount: 0, state: {waiting: {reason: ErrImagePull, message: "unauthorized"}}}
`, "harbor-kr1.cloud.toast.com/nks/calico/node:v3.26.4"))
	path, p := k.plan("calico-image-repo")
	wantActions(k, p, map[string]module.Action{"diagnose": module.Finding, "calico_node": module.Change, "typha": module.Change, "kube_controllers": module.Change})
	if s := steps(k, p)["calico_node"].Summary; !strings.Contains(s, "install-cni: harbor-kr1.cloud.toast.com/nks/calico/cni:v3.26.4 → calico/cni:v3.26.4") ||
		!strings.Contains(s, "mount-bpffs: harbor-kr1.cloud.toast.com/nks/calico/node:v3.26.4 → calico/node:v3.26.4") {
		k.t.Errorf("summary: %s", s)
	}
	r, code := k.apply(path)
	appliedOK(k, r, code)
	if got := strings.Join(images(k.get("apps/v1", "DaemonSet", "kube-system", "calico-node"), "spec", "template", "spec"), " "); got != "calico/cni:v3.26.4 calico/node:v3.26.4 calico/node:v3.26.4" {
		k.t.Errorf("calico-node images: %s", got)
	}
	if got := strings.Join(images(k.get("apps/v1", "Deployment", "kube-system", "calico-kube-controllers"), "spec", "template", "spec"), " "); got != "calico/kube-controllers:v3.26.4" {
		k.t.Errorf("kube-controllers images: %s", got)
	}
	// Second plan: the workloads are public now (the failing pod is still
	// there, as no controller replaces it here): nothing to do.
	_, p = k.plan("calico-image-repo")
	nothingToDo(k, p)
}
