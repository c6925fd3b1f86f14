package runbooks_test

import (
	"context"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"nksrun/engine/module"
	"nksrun/engine/plans"
)

// calicoDS is DaemonSet ns/calico-node (YAML) with calico-node's env
// (YAML list items) and envFrom.
func calicoDS(ns, image, env, envFrom string) string {
	pod := "initContainers:\n" +
		"- {name: install-cni, image: harbor-kr1.cloud.toast.com/nks/calico/cni:v3.28.2}\n" +
		"containers:\n- name: calico-node\n  image: " + image + "\n"
	if env != "" {
		pod += "  env:\n" + indent(env, 2)
	}
	if envFrom != "" {
		pod += "  envFrom:\n" + indent(envFrom, 2)
	}
	return workload("DaemonSet", ns, "calico-node", "labels: {k8s-app: calico-node}\n", pod)
}

func calicoImage(tag string) string { return "harbor-kr1.cloud.toast.com/nks/calico/node:" + tag }

// calicoNode seeds DaemonSet kube-system/calico-node with the given env on
// its calico-node container.
func calicoNode(k *kenv, tag, env string) {
	pod := "initContainers:\n" +
		"- {name: install-cni, image: harbor-kr1.cloud.toast.com/nks/calico/cni:" + tag + "}\n" +
		"- {name: mount-bpffs, image: harbor-kr1.cloud.toast.com/nks/calico/node:" + tag + "}\n" +
		"containers:\n- name: calico-node\n  image: " + calicoImage(tag) + "\n"
	if env != "" {
		pod += "  env:\n" + indent(env, 2)
	}
	k.create(workload("DaemonSet", "kube-system", "calico-node", "labels: {k8s-app: calico-node}\n", pod))
}

const (
	bpfOn     = "- {name: FELIX_BPFENABLED, value: \"true\"}\n"
	udpOK     = "- {name: FELIX_BPFCONNECTTIMELOADBALANCING, value: Enabled}\n- {name: FELIX_BPFHOSTNETWORKEDNATWITHOUTCTLB, value: Disabled}\n"
	calicoCRD = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: %[2]s.%[1]s}
