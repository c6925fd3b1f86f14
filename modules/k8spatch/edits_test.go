package k8spatch

import (
	"encoding/base64"
	"encoding/json"
	"nksrun/testdata/golden"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"nksrun/modules/kubeutil"
)

func obj(t *testing.T, js string) *unstructured.Unstructured {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(js), &m); err != nil {
		t.Fatal(err)
	}
	return &unstructured.Unstructured{Object: m}
}

const calicoNode = `{"apiVersion":"apps/v1","kind":"DaemonSet","metadata":{"name":"calico-node","namespace":"kube-system"},
"spec":{"template":{"spec":{
 "initContainers":[{"name":"install-cni","image":"calico/cni:v3.28.0"},{"name":"mount-bpffs","image":"calico/node:v3.28.0"}],
 "containers":[{"name":"calico-node","image":"calico/node:v3.28.0","env":[
   {"name":"FELIX_BPFENABLED","value":"true"},
   {"name":"FELIX_BPFCONNECTTIMELOADBALANCING","valueFrom":{"configMapKeyRef":{"name":"x","key":"y"}}},
   {"name":"OBSOLETE","value":"1"}]}]}}}}`

func TestEnvPatch(t *testing.T) {
	set := map[string]string{"FELIX_BPFCONNECTTIMELOADBALANCING": "Enabled", "FELIX_BPFHOSTNETWORKEDNATWITHOUTCTLB": "Disabled"}
	for _, tc := range []struct {
		name  string
		obj   string
		edits []EnvEdit
		want  string // golden file, "" = no patch
	}{
		{"set-and-unset", calicoNode, []EnvEdit{{Container: "calico-node", Set: set, Unset: []string{"OBSOLETE"}}}, "calico-ebpf-udp-env-patch.golden"},
		{"no-env-yet", `{"kind":"DaemonSet","spec":{"template":{"spec":{"containers":[{"name":"calico-node"}]}}}}`,
			[]EnvEdit{{Container: "calico-node", Set: set}}, "calico-ebpf-udp-env-patch-new.golden"},
		{"already-set", `{"kind":"DaemonSet","spec":{"template":{"spec":{"containers":[{"name":"calico-node","env":[
			{"name":"FELIX_BPFCONNECTTIMELOADBALANCING","value":"Enabled"},{"name":"FELIX_BPFHOSTNETWORKEDNATWITHOUTCTLB","value":"Disabled"}]}]}}}}`,
			[]EnvEdit{{Container: "calico-node", Set: set, Unset: []string{"ABSENT"}}}, ""},
		{"other-container", calicoNode, []EnvEdit{{Container: "nope", Set: set}}, ""},
		{"cronjob", `{"kind":"CronJob","spec":{"jobTemplate":{"spec":{"template":{"spec":{"containers":[{"name":"a","env":[]}]}}}}}}`,
			[]EnvEdit{{Container: "*", Set: map[string]string{"A": "1"}}}, "calico-ebpf-udp-env-patch-cronjob.golden"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := EnvPatch(obj(t, tc.obj), tc.edits)
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == "" {
				if p != nil {
					t.Fatalf("want no patch, got %s", p.Body)
				}
				return
			}
			if p == nil {
				t.Fatal("want a patch, got none")
			}
			var pretty any
			_ = json.Unmarshal(p.Body, &pretty)
			b, _ := json.MarshalIndent(pretty, "", "  ")
			golden.Assert(t, tc.want, []byte(p.What+"\n"+string(b)+"\n"))
		})
	}
}

func TestFinalizersPatch(t *testing.T) {
	p, err := FinalizersPatch(obj(t, `{"kind":"ConfigMap","metadata":{"name":"a","finalizers":["example.com/x"]}}`))
	if err != nil || p == nil {
		t.Fatalf("%v %v", p, err)
	}
	if got := string(p.Body); got != `[{"op":"test","path":"/metadata/finalizers","value":["example.com/x"]},{"op":"remove","path":"/metadata/finalizers"}]` {
		t.Errorf("patch %s", got)
	}
	// Kubernetes' own finalizers stay; only the others go.
	p, err = FinalizersPatch(obj(t, `{"kind":"Service","metadata":{"name":"a","finalizers":["service.kubernetes.io/load-balancer-cleanup","example.com/x"]}}`))
	if err != nil || p == nil {
		t.Fatalf("%v %v", p, err)
	}
	if got := string(p.Body); got != `[{"op":"test","path":"/metadata/finalizers","value":["service.kubernetes.io/load-balancer-cleanup","example.com/x"]},{"op":"replace","path":"/metadata/finalizers","value":["service.kubernetes.io/load-balancer-cleanup"]}]` {
		t.Errorf("patch %s", got)
	}
	for _, js := range []string{`{"kind":"ConfigMap","metadata":{"name":"a"}}`, `{"kind":"ConfigMap","metadata":{"name":"a","finalizers":[]}}`,
		`{"kind":"Service","metadata":{"name":"a","finalizers":["service.kubernetes.io/load-balancer-cleanup"]}}`,
		`{"kind":"PersistentVolumeClaim","metadata":{"name":"a","finalizers":["kubernetes.io/pvc-protection","foregroundDeletion","orphan"]}}`} {
		if p, _ := FinalizersPatch(obj(t, js)); p != nil {
			t.Errorf("%s: want no patch, got %s", js, p.Body)
		}
	}
}

func TestINIPatchSecretKeepsValuesOutOfWhat(t *testing.T) {
	doc := base64.StdEncoding.EncodeToString([]byte(nksCloudConfig))
	o := obj(t, `{"apiVersion":"v1","kind":"Secret","metadata":{"name":"cinder-csi-cloud-config","namespace":"kube-system"},"data":{"cloud-config":"`+doc+`"}}`)
	e := INIEdit{Key: "cloud-config", Section: "BlockStorage", Set: map[string]string{"rescan-on-resize": "true"}}
	p, err := INIPatch(o, e)
	if err != nil || p == nil {
		t.Fatalf("%v %v", p, err)
	}
	if strings.Contains(p.What, "Sup3rS3cret") || strings.Contains(p.What, "nks-user") {
		t.Errorf("What leaks: %s", p.What)
	}
	var ops []kubeutil.Op
	_ = json.Unmarshal(p.Body, &ops)
	dec, _ := base64.StdEncoding.DecodeString(ops[0].Value.(string))
	if ops[0].Path != "/data/cloud-config" || !strings.HasSuffix(string(dec), "\n[BlockStorage]\nrescan-on-resize=true\n") {
		t.Errorf("ops %+v: %s", ops, dec)
	}
	// Applying the patch result again is a no-op.
	o.Object["data"].(map[string]any)["cloud-config"] = ops[0].Value
	if p, _ := INIPatch(o, e); p != nil {
		t.Errorf("second edit: %s", p.What)
	}
}
