package runbooks_test

import (
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"nksrun/engine/module"
)

const mountTimeout = "Unable to attach or mount volumes: unmounted volumes=[data], unattached volumes=[data kube-api-access-x]: timed out waiting for the condition"

// ownedPod is a pod owned (controller) by kind/owner, with a Warning event
// (mount timeout) or a Normal one.
func ownedPod(ns, name, kind, owner string, timedOut bool) string {
	p := fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata:\n  name: %s\n  namespace: %s\n  ownerReferences: [{apiVersion: apps/v1, kind: %s, name: %s, uid: 1b4e28ba-2fa1-11d2-883f-0016d3cca427, controller: true}]\nspec: {containers: [{name: c, image: postgres:16}]}\n",
		name, ns, kind, owner)
	if timedOut {
		return docs(p, ev(ns, name, "Warning", "FailedMount", mountTimeout))
	}
	return docs(p, ev(ns, name, "Normal", "Started", "Started container c"))
}

// deployment with its ReplicaSet and one pod.
func fsDeployment(ns, name, podSpec string, timedOut bool) string {
	rs := fmt.Sprintf(`apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: %s-5d9f7
  namespace: %s
  ownerReferences: [{apiVersion: apps/v1, kind: Deployment, name: %s, uid: 2c5f39cb-2fa1-11d2-883f-0016d3cca427, controller: true}]
spec:
  selector: {matchLabels: {app: %s}}
  template:
    metadata: {labels: {app: %s}}
    spec: {containers: [{name: c, image: postgres:16}]}
`, name, ns, name, name, name)
	return docs(workload("Deployment", ns, name, "", podSpec), rs, ownedPod(ns, name+"-5d9f7-x2v9q", "ReplicaSet", name+"-5d9f7", timedOut))
}

const (
	fsPVC    = "volumes: [{name: data, persistentVolumeClaim: {claimName: data}}]\ncontainers: [{name: c, image: postgres:16, volumeMounts: [{name: data, mountPath: /data}]}]\n"
	fsGroup  = "securityContext: {fsGroup: 999}\n" + fsPVC
	fsPolicy = "securityContext: {fsGroup: 999, fsGroupChangePolicy: OnRootMismatch}\n" + fsPVC
)

func wantPolicy(kind, name, want string) func(k *kenv, ns map[string]string) {
	return func(k *kenv, ns map[string]string) {
		v, _, _ := unstructured.NestedString(k.get("apps/v1", kind, ns["$NS"], name).Object, "spec", "template", "spec", "securityContext", "fsGroupChangePolicy")
		if v != want {
			k.t.Errorf("%s %s: fsGroupChangePolicy %q, want %q", kind, name, v, want)
		}
	}
}

// Bystanders: a workload that chose Always, one without fsGroup, one
// without volumes, all with mount timeouts; one matching the template
// condition without a timeout; an affected workload in another namespace.
var fsBystanders = docs(
	fsDeployment("$NS", "explicit", "securityContext: {fsGroup: 999, fsGroupChangePolicy: Always}\n"+fsPVC, true),
	fsDeployment("$NS", "nofs", fsPVC, true),
	fsDeployment("$NS", "novol", "securityContext: {fsGroup: 999}\ncontainers: [{name: c, image: postgres:16}]\n", true),
	fsDeployment("$NS", "cache", fsGroup, false),
	workload("StatefulSet", "$NS2", "elsewhere", "", fsGroup), ownedPod("$NS2", "elsewhere-0", "StatefulSet", "elsewhere", true),
)

func e2eFSGroupPolicy(k *kenv) {
	db := docs(workload("StatefulSet", "$NS", "db", "", fsGroup), ownedPod("$NS", "db-0", "StatefulSet", "db", true))
	runCases(k, "fsgroup-policy", []rbCase{{
		name:    "healthy: fsGroup with volumes but no mount timeout",
		objects: docs(workload("StatefulSet", "$NS", "db", "", fsGroup), ownedPod("$NS", "db-0", "StatefulSet", "db", false), fsDeployment("$NS", "explicit", "securityContext: {fsGroup: 999, fsGroupChangePolicy: Always}\n"+fsPVC, true)),
		sets:    []string{"namespace=$NS"},
	}, {
		name:    "broken: mount timeouts; the plan names the workloads that will roll, StatefulSets included",
		objects: docs(fsBystanders, db, fsDeployment("$NS", "web", fsGroup, true)),
		sets:    []string{"namespace=$NS"},
		plan:    map[string]module.Action{"diagnose": module.Finding, "statefulsets": module.Change, "deployments": module.Change, "daemonsets": module.NoOp},
		evidence: []string{"StatefulSet $NS/db: fsGroup 999; pod $NS/db-0: FailedMount: " + mountTimeout + "; will roll when applied: pods replaced one at a time, highest ordinal first",
			"Deployment $NS/web: fsGroup 999; pod $NS/web-5d9f7-x2v9q: FailedMount", "patch StatefulSet $NS/db", "patch Deployment $NS/web"},
		absent:  []string{"explicit", "nofs", "novol", "cache", "$NS2"},
		changed: []string{"StatefulSet $NS/db", "Deployment $NS/web"},
		check:   wantPolicy("StatefulSet", "db", "OnRootMismatch"),
	}, {
		name:     "without a namespace: reported cluster-wide, nothing patched",
		objects:  docs(fsBystanders, db),
		plan:     map[string]module.Action{"diagnose": module.Finding, "statefulsets": module.Skip, "deployments": module.Skip},
		evidence: []string{"StatefulSet $NS/db", "StatefulSet $NS2/elsewhere"},
		absent:   []string{"will roll"},
		after:    map[string]module.Action{"diagnose": module.Finding, "statefulsets": module.Skip},
	}, {
		name:     "partly fixed: the StatefulSet was patched by hand",
		objects:  docs(fsBystanders, workload("StatefulSet", "$NS", "db", "", fsPolicy), ownedPod("$NS", "db-0", "StatefulSet", "db", true), fsDeployment("$NS", "web", fsGroup, true)),
		sets:     []string{"namespace=$NS"},
		plan:     map[string]module.Action{"diagnose": module.Finding, "statefulsets": module.NoOp, "deployments": module.Change},
		evidence: []string{"Deployment $NS/web"},
		absent:   []string{"StatefulSet $NS/db"},
		changed:  []string{"Deployment $NS/web"},
	}, {
		name:     "preventive: also the matching workloads without a timeout, in the namespace only",
		objects:  docs(fsBystanders),
		sets:     []string{"namespace=$NS", "preventive=true"},
		plan:     map[string]module.Action{"diagnose": module.Finding, "deployments": module.Change, "statefulsets": module.NoOp},
		evidence: []string{"Deployment $NS/cache: fsGroup 999; no mount timeout yet (preventive); will roll when applied"},
		absent:   []string{"explicit", "nofs", "novol", "$NS2"},
		changed:  []string{"Deployment $NS/cache"},
		check:    wantPolicy("Deployment", "cache", "OnRootMismatch"),
	}})
}