spec:
  group: %[1]s
  scope: Cluster
  names: {plural: %[2]s, singular: %[3]s, kind: %[4]s, listKind: %[4]sList}
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
`
)

func felixConfig(name, spec string) string {
	return "apiVersion: crd.projectcalico.org/v1\nkind: FelixConfiguration\nmetadata: {name: " + name + "}\nspec: " + spec + "\n"
}

// Bystanders of the Calico cases: another DaemonSet in kube-system and a ConfigMap.
var calicoBystanders = docs(
	workload("DaemonSet", "kube-system", "node-exporter", "", "containers: [{name: e, image: prom/node-exporter:v1.8.0, env: [{name: FELIX_BPFENABLED, value: \"true\"}]}]\n"),
	"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app-settings, namespace: kube-system}\ndata: {FELIX_BPFENABLED: \"true\"}\n",
)

// calicoCRDs installs the FelixConfiguration and Installation CRDs (once
// per testbed) and the calico-system namespace of operator installs.
func calicoCRDs(k *kenv) {
	k.t.Helper()
	ctx := context.Background()
	for _, crd := range []string{
		sprintf(calicoCRD, "crd.projectcalico.org", "felixconfigurations", "felixconfiguration", "FelixConfiguration"),
		sprintf(calicoCRD, "operator.tigera.io", "installations", "installation", "Installation"),
		"apiVersion: v1\nkind: Namespace\nmetadata: {name: calico-system}\n",
	} {
		u := mustYAML(k, crd)
		if _, err := k.res(u.GetAPIVersion(), u.GetKind(), "").Create(ctx, u, metav1.CreateOptions{}); err != nil && !strings.Contains(err.Error(), "already exists") {
			k.t.Fatal(err)
		}
	}
	// Bounded wait for the API server to serve the new kinds.
	deadline := time.Now().Add(60 * time.Second)
	for {
		if r, ok := k.c.Mapper.(interface{ Reset() }); ok {
			r.Reset()
		}
		_, err1 := k.c.Resource("crd.projectcalico.org/v1", "FelixConfiguration", "")
		_, err2 := k.c.Resource("operator.tigera.io/v1", "Installation", "")
		if err1 == nil && err2 == nil {
			return
		}
		if time.Now().After(deadline) {
			k.t.Fatalf("CRDs not served: %v %v", err1, err2)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func e2eCalicoEBPFUDP(k *kenv) {
	dsChanged := []string{"DaemonSet kube-system/calico-node"}
	fix := map[string]module.Action{"diagnose": module.Finding, "upgrade": module.NoOp, "env": module.Change, "felixconfig": module.Skip}
	envCheck := func(want map[string]string) func(k *kenv, _ map[string]string) {
		return func(k *kenv, _ map[string]string) {
			env := containerEnv(k.get("apps/v1", "DaemonSet", "kube-system", "calico-node"), "calico-node")
			for n, v := range want {
				if env[n] != v {
					k.t.Errorf("env %s=%q, want %q (%v)", n, env[n], v, env)
				}
			}
		}
	}
	// Without the Calico CRDs (the optional facts read as nothing).
	runCases(k, "calico-ebpf-udp", []rbCase{{
		name:    "healthy: no calico, no CRDs",
		objects: calicoBystanders,
	}, {
		name:    "healthy: iptables mode",
		objects: docs(calicoBystanders, calicoDS("kube-system", calicoImage("v3.28.2"), "- {name: FELIX_BPFENABLED, value: \"false\"}\n", "")),
	}, {
		name:     "broken: eBPF by env value, one setting wrong",
		objects:  docs(calicoBystanders, calicoDS("kube-system", calicoImage("v3.28.2"), bpfOn+"- {name: FELIX_BPFCONNECTTIMELOADBALANCING, value: Disabled}\n", "")),
		plan:     fix,
		evidence: []string{"FELIX_BPFENABLED=true (env)", "effective BPFConnectTimeLoadBalancing: Disabled", "+          value: Enabled", "+        - name: FELIX_BPFHOSTNETWORKEDNATWITHOUTCTLB"},
		changed:  dsChanged,
		check:    envCheck(map[string]string{"FELIX_BPFCONNECTTIMELOADBALANCING": "Enabled", "FELIX_BPFHOSTNETWORKEDNATWITHOUTCTLB": "Disabled", "FELIX_BPFENABLED": "true"}),
	}, {
		name: "broken: eBPF from a ConfigMap reference (True)",
		objects: docs(calicoBystanders, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: calico-config, namespace: kube-system}\ndata: {bpf_enabled: \"True\"}\n",
			calicoDS("kube-system", calicoImage("v3.29.1"), "- name: FELIX_BPFENABLED\n  valueFrom: {configMapKeyRef: {name: calico-config, key: bpf_enabled}}\n", "")),
		plan:     fix,
		evidence: []string{"FELIX_BPFENABLED=True (ConfigMap calico-config key bpf_enabled)"},
		changed:  dsChanged,
	}, {
		name: "broken: eBPF from envFrom a ConfigMap",
		objects: docs(calicoBystanders, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: felix-env, namespace: kube-system}\ndata: {FELIX_BPFENABLED: \"1\"}\n",
			calicoDS("kube-system", calicoImage("v3.28.2"), "", "- configMapRef: {name: felix-env}\n")),
		plan:     fix,
		evidence: []string{"FELIX_BPFENABLED=1 (ConfigMap felix-env (envFrom))"},
		changed:  dsChanged,
	}, {
		name:     "partly fixed: one setting already there, only the other is added",
		objects:  docs(calicoBystanders, calicoDS("kube-system", calicoImage("v3.28.2"), bpfOn+"- {name: FELIX_BPFCONNECTTIMELOADBALANCING, value: Enabled}\n", "")),
		plan:     fix,
		evidence: []string{"calico-node: add FELIX_BPFHOSTNETWORKEDNATWITHOUTCTLB"},
		absent:   []string{"set FELIX_BPFCONNECTTIMELOADBALANCING"},
		changed:  dsChanged,
	}, {
		name:     "Calico older than v3.27: an upgrade is reported, nothing patched",
		objects:  docs(calicoBystanders, calicoDS("kube-system", calicoImage("v3.24.1"), bpfOn, "")),
		plan:     map[string]module.Action{"diagnose": module.NoOp, "upgrade": module.Finding, "env": module.Skip},
		evidence: []string{"Calico v3.24.1 in eBPF mode", "exist from v3.27 on; upgrade Calico"},
		after:    map[string]module.Action{"upgrade": module.Finding, "env": module.Skip},
	}, {
		name:     "unknown: the ConfigMap FELIX_BPFENABLED refers to is missing",
		objects:  docs(calicoBystanders, calicoDS("kube-system", calicoImage("v3.28.2"), "- name: FELIX_BPFENABLED\n  valueFrom: {configMapKeyRef: {name: gone, key: bpf}}\n", "")),
		plan:     map[string]module.Action{"diagnose": module.Unknown, "env": module.Skip},
		evidence: []string{"ConfigMap kube-system/gone key bpf not found"},
		after:    map[string]module.Action{"diagnose": module.Unknown, "env": module.Skip},
	}, {
		name:     "unknown: calico-node pinned by digest, version unreadable",
		objects:  docs(calicoBystanders, calicoDS("kube-system", "calico/node@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", bpfOn, "")),
		plan:     map[string]module.Action{"diagnose": module.Unknown, "upgrade": module.NoOp, "env": module.Skip},
		evidence: []string{"Calico version cannot be read"},
		after:    map[string]module.Action{"diagnose": module.Unknown, "env": module.Skip},
	}})

	calicoCRDs(k)
	runCases(k, "calico-ebpf-udp", []rbCase{{
		name:     "broken: eBPF from FelixConfiguration default",
		objects:  docs(calicoBystanders, felixConfig("default", "{bpfEnabled: true, logSeverityScreen: Info}"), calicoDS("kube-system", calicoImage("v3.28.2"), "- {name: FELIX_HEALTHENABLED, value: \"true\"}\n", "")),
		plan:     fix,
		evidence: []string{"FelixConfiguration default: bpfEnabled: true"},
		changed:  dsChanged,
	}, {
		name: "healthy: settings effective through FelixConfiguration",
		objects: docs(calicoBystanders, felixConfig("default", "{bpfEnabled: true, bpfConnectTimeLoadBalancing: Enabled, bpfHostNetworkedNATWithoutCTLB: Disabled}"),
			calicoDS("kube-system", calicoImage("v3.28.2"), "", "")),
	}, {
		name:    "healthy: env false overrides FelixConfiguration bpfEnabled (Felix reads env first)",
		objects: docs(calicoBystanders, felixConfig("default", "{bpfEnabled: true}"), calicoDS("kube-system", calicoImage("v3.28.2"), "- {name: FELIX_BPFENABLED, value: \"false\"}\n", "")),
	}, {
		name: "unknown: credentials that may not list FelixConfigurations, and the env does not decide",
		objects: docs(calicoBystanders, felixConfig("default", "{bpfEnabled: true}"),
			calicoDS("kube-system", calicoImage("v3.28.2"), "- {name: FELIX_HEALTHENABLED, value: \"true\"}\n", "")),
		as: `- {apiGroups: [""], resources: [nodes, configmaps], verbs: [get, list]}
