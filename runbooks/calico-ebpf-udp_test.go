package runbooks_test

import (
	"context"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"nksrun/engine/module"
	"nksrun/engine/plans"
)

// calicoNode seeds DaemonSet kube-system/calico-node with the given env on
// its calico-node container.
func calicoNode(k *kenv, tag, env string) {
	pod := "initContainers:\n" +
		"- {name: install-cni, image: harbor-kr1.cloud.toast.com/nks/calico/cni:" + tag + "}\n" +
		"- {name: mount-bpffs, image: harbor-kr1.cloud.toast.com/nks/calico/node:" + tag + "}\n" +
		"containers:\n- name: calico-node\n  image: harbor-kr1.cloud.toast.com/nks/calico/node:" + tag + "\n"
	if env != "" {
		pod += "  env:\n" + indent(env, 2)
	}
	k.create(workload("DaemonSet", "kube-system", "calico-node", "labels: {k8s-app: calico-node}\n", pod))
}

func containerEnv(o *unstructured.Unstructured, container string) map[string]string {
	cs, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
	out := map[string]string{}
	for _, c := range cs {
		m := c.(map[string]any)
		if m["name"] != container {
			continue
		}
		env, _ := m["env"].([]any)
		for _, e := range env {
			em := e.(map[string]any)
			v, _ := em["value"].(string)
			out[em["name"].(string)] = v
		}
	}
	return out
}

func e2eCalicoEBPFUDP(k *kenv) {
	_, p := k.plan("calico-ebpf-udp")
	nothingToDo(k, p) // no calico at all

	// iptables mode: nothing to do either.
	calicoNode(k, "v3.28.2", "- {name: FELIX_BPFENABLED, value: \"false\"}\n")
	_, p = k.plan("calico-ebpf-udp")
	nothingToDo(k, p)
	wantActions(k, p, map[string]module.Action{"env": module.Skip})
	k.res("apps/v1", "DaemonSet", "kube-system").Delete(context.Background(), "calico-node", metav1.DeleteOptions{})

	calicoNode(k, "v3.28.2", "- {name: FELIX_BPFENABLED, value: \"true\"}\n- {name: FELIX_BPFCONNECTTIMELOADBALANCING, value: Disabled}\n")
	path, p := k.plan("calico-ebpf-udp")
	wantActions(k, p, map[string]module.Action{"diagnose": module.Finding, "env": module.Change})
	d := steps(k, p)["env"].Diff
	for _, want := range []string{"           value: \"true\"", "+          value: Enabled", "+        - name: FELIX_BPFHOSTNETWORKEDNATWITHOUTCTLB"} {
		if !strings.Contains(d, want) {
			k.t.Errorf("diff lacks %q:\n%s", want, d)
		}
	}
	r, code := k.apply(path)
	appliedOK(k, r, code)
	env := containerEnv(k.get("apps/v1", "DaemonSet", "kube-system", "calico-node"), "calico-node")
	if env["FELIX_BPFCONNECTTIMELOADBALANCING"] != "Enabled" || env["FELIX_BPFHOSTNETWORKEDNATWITHOUTCTLB"] != "Disabled" || env["FELIX_BPFENABLED"] != "true" || len(env) != 3 {
		k.t.Errorf("env after apply: %v", env)
	}
	_, p = k.plan("calico-ebpf-udp")
	nothingToDo(k, p)
	wantActions(k, p, map[string]module.Action{"env": module.NoOp})
}

// e2eCalicoEBPFUDPConflict changes calico-node between plan and apply: the
// apply reports a conflict and overwrites nothing.
func e2eCalicoEBPFUDPConflict(k *kenv) {
	calicoNode(k, "v3.28.2", "- {name: FELIX_BPFENABLED, value: \"true\"}\n")
	path, p := k.plan("calico-ebpf-udp")
	wantActions(k, p, map[string]module.Action{"env": module.Change})

	// Someone edits the DaemonSet in between (kubectl edit).
	ri := k.res("apps/v1", "DaemonSet", "kube-system")
	o := k.get("apps/v1", "DaemonSet", "kube-system", "calico-node")
	cs, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
	cs[0].(map[string]any)["env"] = []any{map[string]any{"name": "FELIX_BPFENABLED", "value": "true"}, map[string]any{"name": "FELIX_LOGSEVERITYSCREEN", "value": "Debug"}}
	unstructured.SetNestedSlice(o.Object, cs, "spec", "template", "spec", "containers")
	if _, err := ri.Update(context.Background(), o, metav1.UpdateOptions{}); err != nil {
		k.t.Fatal(err)
	}

	r, code := k.apply(path)
	if code == 0 || len(r.Targets) == 0 || r.Targets[0].Status != plans.StatusStale {
		k.t.Fatalf("want a stale (conflict) result, got exit %d %+v", code, r.Targets)
	}
	// Re-deriving the saved plan sees the new resourceVersion before
	// anything is sent; a change after that is a conflict at the API.
	if reason := r.Targets[0].Reason; !strings.Contains(reason, "conflict") && !strings.Contains(reason, "changed since the plan") {
		k.t.Errorf("reason says neither conflict nor changed since the plan: %s", reason)
	}
	env := containerEnv(k.get("apps/v1", "DaemonSet", "kube-system", "calico-node"), "calico-node")
	if len(env) != 2 || env["FELIX_LOGSEVERITYSCREEN"] != "Debug" {
		k.t.Errorf("the concurrent edit was overwritten: %v", env)
	}
	// A fresh plan picks the new state up and applies cleanly.
	path, _ = k.plan("calico-ebpf-udp")
	r, code = k.apply(path)
	appliedOK(k, r, code)
	env = containerEnv(k.get("apps/v1", "DaemonSet", "kube-system", "calico-node"), "calico-node")
	if len(env) != 4 || env["FELIX_LOGSEVERITYSCREEN"] != "Debug" {
		k.t.Errorf("env after re-plan/apply: %v", env)
	}
}
