package inventory

import (
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestUserForOS(t *testing.T) {
	tests := map[string]string{
		"CentOS Linux 7 (Core)":             "centos",
		"Rocky Linux 8.10 (Green Obsidian)": "rocky",
		"Ubuntu 22.04.4 LTS":                "ubuntu",
		"Debian GNU/Linux 12 (bookworm)":    "debian",
		"Windows Server 2019":               "",
	}
	for img, want := range tests {
		if got := UserForOS(img); got != want {
			t.Errorf("UserForOS(%q) = %q, want %q", img, got, want)
		}
	}
}

func node(name, ip string, ready bool, labels map[string]string, runtime string) *corev1.Node {
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Status: corev1.NodeStatus{
			Addresses:  []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: name}, {Type: corev1.NodeInternalIP, Address: ip}, {Type: corev1.NodeExternalIP, Address: "203.0.113.9"}},
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: st}},
			NodeInfo: corev1.NodeSystemInfo{OSImage: "Rocky Linux 8.10 (Green Obsidian)", KernelVersion: "4.18.0-553.el8_10.x86_64",
				ContainerRuntimeVersion: runtime, KubeletVersion: "v1.29.3"},
		},
	}
}

func TestFromNode(t *testing.T) {
	h := FromNode(node("c-default-w-ab12-node-0", "192.168.0.10", true, map[string]string{LabelNodeGroup: "default-worker", LabelRole: "worker"}, "containerd://1.7.13"))
	if h.Address != "192.168.0.10" || h.User != "rocky" || h.Port != 22 {
		t.Fatalf("host = %+v", h)
	}
	f := h.Facts
	if f["runtime"] != "containerd" || f["runtimeVersion"] != "1.7.13" || f["nodegroup"] != "default-worker" || f["osFamily"] != "rocky" || f["ready"] != true || f["kubelet"] != "v1.29.3" {
		t.Fatalf("facts = %v", f)
	}
	if h2 := FromNode(node("n", "10.0.0.1", false, nil, "docker://20.10.7")); h2.Ready() || h2.Facts["runtime"] != "docker" {
		t.Fatalf("NotReady docker node = %+v", h2)
	}
	if got := fmt.Sprint(f["images"]); got != "[]" {
		t.Errorf("images of a Node that reports none = %s, want []", got)
	}
	n := node("n", "10.0.0.1", true, nil, "containerd://1.7.13")
	n.Status.Images = []corev1.ContainerImage{
		{Names: []string{"docker.io/calico/node@sha256:aa", "docker.io/calico/node:v3.26.1"}, SizeBytes: 300 << 20},
		{Names: []string{"registry.k8s.io/pause:3.9"}, SizeBytes: 1 << 20},
	}
	if got := fmt.Sprint(FromNode(n).Facts["images"]); got != "[docker.io/calico/node@sha256:aa docker.io/calico/node:v3.26.1 registry.k8s.io/pause:3.9]" {
		t.Errorf("images = %s, want every name in the kubelet's order", got)
	}
}

func TestLimit(t *testing.T) {
	hosts := []Host{
		FromNode(node("c-default-w-1-node-0", "10.0.0.1", true, map[string]string{LabelNodeGroup: "default-worker"}, "docker://1")),
		FromNode(node("c-default-w-1-node-1", "10.0.0.2", true, map[string]string{LabelNodeGroup: "default-worker"}, "docker://1")),
		FromNode(node("c-gpu-w-2-node-0", "10.0.0.3", true, map[string]string{LabelNodeGroup: "gpu"}, "docker://1")),
	}
	tests := []struct {
		patterns []string
		want     []string
		err      string
	}{
		{nil, []string{"c-default-w-1-node-0", "c-default-w-1-node-1", "c-gpu-w-2-node-0"}, ""},
		{[]string{"c-gpu-w-2-node-0"}, []string{"c-gpu-w-2-node-0"}, ""},
		{[]string{"*-node-0"}, []string{"c-default-w-1-node-0", "c-gpu-w-2-node-0"}, ""},
		{[]string{"10.0.0.2"}, []string{"c-default-w-1-node-1"}, ""},
		{[]string{"magnum.openstack.org/nodegroup=default-worker"}, []string{"c-default-w-1-node-0", "c-default-w-1-node-1"}, ""},
		{[]string{"magnum.openstack.org/nodegroup!=default-worker"}, []string{"c-gpu-w-2-node-0"}, ""},
		{[]string{"magnum.openstack.org/nodegroup in (gpu,none)", "c-default-w-1-node-1"}, []string{"c-default-w-1-node-1", "c-gpu-w-2-node-0"}, ""},
		{[]string{"typo-node"}, nil, "matches no node"},
		{[]string{"[bad"}, nil, "syntax error"},
	}
	for _, tc := range tests {
		got, err := Limit(hosts, tc.patterns)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Limit(%v) error = %v, want %q", tc.patterns, err, tc.err)
			}
			continue
		}
		var names []string
		for _, h := range got {
			names = append(names, h.Name)
		}
		if err != nil || strings.Join(names, ",") != strings.Join(tc.want, ",") {
			t.Errorf("Limit(%v) = %v, %v; want %v", tc.patterns, names, err, tc.want)
		}
	}
}

func TestFromFile(t *testing.T) {
	hosts, err := FromFile("../testdata/inventory/static.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(hosts) != 2 {
		t.Fatalf("hosts = %+v", hosts)
	}
	a, b := hosts[0], hosts[1]
	if a.User != "rocky" || a.Port != 22 || a.Facts["runtime"] != "docker" || a.Facts["nodegroup"] != "default-worker" || a.Facts["static"] != true || !a.Ready() {
		t.Errorf("host a = %+v", a)
	}
	if b.User != "ubuntu" || b.Port != 2222 || b.Facts["osFamily"] != "ubuntu" {
		t.Errorf("host b (user from osImage) = %+v", b)
	}
	_, err = FromFile("../testdata/inventory/bad.yaml")
	if err == nil || !strings.Contains(err.Error(), `bad.yaml:3:5: unknown key "adress" (did you mean "address"?)`) {
		t.Errorf("bad inventory error = %v", err)
	}
}

func TestMarkSharedAddresses(t *testing.T) {
	hosts := []Host{
		{Name: "a", Address: "10.0.0.1", Port: 22},
		{Name: "b", Address: "10.0.0.2", Port: 22},
		{Name: "c", Address: "10.0.0.1", Port: 22},
		{Name: "d", Address: "10.0.0.1", Port: 2222},
		{Name: "e", Address: "", Port: 22},
		{Name: "f", Address: "", Port: 22},
	}
	MarkSharedAddresses(hosts)
	want := map[string]string{"a": "also the address of c", "c": "also the address of a"}
	for _, h := range hosts {
		if w := want[h.Name]; (w == "") != (h.Problem == "") || !strings.Contains(h.Problem, w) {
			t.Errorf("%s: problem %q, want %q", h.Name, h.Problem, w)
		}
	}
}