- {apiGroups: [apps], resources: [daemonsets], verbs: [get, list]}
- {apiGroups: [operator.tigera.io], resources: [installations], verbs: [get, list]}
`,
		plan:     map[string]module.Action{"diagnose": module.Unknown, "env": module.Skip, "felixconfig": module.Skip},
		evidence: []string{"FelixConfigurations (crd.projectcalico.org) cannot be listed with these credentials (forbidden)"},
		after:    map[string]module.Action{"diagnose": module.Unknown, "env": module.Skip},
	}, {
		name: "operator install: FelixConfiguration default is patched, calico-node is not",
		objects: docs(calicoBystanders,
			"apiVersion: operator.tigera.io/v1\nkind: Installation\nmetadata: {name: default}\nspec: {calicoNetwork: {linuxDataplane: BPF}}\n",
			felixConfig("default", "{logSeverityScreen: Info}"),
			calicoDS("calico-system", "quay.io/calico/node:v3.28.2", "- {name: FELIX_HEALTHENABLED, value: \"true\"}\n", "")),
		plan:     map[string]module.Action{"diagnose": module.Finding, "env": module.Skip, "felixconfig": module.Change},
		evidence: []string{"Installation default: calicoNetwork.linuxDataplane: BPF", "operator install: FelixConfiguration default is patched"},
		changed:  []string{"FelixConfiguration default"},
	}})
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

// e2eCalicoEBPFUDPConflict changes calico-node between plan and apply: the
// apply reports a conflict and overwrites nothing.
func e2eCalicoEBPFUDPConflict(k *kenv) {
	calicoNode(k, "v3.28.2", bpfOn)
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
