package runbooks_test

import (
	"bytes"
	"encoding/json"
	"os"
	"sort"
	"strings"
	"syscall"
	"testing"

	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/restmapper"

	"nksrun/engine/module"
	"nksrun/testdata/testbed"
)

// TestDoctorReportsSeededProblems seeds a cluster whose only problems are
// an inactive rpc-statd on one node, calico-node v3.24.1 in eBPF mode (too
// old for the §9 UDP settings: the row must say to upgrade Calico, not to
// apply a patch that would roll calico-node for variables Felix ignores),
// and a finalizer on coredns; everything else is healthy
// (the docker node has the logrotate config, the 3.x kernel node already
// boots with cgroup.memory=nokmem, the nodes hold the default images).
// `nksrun doctor` must report exactly those three and change nothing.
func TestDoctorReportsSeededProblems(t *testing.T) {
	conf, err := os.ReadFile("files/docker-logrotate.conf")
	if err != nil {
		t.Fatal(err)
	}
	images := []string{"registry.k8s.io/pause:3.9", "registry.k8s.io/kube-proxy:v1.29.3"}
	tb := testbed.New(t, testbed.Options{Nodes: []testbed.NodeSpec{
		{OSImage: "CentOS Linux 7 (Core)", Kernel: "3.10.0-1160.el7.x86_64", Runtime: "docker://20.10.7",
			GrubCmdline: "crashkernel=auto rhgb quiet cgroup.memory=nokmem", Images: images,
			Files: map[string]string{"/etc/logrotate.d/docker": string(conf)}},
		{OSImage: "Ubuntu 22.04.4 LTS", Kernel: "5.15.0-113-generic", Runtime: "containerd://1.7.13", Images: images,
			Units: map[string]bool{"rpcbind": true, "rpc-statd": false}},
	}})
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(tb.Client.Discovery()))
	k := &kenv{t: t, tb: tb, c: &module.Cluster{Clientset: tb.Client, Dynamic: tb.Dynamic, Mapper: mapper}, dir: t.TempDir(), all: &bytes.Buffer{}}
	calicoNode(k, "v3.24.1", "- {name: FELIX_BPFENABLED, value: \"true\"}\n")
	k.create(workload("Deployment", "kube-system", "coredns", "finalizers: [nks.example/protect]\n",
		"containers:\n- {name: coredns, image: coredns/coredns:1.11.1}\n"))

	before := clusterState(t, tb)
	out, errs, code := k.cli("doctor", "--kubeconfig", tb.Kubeconfig, "-i", tb.KeyPath, "--known-hosts", tb.KnownHosts, "--format", "json",
		"calico-328-scale.yaml", "calico-ebpf-istio.yaml", "calico-ebpf-udp.yaml", "calico-image-repo.yaml", "cgroup-nokmem.yaml",
		"cinder-csi-rescan.yaml", "closed-network-images.yaml", "dockerhub-ratelimit.yaml", "fsgroup-policy.yaml",
		"ghcr-migration.yaml", "logrotate.yaml", "rpc-statd.yaml", "upgrade-finalizers.yaml")
	if code != 0 {
		t.Fatalf("doctor exit %d\n%s\n%s", code, out, errs)
	}
	if after := clusterState(t, tb); after != before {
		t.Errorf("doctor changed something:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if !tb.Nodes[1].UnitActive("rpcbind") || tb.Nodes[1].UnitActive("rpc-statd") {
		t.Errorf("doctor changed unit states")
	}
	var rows []struct {
		Section, Runbook, Status, Fix string
		Evidence                      []string
	}
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("doctor JSON: %v\n%s", err, out)
	}
	want := map[string]bool{"rpc-statd": true, "calico-ebpf-udp": true, "upgrade-finalizers": true}
	// The closed-network runbook also reports a nearly full image-store
	// disk; that depends on the machine running the test, so it is expected
	// exactly when this machine's disk is that full.
	var st syscall.Statfs_t
	if err := syscall.Statfs("/", &st); err == nil && 100*(st.Blocks-st.Bfree)/(st.Blocks-st.Bfree+st.Bavail) >= 80 {
		want["closed-network-images"] = true
	}
	var found []string
	for _, r := range rows {
		if r.Status == "error" {
			t.Errorf("%s (§%s): error: %v", r.Runbook, r.Section, r.Evidence)
		}
		if r.Status == "found" {
			found = append(found, r.Runbook)
			if !want[r.Runbook] {
				t.Errorf("%s (§%s) found on a cluster without that problem: %v", r.Runbook, r.Section, r.Evidence)
			}
		}
	}
	sort.Strings(found)
	for name := range want {
		if !strings.Contains(strings.Join(found, ","), name) {
			t.Errorf("seeded problem %s not found (found: %v)", name, found)
		}
	}
	if len(rows) != 13 {
		t.Errorf("%d rows, want one per guide section (13)", len(rows))
	}
	for _, r := range rows {
		if r.Runbook == "rpc-statd" && !strings.Contains(strings.Join(r.Evidence, " "), tb.Nodes[1].Name) {
			t.Errorf("rpc-statd evidence does not name the node: %v", r.Evidence)
		}
		if r.Runbook == "calico-ebpf-udp" && (!strings.Contains(strings.Join(r.Evidence, " "), "upgrade Calico") || strings.HasPrefix(r.Fix, "nksrun apply")) {
			t.Errorf("calico-ebpf-udp on v3.24.1 must report an upgrade, not a patch: %v → %s", r.Evidence, r.Fix)
		}
	}
	// The text view is one table.
	text, _, code := k.cli("doctor", "--kubeconfig", tb.Kubeconfig, "-i", tb.KeyPath, "--known-hosts", tb.KnownHosts, "rpc-statd.yaml", "logrotate.yaml")
	if code != 0 || !strings.Contains(text, "SECTION") || !strings.Contains(text, "found") || !strings.Contains(text, "nksrun apply") {
		t.Errorf("doctor text:\n%s", text)
	}
}
