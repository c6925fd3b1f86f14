package inventory_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"nksrun/cmd/nksrun/cli"
	"nksrun/inventory"
	"nksrun/testdata/testbed"
)

// TestFromClusterOnTestbed resolves the inventory from a real API server,
// exactly as `kubectl get nodes -o jsonpath=...InternalIP...` would, and
// through `nksrun inventory`.
func TestFromClusterOnTestbed(t *testing.T) {
	tb := testbed.New(t, testbed.Options{Nodes: []testbed.NodeSpec{
		{OSImage: "CentOS Linux 7 (Core)", Kernel: "3.10.0-1160.el7.x86_64", Runtime: "docker://20.10.7"},
		{OSImage: "Rocky Linux 8.10 (Green Obsidian)", Kernel: "4.18.0-553.el8_10.x86_64", Runtime: "containerd://1.7.13", NodeGroup: "gpu"},
		{OSImage: "Ubuntu 22.04.4 LTS", Kernel: "5.15.0-113-generic", Runtime: "containerd://1.7.13", NotReady: true},
	}})
	hosts, err := inventory.FromCluster(context.Background(), tb.Client)
	if err != nil {
		t.Fatal(err)
	}
	if len(hosts) != len(tb.Nodes) {
		t.Fatalf("%d hosts, want %d", len(hosts), len(tb.Nodes))
	}
	for _, n := range tb.Nodes {
		var h *inventory.Host
		for i := range hosts {
			if hosts[i].Name == n.Name {
				h = &hosts[i]
			}
		}
		if h == nil {
			t.Fatalf("node %s missing", n.Name)
		}
		if h.Address != n.Address || h.User != n.User {
			t.Errorf("%s: address %s user %s, want %s %s", n.Name, h.Address, h.User, n.Address, n.User)
		}
	}
	if hosts[1].Facts["runtime"] != "containerd" && hosts[0].Facts["runtime"] != "docker" {
		t.Errorf("runtime facts wrong: %v / %v", hosts[0].Facts, hosts[1].Facts)
	}
	gpu, err := inventory.Limit(hosts, []string{"magnum.openstack.org/nodegroup=gpu"})
	if err != nil || len(gpu) != 1 || gpu[0].Name != tb.Nodes[1].Name {
		t.Errorf("limit by nodegroup = %v, %v", gpu, err)
	}

	var out, errb bytes.Buffer
	code := cli.Run(context.Background(), []string{"inventory", "--kubeconfig", tb.Kubeconfig}, strings.NewReader(""), &out, &errb)
	if code != 0 {
		t.Fatalf("nksrun inventory: exit %d: %s", code, errb.String())
	}
	for _, n := range tb.Nodes {
		if !strings.Contains(out.String(), n.Name) || !strings.Contains(out.String(), n.Address) {
			t.Errorf("nksrun inventory output lacks %s %s:\n%s", n.Name, n.Address, out.String())
		}
	}
	if !strings.Contains(out.String(), "false") {
		t.Errorf("the NotReady node should show READY false:\n%s", out.String())
	}
}
