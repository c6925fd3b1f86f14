package runbooks_test

// End-to-end tests of the headline runbook (guide §1) on the testbed: real
// kube-apiserver, real sshd + sudo nodes, real logrotate.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"nksrun/cmd/nksrun/cli"
	"nksrun/engine/module"
	"nksrun/engine/plans"
	"nksrun/engine/transport"
	"nksrun/modules/filesync"
	"nksrun/testdata/testbed"
)

const logrotateDest = "/etc/logrotate.d/docker"

var (
	lrDockerCentOS = testbed.NodeSpec{OSImage: "CentOS Linux 7 (Core)", Kernel: "3.10.0-1160.el7.x86_64", Runtime: "docker://20.10.7"}
	lrDockerRocky  = testbed.NodeSpec{OSImage: "Rocky Linux 8.10 (Green Obsidian)", Kernel: "4.18.0-553.el8_10.x86_64", Runtime: "docker://20.10.7"}
	lrContainerd   = testbed.NodeSpec{OSImage: "Ubuntu 22.04.4 LTS", Kernel: "5.15.0-113-generic", Runtime: "containerd://1.7.13"}
)

func fileSHA(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		return "absent"
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// nodeState is every file under a node's /etc/logrotate.d with its hash and
// mode, and the Node objects' resourceVersions: what a plan must not change.
func clusterState(t *testing.T, tb *testbed.Testbed) string {
	t.Helper()
	var lines []string
	for _, n := range tb.Nodes {
		entries, _ := os.ReadDir(n.Path("/etc/logrotate.d"))
		for _, e := range entries {
			p := filepath.Join(n.Path("/etc/logrotate.d"), e.Name())
			fi, _ := os.Stat(p)
			lines = append(lines, n.Name+" "+e.Name()+" "+fileSHA(t, p)+" "+fi.Mode().String())
		}
	}
	nodes, err := tb.Client.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes.Items {
		lines = append(lines, n.Name+" rv="+n.ResourceVersion)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func stepOf(tp plans.TargetPlan, id string) plans.StepPlan {
	for _, s := range tp.Steps {
		if s.ID == id {
			return s
		}
	}
	return plans.StepPlan{}
}

func TestLogrotateSync(t *testing.T) {
	tb := testbed.New(t, testbed.Options{Nodes: []testbed.NodeSpec{lrDockerCentOS, lrDockerRocky, lrContainerd, lrDockerCentOS}})
	docker := []*testbed.Node{tb.Nodes[0], tb.Nodes[1], tb.Nodes[3]}
	containerd := tb.Nodes[2]
	want := fileSHA(t, "files/docker-logrotate.conf")

	// A plan on fresh nodes changes nothing anywhere and shows every docker
	// node changing; the containerd node is skipped with the reason.
	before := clusterState(t, tb)
	p := nbPlan(t, tb, "logrotate.yaml")
	if after := clusterState(t, tb); after != before {
		t.Fatalf("plan changed nodes or objects:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	targets := nbPlanTargets(p)
	for _, n := range docker {
		tp := targets[n.Name]
		if s := stepOf(tp, "config"); tp.Status != plans.StatusChanges || s.Action != module.Change || !strings.Contains(s.Diff, "+    rotate 10") {
			t.Errorf("fresh plan for docker node %s = %s %+v", n.Name, tp.Status, s)
		}
	}
	// The containerd node gets no file; kubelet's log limits are reported
	// instead (this testbed has no kubelet config file: unknown, said so).
	if tp := targets[containerd.Name]; stepOf(tp, "config").Action != module.Skip || stepOf(tp, "kubelet").Action != module.Finding ||
		!strings.Contains(stepOf(tp, "kubelet").Summary, "kubelet config file not found") {
		t.Errorf("containerd node plan = %s %+v", tp.Status, tp.Steps)
	}

	// Apply writes the file, 0644 root:root, on docker nodes only.
	code, rep := nbApply(t, tb, "logrotate.yaml")
	if code != 0 {
		t.Fatalf("apply exit %d", code)
	}
	res := nbTargets(rep)
	for _, n := range docker {
		path := n.Path(logrotateDest)
		if got := fileSHA(t, path); got != want {
			t.Errorf("%s: sha256 %s, want %s", n.Name, got, want)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().Perm() != 0o644 || st.Uid != 0 || st.Gid != 0 {
			t.Errorf("%s: mode %v uid %d gid %d, want 0644 root:root", n.Name, fi.Mode(), st.Uid, st.Gid)
		}
		if r := res[n.Name]; r.Status != plans.StatusChanged || len(r.Verify) != 1 || !r.Verify[0].OK {
			t.Errorf("%s: apply result %+v", n.Name, r)
		}
	}
	if _, err := os.Stat(containerd.Path(logrotateDest)); err == nil {
		t.Errorf("containerd node got %s", logrotateDest)
	}

	// A second plan has nothing to do: exit 0 with --detailed-exitcode.
	if code, out, _ := nbRun(t, tb, "plan", "--detailed-exitcode", "logrotate.yaml"); code != 0 || !strings.Contains(out, "Plan: 0 to change") {
		t.Fatalf("second plan exit %d, want 0 and no changes", code)
	}

	// A node modified by hand is the only one changed next time.
	edited := tb.Nodes[1]
	if err := os.WriteFile(edited.Path(logrotateDest), []byte("# edited by hand\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, _ := nbRun(t, tb, "plan", "--detailed-exitcode", "logrotate.yaml"); code != 2 {
		t.Fatalf("plan after a hand edit: exit %d, want 2", code)
	}
	p = nbPlan(t, tb, "logrotate.yaml")
	for name, tp := range nbPlanTargets(p) {
		changing := stepOf(tp, "config").Action == module.Change
		if changing != (name == edited.Name) {
			t.Errorf("%s: changing=%v after editing only %s", name, changing, edited.Name)
		}
		if name == edited.Name && !strings.Contains(stepOf(tp, "config").Diff, "-# edited by hand") {
			t.Errorf("diff does not show the hand edit: %s", stepOf(tp, "config").Diff)
		}
	}
	code, _ = nbApply(t, tb, "logrotate.yaml")
	if code != 0 || fileSHA(t, edited.Path(logrotateDest)) != want {
		t.Fatalf("re-apply exit %d, %s sha %s", code, edited.Name, fileSHA(t, edited.Path(logrotateDest)))
	}
	backups, _ := filepath.Glob(edited.Path(logrotateDest) + ".*.nksrun-backup~")
	if len(backups) != 1 {
		t.Errorf("backups on %s: %v, want the hand-edited file kept once", edited.Name, backups)
	}
}

func TestLogrotateFailuresStayPerNode(t *testing.T) {
	tb := testbed.New(t, testbed.Options{Nodes: []testbed.NodeSpec{lrDockerCentOS, lrDockerRocky, lrDockerCentOS, lrDockerRocky, lrDockerCentOS}})
	ok, down, rekeyed, sudoPW, full := tb.Nodes[0], tb.Nodes[1], tb.Nodes[2], tb.Nodes[3], tb.Nodes[4]
	if err := os.WriteFile(full.Path(logrotateDest), []byte("# old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	knownHostsBefore, _ := os.ReadFile(tb.KnownHosts)
	for _, err := range []error{down.Stop(), rekeyed.ChangeHostKey(), sudoPW.SetSudoPassword(true), full.FillDisk("/etc/logrotate.d")} {
		if err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	code, rep := nbApply(t, tb, "logrotate.yaml", "--connect-timeout", "5s")
	t.Logf("apply with 4 broken nodes took %s", time.Since(start))
	if code != 1 {
		t.Fatalf("apply exit %d, want 1 (some nodes failed)", code)
	}
	res := nbTargets(rep)
	checks := []struct {
		node   *testbed.Node
		status plans.Status
		reason string
	}{
		{ok, plans.StatusChanged, ""},
		{down, plans.StatusUnreachable, "unreachable"},
		{rekeyed, plans.StatusUnreachable, "host key CHANGED"},
		{sudoPW, plans.StatusFailed, "sudo requires a password"},
		{full, plans.StatusFailed, "left unchanged"},
	}
	for _, c := range checks {
		r := res[c.node.Name]
		if r.Status != c.status || !strings.Contains(r.Reason, c.reason) {
			t.Errorf("%s: %s %q, want %s with %q", c.node.Name, r.Status, r.Reason, c.status, c.reason)
		}
	}
	if got := fileSHA(t, ok.Path(logrotateDest)); got != fileSHA(t, "files/docker-logrotate.conf") {
		t.Errorf("healthy node not synced: %s", got)
	}
	if b, _ := os.ReadFile(full.Path(logrotateDest)); string(b) != "# old\n" {
		t.Errorf("full-disk node's file changed: %q", b)
	}
	leftovers, _ := filepath.Glob(full.Path("/etc/logrotate.d/.nksrun-*"))
	if len(leftovers) > 0 {
		t.Errorf("temp files left on the full node: %v", leftovers)
	}
	if after, _ := os.ReadFile(tb.KnownHosts); string(after) != string(knownHostsBefore) {
		t.Errorf("known_hosts was rewritten after a host key change")
	}
	for _, n := range []*testbed.Node{down, rekeyed, sudoPW} {
		if _, err := os.Stat(n.Path(logrotateDest)); err == nil {
			t.Errorf("%s got the file although it failed", n.Name)
		}
	}
}

func TestLogrotateValidateFailureKeepsOldFile(t *testing.T) {
	tb := testbed.New(t, testbed.Options{Nodes: []testbed.NodeSpec{lrDockerCentOS}})
	n := tb.Nodes[0]
	old := "# the node's current config\n"
	if err := os.WriteFile(n.Path(logrotateDest), []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "bad.conf")
	if err := os.WriteFile(bad, []byte("/var/lib/docker/containers/*/*.log {\n    rotate ten\n    missingok\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, rep := nbApply(t, tb, "logrotate.yaml", "--set", "config="+bad)
	r := nbTargets(rep)[n.Name]
	if code != 1 || r.Status != plans.StatusFailed || !strings.Contains(r.Reason, "validate failed") {
		t.Fatalf("apply of an invalid config: exit %d, %s %q", code, r.Status, r.Reason)
	}
	if b, _ := os.ReadFile(n.Path(logrotateDest)); string(b) != old {
		t.Fatalf("old file changed: %q", b)
	}
	if left, _ := filepath.Glob(n.Path("/etc/logrotate.d/.nksrun-*")); len(left) > 0 {
		t.Fatalf("temp files left: %v", left)
	}
}

// TestDroppedConnectionMidWrite streams a file into file_sync's install
// command over a real SSH connection and kills the node's sshd halfway: the
// destination keeps its old content whole.
func TestDroppedConnectionMidWrite(t *testing.T) {
	tb := testbed.New(t, testbed.Options{Nodes: []testbed.NodeSpec{lrDockerCentOS}})
	n := tb.Nodes[0]
	old := "# old config\n"
	if err := os.WriteFile(n.Path(logrotateDest), []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	// Plan a large content so the upload is still streaming when the node dies.
	big := filepath.Join(t.TempDir(), "big.conf")
	if err := os.WriteFile(big, []byte(strings.Repeat("# padding line for a large upload\n", 200000)), 0o644); err != nil {
		t.Fatal(err)
	}
	p := nbPlan(t, tb, "logrotate.yaml", "--set", "config="+big)
	sp := stepOf(nbPlanTargets(p)[n.Name], "config")
	if sp.Action != module.Change {
		t.Fatalf("plan: %+v", sp)
	}
	d, err := transport.NewDialer(transport.Config{Identities: []string{tb.KeyPath}, KnownHosts: tb.KnownHosts})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := d.Dial(context.Background(), transport.Host{Name: n.Name, Address: n.Address, User: n.User, Port: n.Port})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	listBefore, _ := filepath.Glob(n.Path("/etc/logrotate.d/*"))
	// Apply the planned change with the real module, over the real
	// connection, but let its upload stall halfway and take the node down
	// while the install waits for the rest.
	stalled := make(chan struct{})
	unblock := make(chan struct{})
	defer close(unblock)
	runner := stallingRunner{Runner: conn, after: 1 << 20, stalled: stalled, unblock: unblock}
	var params filesync.Params
	if err := json.Unmarshal(sp.Params, &params); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		tgt := module.Target{Node: &module.Node{Name: n.Name, Address: n.Address, Runner: runner}}
		_, err := filesync.New().Apply(context.Background(), tgt, module.Step{ID: "config", Params: &params}, sp.Planned)
		done <- err
	}()
	select {
	case <-stalled:
	case err := <-done:
		t.Fatalf("apply finished before stalling: %v", err)
	}
	time.Sleep(200 * time.Millisecond)
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("apply survived the node going down")
		}
		t.Logf("apply failed as expected: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("apply did not notice the dropped connection within 60s")
	}
	if b, _ := os.ReadFile(n.Path(logrotateDest)); string(b) != old {
		t.Fatalf("destination changed by a dropped upload: %d bytes", len(b))
	}
	// A temp file of a killed upload may remain (SIGKILL skips traps); it
	// ends in "~", which logrotate ignores, and the next install removes it
	// once it is an hour old. Nothing else may appear.
	all, _ := filepath.Glob(n.Path("/etc/logrotate.d/*"))
	var listAfter []string
	for _, f := range all {
		if !strings.HasSuffix(f, "~") {
			listAfter = append(listAfter, f)
		}
	}
	if len(listAfter) != len(listBefore) {
		t.Errorf("files in /etc/logrotate.d changed: before %v, after %v", listBefore, listAfter)
	}
	hidden, _ := filepath.Glob(n.Path("/etc/logrotate.d/.*"))
	for _, h := range hidden {
		if !strings.HasSuffix(h, "~") {
			t.Errorf("a leftover logrotate would read: %s", h)
		}
	}
	t.Logf("hidden leftovers after the kill: %v", hidden)
	// Now the real module, same situation: the node is down, so apply fails
	// and nothing changes.
	code, rep := nbApply(t, tb, "logrotate.yaml", "--set", "config="+big, "--connect-timeout", "3s")
	if r := nbTargets(rep)[n.Name]; code != 1 || r.Status != plans.StatusUnreachable {
		t.Fatalf("apply to a down node: exit %d %+v", code, r)
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	code, _ = nbApply(t, tb, "logrotate.yaml", "--set", "config="+big)
	if code != 0 || fileSHA(t, n.Path(logrotateDest)) != fileSHA(t, big) {
		t.Fatalf("apply after the node came back: exit %d", code)
	}
}

// stallingRunner passes commands through, but a command's stdin stops after
// `after` bytes (as if the network stalled) until unblock is closed.
type stallingRunner struct {
	module.Runner
	after   int
	stalled chan struct{}
	unblock chan struct{}
}

func (s stallingRunner) Run(ctx context.Context, cmd string, opts module.RunOpts) (module.RunResult, error) {
	if opts.Stdin != nil {
		opts.Stdin = &stallReader{r: opts.Stdin, left: s.after, stalled: s.stalled, unblock: s.unblock}
	}
	return s.Runner.Run(ctx, cmd, opts)
}

type stallReader struct {
	r       io.Reader
	left    int
	stalled chan struct{}
	unblock chan struct{}
	once    bool
}

func (s *stallReader) Read(p []byte) (int, error) {
	if s.left <= 0 {
		if !s.once {
			s.once = true
			close(s.stalled)
		}
		<-s.unblock
		return 0, io.ErrUnexpectedEOF
	}
	if len(p) > s.left {
		p = p[:s.left]
	}
	n, err := s.r.Read(p)
	s.left -= n
	return n, err
}

// TestLogrotateStaticInventory runs the runbook on machines listed in a
// static inventory, with no cluster at all (no kubeconfig anywhere).
func TestLogrotateStaticInventory(t *testing.T) {
	tb := testbed.New(t, testbed.Options{Nodes: []testbed.NodeSpec{lrDockerCentOS, lrContainerd}})
	var inv strings.Builder
	inv.WriteString("hosts:\n")
	for _, n := range tb.Nodes {
		fmt.Fprintf(&inv, "  - {name: %s, address: %s, user: %s, labels: {role: legacy}}\n", n.Name, n.Address, n.User)
	}
	path := filepath.Join(t.TempDir(), "inventory.yaml")
	if err := os.WriteFile(path, []byte(inv.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "none"))
	t.Setenv("HOME", t.TempDir())
	var out, errb bytes.Buffer
	args := []string{"apply", "--auto-approve", "--lock-file", filepath.Join(t.TempDir(), "lock"), "--inventory", path,
		"-i", tb.KeyPath, "--known-hosts", tb.KnownHosts, "--limit", "role=legacy", "logrotate.yaml"}
	code := cli.Run(context.Background(), args, strings.NewReader(""), &out, &errb)
	if code != 0 {
		t.Fatalf("apply with a static inventory: exit %d\n%s\n%s", code, out.String(), errb.String())
	}
	// Static hosts have no runtime fact, so the docker-only skip rule does
	// not apply: both machines get the file.
	for _, n := range tb.Nodes {
		if got := fileSHA(t, n.Path(logrotateDest)); got != fileSHA(t, "files/docker-logrotate.conf") {
			t.Errorf("%s: sha256 %s after apply", n.Name, got)
		}
	}
}
