package cli_test

// Many clusters in one run (issue 14): two testbed clusters, one kubeconfig
// with a context for each, plan and doctor over both in one report.

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"nksrun/testdata/golden"
	"nksrun/testdata/testbed"
)

// twoClusters is two small testbeds and what a run over both needs.
type twoClusters struct {
	a, b       *testbed.Testbed
	kubeconfig string   // contexts "a" and "b"
	conn       []string // -i both keys, --known-hosts both clusters'
	runbook    string
	want       []byte // the config the runbook pushes
}

func newTwoClusters(t *testing.T) *twoClusters {
	t.Helper()
	if testing.Short() && os.Getenv("CI") == "" {
		t.Skip("end-to-end")
	}
	spec := func(prefix string) testbed.Options {
		return testbed.Options{Prefix: prefix, Nodes: []testbed.NodeSpec{
			{Name: prefix + "-node-0", OSImage: "CentOS Linux 7 (Core)", Runtime: "docker://20.10.7"},
			{Name: prefix + "-node-1", OSImage: "Ubuntu 22.04.4 LTS", Runtime: "docker://20.10.7"},
		}}
	}
	// One after the other: the second one's address allocation sees the
	// first one's sshds listening and picks other addresses.
	c := &twoClusters{a: testbed.New(t, spec("a")), b: testbed.New(t, spec("b"))}
	// Two clusters, really: two API servers, and nodes on disjoint addresses
	// (the one known_hosts below holds both clusters' keys by address).
	if c.a.APIServerURL == c.b.APIServerURL {
		t.Fatalf("both testbeds have API server %s", c.a.APIServerURL)
	}
	seen := map[string]string{}
	for _, tb := range []*testbed.Testbed{c.a, c.b} {
		for _, n := range tb.Nodes {
			if other, ok := seen[n.Address]; ok {
				t.Fatalf("nodes %s and %s share address %s", other, n.Name, n.Address)
			}
			seen[n.Address] = n.Name
			if n.Port != 22 {
				t.Fatalf("node %s listens on port %d: the cluster inventory assumes 22", n.Name, n.Port)
			}
		}
	}
	dir := t.TempDir()
	// One kubeconfig with both contexts, from the two testbeds' own.
	merged := clientcmdapi.NewConfig()
	for name, tb := range map[string]*testbed.Testbed{"a": c.a, "b": c.b} {
		cfg, err := clientcmd.LoadFromFile(tb.Kubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		cur := cfg.Contexts[cfg.CurrentContext]
		merged.Clusters[name] = cfg.Clusters[cur.Cluster]
		merged.AuthInfos[name] = cfg.AuthInfos[cur.AuthInfo]
		merged.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name}
	}
	merged.CurrentContext = "a"
	c.kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*merged, c.kubeconfig); err != nil {
		t.Fatal(err)
	}
	var kh []byte
	for _, tb := range []*testbed.Testbed{c.a, c.b} {
		b, err := os.ReadFile(tb.KnownHosts)
		if err != nil {
			t.Fatal(err)
		}
		kh = append(kh, b...)
	}
	khPath := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(khPath, kh, 0o600); err != nil {
		t.Fatal(err)
	}
	// The keys are copied: stopping cluster b (below) removes its directory.
	c.conn = []string{"--kubeconfig", c.kubeconfig}
	// In a fixed order: doctor's FIX line repeats the flags as given.
	for _, k := range []struct {
		name string
		tb   *testbed.Testbed
	}{{"a", c.a}, {"b", c.b}} {
		name, tb := k.name, k.tb
		b, err := os.ReadFile(tb.KeyPath)
		if err != nil {
			t.Fatal(err)
		}
		key := filepath.Join(dir, "key-"+name)
		if err := os.WriteFile(key, b, 0o600); err != nil {
			t.Fatal(err)
		}
		c.conn = append(c.conn, "-i", key)
	}
	c.conn = append(c.conn, "--known-hosts", khPath)
	var err error
	if c.runbook, err = filepath.Abs("../../../runbooks/logrotate.yaml"); err != nil {
		t.Fatal(err)
	}
	if c.want, err = os.ReadFile("../../../runbooks/files/docker-logrotate.conf"); err != nil {
		t.Fatal(err)
	}
	// Cluster a healthy; cluster b: node 1 drifted.
	for _, tb := range []*testbed.Testbed{c.a, c.b} {
		for _, n := range tb.Nodes {
			content := c.want
			if n.Name == "b-node-1" {
				content = []byte(drifted)
			}
			if err := os.WriteFile(n.Path("/etc/logrotate.d/docker"), content, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return c
}

// normalize replaces what differs between runs (loopback addresses, API
// server ports, temp paths) with stable names.
func (c *twoClusters) normalize(s string) string {
	var pairs []string
	for name, tb := range map[string]*testbed.Testbed{"a": c.a, "b": c.b} {
		host := strings.TrimPrefix(tb.APIServerURL, "https://")
		pairs = append(pairs, tb.APIServerURL, "https://APISERVER-"+name, host, "APISERVER-"+name)
		for i, n := range tb.Nodes {
			pairs = append(pairs, n.Address, "ADDR-"+n.Name[:1]+string(rune('0'+i)))
		}
	}
	for name, tb := range map[string]*testbed.Testbed{"a": c.a, "b": c.b} {
		pairs = append(pairs, tb.Dir, "TESTBED-"+name)
	}
	pairs = append(pairs, filepath.Dir(c.runbook), "RUNBOOKS", filepath.Dir(c.kubeconfig), "TMP")
	return strings.NewReplacer(pairs...).Replace(s)
}

func TestManyClustersE2E(t *testing.T) {
	c := newTwoClusters(t)
	args := func(extra ...string) []string {
		return append(append([]string{}, extra...), append(c.conn, c.runbook)...)
	}

	// plan over both: exit 2 (changes in b), one grouped report.
	dir := t.TempDir()
	logFile, metrics := filepath.Join(dir, "log.jsonl"), filepath.Join(dir, "nksrun.prom")
	code, out, errs := nksrun(t, args("plan", "--context", "a", "--context", "b", "--detailed-exitcode", "--log-format", "json", "--log-file", logFile, "--metrics-file", metrics)...)
	if code != 2 {
		t.Fatalf("plan --context a --context b: exit %d, want 2\n%s\n%s", code, out, errs)
	}
	got := c.normalize(out)
	golden.Assert(t, filepath.Join("clusters", "plan-two.txt"), []byte(got))
	secA, secB, ok := strings.Cut(got, "=== cluster b (APISERVER-b) ===")
	if !ok || !strings.HasPrefix(secA, "=== cluster a (APISERVER-a) ===") {
		t.Fatalf("not one section per cluster, a then b:\n%s", got)
	}
	if !strings.Contains(secA, "= ok on 2 nodes") || !strings.Contains(secA, "Plan: 0 to change,") || strings.Contains(secA, "~ ") {
		t.Errorf("healthy cluster a shows changes:\n%s", secA)
	}
	if !strings.Contains(secB, "~ b-node-1 (ubuntu@ADDR-b1): changes") || strings.Contains(secB, "b-node-0 (centos@ADDR-b0): changes") {
		t.Errorf("cluster b: the drift is not on exactly b-node-1:\n%s", secB)
	}
	if !strings.Contains(secB, "Clusters: 1 with changes, 1 in sync, 0 with errors (of 2).") {
		t.Errorf("summary over all clusters:\n%s", secB)
	}

	// Every engine event of the JSON log names its cluster; the nodes of
	// each cluster are reported under it.
	f, err := os.Open(logFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	byCluster := map[string]map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var ev struct{ Type, Cluster, Target string }
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatal(err)
		}
		switch ev.Type {
		case "run_start", "run_end":
			if ev.Cluster != "" {
				t.Errorf("%s carries cluster %q: it is the run's", ev.Type, ev.Cluster)
			}
		case "host_result":
			if byCluster[ev.Cluster] == nil {
				byCluster[ev.Cluster] = map[string]bool{}
			}
			byCluster[ev.Cluster][ev.Target] = true
		default:
			if ev.Cluster == "" {
				t.Errorf("%s without a cluster: %s", ev.Type, sc.Text())
			}
		}
	}
	if !byCluster["a"]["a-node-0"] || !byCluster["a"]["a-node-1"] || !byCluster["b"]["b-node-0"] || !byCluster["b"]["b-node-1"] || len(byCluster) != 2 || len(byCluster["a"]) != 2 {
		t.Errorf("host_result events by cluster: %v", byCluster)
	}
	// The metrics carry a cluster label.
	for _, want := range []string{
		`nksrun_pending_changes{cluster="a",runbook="logrotate",phase="plan"} 0`,
		`nksrun_pending_changes{cluster="b",runbook="logrotate",phase="plan"} 1`,
		`nksrun_last_run_success{cluster="b",runbook="logrotate",phase="plan"} 1`,
	} {
		if b, _ := os.ReadFile(metrics); !strings.Contains(string(b), want+"\n") {
			t.Errorf("metrics lack %s:\n%s", want, b)
		}
	}

	// --all-contexts: the same report (contexts sorted by name: a, b).
	code, out, _ = nksrun(t, args("plan", "--all-contexts", "--detailed-exitcode")...)
	if code != 2 || c.normalize(out) != got {
		t.Errorf("--all-contexts: exit %d, report differs:\n%s", code, c.normalize(out))
	}

	// JSON: {clusters: [{context, server, plan}], totals}.
	code, out, _ = nksrun(t, args("plan", "--all-contexts", "-o", "json")...)
	var data struct {
		Clusters []struct {
			Context, Server string
			Plan            struct {
				Runbooks []struct {
					Targets []struct{ Name, Status string }
				}
			}
		}
		Totals struct{ Clusters, WithChanges, InSync, Errors int } `json:"totals"`
	}
	if err := json.Unmarshal([]byte(out), &data); err != nil || code != 0 {
		t.Fatalf("plan -o json: exit %d, %v\n%s", code, err, out)
	}
	if len(data.Clusters) != 2 || data.Clusters[1].Server != c.b.APIServerURL || len(data.Clusters[1].Plan.Runbooks) != 1 {
		t.Fatalf("json clusters: %+v", data.Clusters)
	}
	for _, tg := range data.Clusters[1].Plan.Runbooks[0].Targets {
		if (tg.Status == "changes") != (tg.Name == "b-node-1") {
			t.Errorf("cluster b target %s: %s", tg.Name, tg.Status)
		}
	}

	// doctor over both: b has the problem (exit 2), a has none.
	code, out, _ = nksrun(t, args("doctor", "--all-contexts", "--detailed-exitcode")...)
	norm := c.normalize(out)
	golden.Assert(t, filepath.Join("clusters", "doctor-two.txt"), []byte(norm))
	if code != 2 || !regexp.MustCompile(`(?s)=== cluster a .*§1 .* not found .*=== cluster b .*§1 .* found .*b-node-1: update /etc/logrotate.d/docker.*nksrun apply --kubeconfig TMP/kubeconfig --context b --identity`).MatchString(norm) {
		t.Errorf("doctor --all-contexts: exit %d\n%s", code, norm)
	}

	// apply over two clusters: refused before anything is contacted; the
	// drift is still there.
	code, out, errs = nksrun(t, args("apply", "--auto-approve", "--context", "a", "--context", "b")...)
	if code != 64 || out != "" || !strings.Contains(errs, "apply works on one cluster at a time: review and apply each cluster's plan") {
		t.Errorf("apply --context a --context b: exit %d\n%s\n%s", code, out, errs)
	}
	if b, _ := os.ReadFile(c.b.Nodes[1].Path("/etc/logrotate.d/docker")); string(b) != drifted {
		t.Errorf("refused apply changed b-node-1:\n%s", b)
	}

	// One known_hosts for both clusters is keyed by address: when b-node-0's
	// address is recorded with another cluster's node key (two clusters
	// using the same private address), b-node-0 is refused as a changed
	// host key, on that node only, also under accept-new, and the file is
	// not rewritten.
	khShared := filepath.Join(t.TempDir(), "known_hosts")
	aKeys, err := os.ReadFile(c.a.KnownHosts)
	if err != nil {
		t.Fatal(err)
	}
	bKeys, err := os.ReadFile(c.b.KnownHosts)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(bKeys)), "\n") {
		if !strings.HasPrefix(l, c.b.Nodes[0].Address+" ") {
			lines = append(lines, l)
		}
	}
	aFirst := strings.SplitN(strings.TrimSpace(string(aKeys)), "\n", 2)[0]
	lines = append(lines, c.b.Nodes[0].Address+" "+strings.SplitN(aFirst, " ", 2)[1])
	shared := strings.TrimSpace(string(aKeys)) + "\n" + strings.Join(lines, "\n") + "\n"
	if err := os.WriteFile(khShared, []byte(shared), 0o600); err != nil {
		t.Fatal(err)
	}
	conn := append(append([]string{}, c.conn[:len(c.conn)-1]...), khShared)
	code, out, _ = nksrun(t, append([]string{"plan", "--all-contexts", "--host-key-policy", "accept-new", "-o", "json"}, append(conn, c.runbook)...)...)
	data.Clusters = nil
	if err := json.Unmarshal([]byte(out), &data); err != nil || code != 1 {
		t.Fatalf("shared address: exit %d, %v\n%s", code, err, out)
	}
	for i, cl := range data.Clusters {
		for _, tg := range cl.Plan.Runbooks[0].Targets {
			if bad := tg.Name == "b-node-0"; bad != (tg.Status == "unreachable") || (i == 0 && tg.Status != "ok") {
				t.Errorf("shared address: %s %s", tg.Name, tg.Status)
			}
		}
	}
	if !strings.Contains(out, "host key CHANGED") {
		t.Errorf("shared address: b-node-0's reason does not say the host key changed:\n%s", out)
	}
	if b, _ := os.ReadFile(khShared); string(b) != shared {
		t.Errorf("known_hosts rewritten:\n%s", b)
	}

	// Each cluster its own key and known_hosts, from the config file's
	// contexts: section (what two clusters sharing addresses need): the
	// same report without -i or --known-hosts on the command line.
	cfgDir := t.TempDir()
	cfgFile := filepath.Join(cfgDir, "config.yaml")
	var cfgText strings.Builder
	cfgText.WriteString("contexts:\n")
	for name, tb := range map[string]*testbed.Testbed{"a": c.a, "b": c.b} {
		key, err := os.ReadFile(tb.KeyPath)
		if err != nil {
			t.Fatal(err)
		}
		kh, err := os.ReadFile(tb.KnownHosts)
		if err != nil {
			t.Fatal(err)
		}
		for file, b := range map[string][]byte{"key-" + name: key, "kh-" + name: kh} {
			if err := os.WriteFile(filepath.Join(cfgDir, file), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		cfgText.WriteString("  " + name + ":\n    identity: " + filepath.Join(cfgDir, "key-"+name) + "\n    known_hosts: " + filepath.Join(cfgDir, "kh-"+name) + "\n")
	}
	if err := os.WriteFile(cfgFile, []byte(cfgText.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("NKSRUN_CONFIG", cfgFile)
	code, out, _ = nksrun(t, "plan", "--kubeconfig", c.kubeconfig, "--all-contexts", "--detailed-exitcode", c.runbook)
	if code != 2 || c.normalize(out) != got {
		t.Errorf("per-context identity and known_hosts: exit %d, report differs:\n%s", code, c.normalize(out))
	}
	t.Setenv("NKSRUN_CONFIG", filepath.Join(cfgDir, "none.yaml"))

	// Cluster b's API server stopped: b is that cluster's error, a is still
	// planned and reported, exit 1.
	if err := c.b.Close(); err != nil {
		t.Fatal(err)
	}
	code, out, errs = nksrun(t, args("plan", "--all-contexts", "--detailed-exitcode")...)
	norm = c.normalize(out)
	if code != 1 || !strings.Contains(errs, "cluster b: not planned") ||
		!strings.Contains(norm, "=== cluster a (APISERVER-a) ===\n\nrunbook logrotate") ||
		!strings.Contains(norm, "=== cluster b (APISERVER-b) ===\n\nerror: listing nodes: ") ||
		!strings.Contains(norm, "Clusters: 0 with changes, 1 in sync, 1 with errors (of 2).") {
		t.Errorf("with b's API server stopped: exit %d\n%s\n%s", code, norm, errs)
	}
}
