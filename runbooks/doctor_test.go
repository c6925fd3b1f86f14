package runbooks_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"syscall"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/restmapper"

	"nksrun/engine/module"
	"nksrun/testdata/testbed"
)

// doctorRow is one row of `nksrun doctor --format json`.
type doctorRow struct {
	Section, Runbook, Status string
	Evidence                 []string
}

var allRunbookFiles = []string{"calico-328-scale.yaml", "calico-ebpf-istio.yaml", "calico-ebpf-udp.yaml", "calico-image-repo.yaml", "cgroup-nokmem.yaml",
	"cinder-csi-rescan.yaml", "closed-network-images.yaml", "dockerhub-ratelimit.yaml", "fsgroup-policy.yaml",
	"ghcr-migration.yaml", "logrotate.yaml", "rpc-statd.yaml", "upgrade-finalizers.yaml"}

func runDoctor(t *testing.T, k *kenv) []doctorRow {
	t.Helper()
	tb := k.tb
	before := clusterState(t, tb)
	args := append([]string{"doctor", "--kubeconfig", tb.Kubeconfig, "-i", tb.KeyPath, "--known-hosts", tb.KnownHosts, "--format", "json"}, allRunbookFiles...)
	out, errs, code := k.cli(args...)
	if code != 0 {
		t.Fatalf("doctor exit %d\n%s\n%s", code, out, errs)
	}
	if after := clusterState(t, tb); after != before {
		t.Errorf("doctor changed something:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	var rows []doctorRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("doctor JSON: %v\n%s", err, out)
	}
	if len(rows) != 13 {
		t.Errorf("%d rows, want one per guide section (13)", len(rows))
	}
	for _, r := range rows {
		if r.Status == "error" {
			t.Errorf("%s (§%s): error: %v", r.Runbook, r.Section, r.Evidence)
		}
	}
	return rows
}

// diskNearlyFull: the closed-network runbook also reports a nearly full
// image-store disk; that depends on the machine running the test, so it is
// expected exactly when this machine's disk is that full.
func diskNearlyFull() bool {
	var st syscall.Statfs_t
	return syscall.Statfs("/", &st) == nil && 100*(st.Blocks-st.Bfree)/(st.Blocks-st.Bfree+st.Bavail) >= 80
}

// TestDoctor follows the contract on one testbed: on a healthy seeded
// cluster every row is "not found" or "not applicable" (the docker node
// has the logrotate config, the 3.x kernel node already boots with
// cgroup.memory=nokmem, the containerd node's kubelet sets its log limits,
// rpc-statd is inactive but nothing fails to mount — it starts on demand —,
// calico runs the public images in iptables mode, the nodes hold the
// default images). Then three problems are seeded — NFS mounts failing on
// the containerd node with rpc.statd unregistered, calico-node in eBPF mode
// without the UDP env vars, a finalizer on coredns — and doctor must report
// exactly those, changing nothing.
func TestDoctor(t *testing.T) {
	conf, err := os.ReadFile("files/docker-logrotate.conf")
	if err != nil {
		t.Fatal(err)
	}
	images := []string{"registry.k8s.io/pause:3.9", "registry.k8s.io/kube-proxy:v1.29.3"}
	kubelet := "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncontainerLogMaxSize: 10Mi\ncontainerLogMaxFiles: 5\n"
	tb := testbed.New(t, testbed.Options{Nodes: []testbed.NodeSpec{
		{OSImage: "CentOS Linux 7 (Core)", Kernel: "3.10.0-1160.el7.x86_64", Runtime: "docker://20.10.7",
			GrubCmdline: "crashkernel=auto rhgb quiet cgroup.memory=nokmem", Images: images,
			Files: map[string]string{"/etc/logrotate.d/docker": string(conf)}},
		{OSImage: "Ubuntu 22.04.4 LTS", Kernel: "5.15.0-113-generic", Runtime: "containerd://1.7.13", Images: images,
			Units: map[string]bool{"rpcbind": true, "rpc-statd": false}, Files: map[string]string{"/etc/kubernetes/kubelet-config.yaml": kubelet}},
	}})
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(tb.Client.Discovery()))
	k := &kenv{t: t, tb: tb, c: &module.Cluster{Clientset: tb.Client, Dynamic: tb.Dynamic, Mapper: mapper}, dir: t.TempDir(), all: &bytes.Buffer{}}
	calico := k.create(workload("DaemonSet", "kube-system", "calico-node", "labels: {k8s-app: calico-node}\n",
		"initContainers:\n- {name: install-cni, image: calico/cni:v3.28.2}\ncontainers:\n- name: calico-node\n  image: calico/node:v3.28.2\n  env:\n  - {name: FELIX_BPFENABLED, value: \"false\"}\n"))[0]
	coredns := k.create(workload("Deployment", "kube-system", "coredns", "",
		"containers:\n- {name: coredns, image: coredns/coredns:1.11.1}\n"))[0]

	want := map[string]bool{}
	if diskNearlyFull() {
		want["closed-network-images"] = true
	}
	for _, r := range runDoctor(t, k) {
		if r.Status != "not found" && r.Status != "not applicable" && !want[r.Runbook] {
			t.Errorf("healthy cluster: %s (§%s) is %q: %v", r.Runbook, r.Section, r.Status, r.Evidence)
		}
	}

	// The three problems.
	ctx := context.Background()
	calico.Object["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)["env"] =
		[]any{map[string]any{"name": "FELIX_BPFENABLED", "value": "true"}}
	if _, err := k.res("apps/v1", "DaemonSet", "kube-system").Update(ctx, calico, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	coredns.SetFinalizers([]string{"nks.example/protect"})
	if _, err := k.res("apps/v1", "Deployment", "kube-system").Update(ctx, coredns, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	k.create(fmt.Sprintf("apiVersion: v1\nkind: Event\nmetadata: {name: nas-client.1, namespace: default}\ninvolvedObject: {kind: Pod, namespace: default, name: nas-client}\n"+
		"reason: FailedMount\ntype: Warning\nsource: {component: kubelet, host: %s}\n"+
		"message: 'MountVolume.SetUp failed for volume \"nas\" : mount failed: exit status 32 Output: mount.nfs: rpc.statd is not running but is required for remote locking.'\n", tb.Nodes[1].Name))

	want["rpc-statd"], want["calico-ebpf-udp"], want["upgrade-finalizers"] = true, true, true
	var found []string
	for _, r := range runDoctor(t, k) {
		if r.Status == "found" {
			found = append(found, r.Runbook)
			if !want[r.Runbook] {
				t.Errorf("%s (§%s) found on a cluster without that problem: %v", r.Runbook, r.Section, r.Evidence)
			}
		}
		if r.Runbook == "rpc-statd" && !strings.Contains(strings.Join(r.Evidence, " "), tb.Nodes[1].Name) {
			t.Errorf("rpc-statd evidence does not name the node: %v", r.Evidence)
		}
	}
	sort.Strings(found)
	for name := range want {
		if !strings.Contains(strings.Join(found, ","), name) {
			t.Errorf("seeded problem %s not found (found: %v)", name, found)
		}
	}
	if !tb.Nodes[1].UnitActive("rpcbind") || tb.Nodes[1].UnitActive("rpc-statd") {
		t.Errorf("doctor changed unit states")
	}
	// The text view is one table.
	text, _, code := k.cli("doctor", "--kubeconfig", tb.Kubeconfig, "-i", tb.KeyPath, "--known-hosts", tb.KnownHosts, "rpc-statd.yaml", "logrotate.yaml")
	if code != 0 || !strings.Contains(text, "SECTION") || !strings.Contains(text, "found") || !strings.Contains(text, "nksrun apply") {
		t.Errorf("doctor text:\n%s", text)
	}
}
