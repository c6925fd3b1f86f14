package cli_test

// End-to-end tests of change reviews and cron-driven sync on the testbed: a
// real kube-apiserver (RBAC on) and real sshd nodes with real sudo. They
// run nksrun in-process (cli.Run) and, where a process must be killed or
// signalled, as a built binary.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	yaml "go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"

	"nksrun/cmd/nksrun/cli"
	"nksrun/engine/plans"
	"nksrun/testdata/testbed"
)

const drifted = "/var/lib/docker/containers/*/*.log {\n    rotate 5\n    copytruncate\n}\n"

// e2e is one testbed shared by the subtests (they run one after another and
// reset the nodes' files first).
type e2e struct {
	tb       *testbed.Testbed
	runbook  string // absolute path of runbooks/logrotate.yaml
	want     []byte // the config the runbook pushes
	docker   []*testbed.Node
	other    []*testbed.Node
	lockFile string
}

func newE2E(t *testing.T) *e2e {
	t.Helper()
	if testing.Short() && os.Getenv("CI") == "" { // CI always runs the end-to-end tests
		t.Skip("end-to-end")
	}
	// Three docker nodes (the runbook's targets) on different OS images, one
	// containerd node that the runbook skips.
	tb := testbed.New(t, testbed.Options{Nodes: []testbed.NodeSpec{
		{OSImage: "CentOS Linux 7 (Core)", Runtime: "docker://20.10.7"},
		{OSImage: "Ubuntu 22.04.4 LTS", Runtime: "docker://20.10.7"},
		{OSImage: "Rocky Linux 8.10 (Green Obsidian)", Runtime: "docker://20.10.7"},
		{OSImage: "Rocky Linux 8.10 (Green Obsidian)", Runtime: "containerd://1.7.13"},
	}})
	for _, n := range tb.Nodes {
		if n.Port != 22 {
			t.Fatalf("node %s listens on port %d: the cluster inventory assumes 22 (is a host sshd on *:22?)", n.Name, n.Port)
		}
	}
	rb, err := filepath.Abs("../../../runbooks/logrotate.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("../../../runbooks/files/docker-logrotate.conf")
	if err != nil {
		t.Fatal(err)
	}
	e := &e2e{tb: tb, runbook: rb, want: want, docker: tb.Nodes[:3], other: tb.Nodes[3:], lockFile: filepath.Join(t.TempDir(), "apply.lock")}
	return e
}

// reset gives every docker node the drifted config.
func (e *e2e) reset(t *testing.T) {
	t.Helper()
	for _, n := range e.tb.Nodes {
		if err := n.SetSlow(0); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(n.Path("/etc/logrotate.d/docker"), []byte(drifted), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func (e *e2e) conn() []string {
	return []string{"--kubeconfig", e.tb.Kubeconfig, "-i", e.tb.KeyPath, "--known-hosts", e.tb.KnownHosts}
}

func (e *e2e) file(t *testing.T, n *testbed.Node) string {
	t.Helper()
	b, err := os.ReadFile(n.Path("/etc/logrotate.d/docker"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// nksrun runs the CLI in-process with no terminal on stdin (as cron does).
func nksrun(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, eb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	code = cli.Run(ctx, args, strings.NewReader(""), &o, &eb)
	t.Logf("nksrun %s → exit %d\nstderr: %s", strings.Join(args, " "), code, eb.String())
	return code, o.String(), eb.String()
}

func reportOf(t *testing.T, stdout string) map[string]plans.TargetResult {
	t.Helper()
	var rep plans.Report
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("apply --format json: %v\n%s", err, stdout)
	}
	out := map[string]plans.TargetResult{}
	for _, r := range rep.Targets {
		out[r.Name] = r
	}
	return out
}

// start runs the binary in the background.
type proc struct {
	cmd    *exec.Cmd
	done   chan struct{}
	stdout bytes.Buffer
	stderr bytes.Buffer
	code   int
}

func start(t *testing.T, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(testbed.NksrunBinary(t), args...), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := p.cmd.Wait()
		p.code = 0
		if ee, ok := err.(*exec.ExitError); ok {
			p.code = ee.ExitCode()
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				p.code = -int(ws.Signal())
			}
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *proc) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(d):
		t.Fatalf("nksrun (pid %d) still running after %s\nstderr: %s", p.cmd.Process.Pid, d, p.stderr.String())
	}
	return 0
}

// waitLockHolder waits until pid has written itself into the lock file,
// which it does right after taking the lock.
func waitLockHolder(t *testing.T, lockFile string, p *proc) {
	t.Helper()
	want := strconv.Itoa(p.cmd.Process.Pid) + "\n"
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if b, _ := os.ReadFile(lockFile); string(b) == want {
			return
		}
		select {
		case <-p.done:
			t.Fatalf("nksrun exited (%d) before it held the lock\nstderr: %s", p.code, p.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("pid %d never held the lock %s", p.cmd.Process.Pid, lockFile)
}

func TestE2EChangeReviewAndCron(t *testing.T) {
	e := newE2E(t)

	t.Run("saved plan applies exactly, refusing the stale node", func(t *testing.T) {
		e.reset(t)
		dir := t.TempDir()
		planFile := filepath.Join(dir, "plan.json")
		code, md, _ := nksrun(t, append([]string{"plan", "--detailed-exitcode", "--out", planFile, "--format", "markdown"}, append(e.conn(), e.runbook)...)...)
		if code != cli.ExitChanges {
			t.Fatalf("plan --detailed-exitcode: exit %d, want %d (drift)", code, cli.ExitChanges)
		}
		// The three drifted nodes have the same change: one group, one diff.
		var names []string
		for _, n := range e.docker {
			names = append(names, n.Name)
		}
		sort.Strings(names)
		if !strings.Contains(md, "#### changes on 3 nodes (the same plan on each)\n\n"+strings.Join(names, ", ")+"\n") || !strings.Contains(md, "| `config` | change |") {
			t.Errorf("markdown plan has no grouped change for %v:\n%s", names, md)
		}
		if !strings.Contains(md, "```diff\n") || strings.Count(md, "-    rotate 5") != 1 {
			t.Errorf("markdown plan lacks the diff in a fenced block:\n%s", md)
		}
		// show renders the saved plan in every format; JSON is the file itself.
		saved, err := os.ReadFile(planFile)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"text", "markdown", "json"} {
			code, out, _ := nksrun(t, "show", "--format", f, planFile)
			if code != 0 || out == "" {
				t.Errorf("show --format %s: exit %d", f, code)
			}
			if f == "json" && out != string(saved) {
				t.Errorf("show --format json differs from the saved plan")
			}
			if f == "markdown" && out != md {
				t.Errorf("show --format markdown differs from plan --format markdown")
			}
		}

		stale := e.docker[1]
		const byHand = "# edited by hand after the plan\n"
		if err := os.WriteFile(stale.Path("/etc/logrotate.d/docker"), []byte(byHand), 0o644); err != nil {
			t.Fatal(err)
		}
		// The runbook file on disk changing after the plan does not matter:
		// the plan carries what was reviewed. Apply from another directory.
		wd, _ := os.Getwd()
		if err := os.Chdir("/"); err != nil {
			t.Fatal(err)
		}
		code, out, stderr := nksrun(t, append([]string{"apply", "--auto-approve", "--format", "json", "--lock-file", e.lockFile}, append(e.conn(), planFile)...)...)
		os.Chdir(wd)
		if code != cli.ExitError || !strings.Contains(stderr, "stale") {
			t.Fatalf("apply with one stale node: exit %d, want %d with a stale message", code, cli.ExitError)
		}
		rep := reportOf(t, out)
		if r := rep[stale.Name]; r.Status != plans.StatusStale || !strings.Contains(r.Reason, "changed since the plan") {
			t.Errorf("%s: %s (%s), want stale", stale.Name, r.Status, r.Reason)
		}
		if got := e.file(t, stale); got != byHand {
			t.Errorf("stale node's file was overwritten: %q", got)
		}
		for _, n := range []*testbed.Node{e.docker[0], e.docker[2]} {
			if r := rep[n.Name]; r.Status != plans.StatusChanged {
				t.Errorf("%s: %s (%s), want changed", n.Name, r.Status, r.Reason)
			}
			if got := e.file(t, n); got != string(e.want) {
				t.Errorf("%s not applied: %q", n.Name, got)
			}
		}
		// The containerd node gets no file (its kubelet rotates the logs;
		// the runbook only reports kubelet's limits there).
		if r := rep[e.other[0].Name]; r.Status != plans.StatusOK {
			t.Errorf("containerd node: %s, want ok (nothing applied)", r.Status)
		}
	})

	t.Run("apply runs one sudo per node, as the sudo log shows", func(t *testing.T) {
		// The root shell (apply's default): the plan's read and the
		// install with its verify go through one sudo; --root-shell=false
		// makes one per command, as before.
		for _, tc := range []struct {
			flags []string
			sudos int
		}{
			{nil, 1},
			{[]string{"--root-shell=false"}, 2},
			{[]string{"--forks", "1"}, 1}, // each node applied once planned
		} {
			e.reset(t)
			for _, n := range e.docker {
				if err := n.LogSudo(true); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { n.LogSudo(false) })
			}
			args := append(append([]string{"apply", "--auto-approve", "--lock-file", e.lockFile}, tc.flags...), append(e.conn(), e.runbook)...)
			if code, _, stderr := nksrun(t, args...); code != 0 {
				t.Fatalf("apply %v: exit %d\n%s", tc.flags, code, stderr)
			}
			for _, n := range e.docker {
				runs, err := n.SudoRuns()
				if err != nil {
					t.Fatal(err)
				}
				if len(runs) != tc.sudos {
					t.Errorf("apply %v: %s ran sudo %d times, want %d:\n%s", tc.flags, n.Name, len(runs), tc.sudos, strings.Join(runs, "\n"))
				}
				if got := e.file(t, n); got != string(e.want) {
					t.Errorf("apply %v: %s not applied: %q", tc.flags, n.Name, got)
				}
				if err := n.LogSudo(false); err != nil {
					t.Fatal(err)
				}
			}
		}
	})

	t.Run("more nodes than --forks: each node is applied once planned", func(t *testing.T) {
		// With more nodes than --forks and nobody to review in between,
		// apply changes each node right after planning it and lets its
		// connection go: at most --forks held, however large the cluster.
		e.reset(t)
		healthy := e.docker[1]
		if err := os.WriteFile(healthy.Path("/etc/logrotate.d/docker"), e.want, 0o644); err != nil {
			t.Fatal(err)
		}
		log := filepath.Join(t.TempDir(), "apply.log")
		code, out, stderr := nksrun(t, append([]string{"apply", "--auto-approve", "--forks", "1", "--format", "json", "--log-format", "json", "--log-file", log, "--lock-file", e.lockFile}, append(e.conn(), e.runbook)...)...)
		if code != 0 {
			t.Fatalf("apply --forks 1: exit %d\n%s", code, stderr)
		}
		rep := reportOf(t, out)
		for _, n := range e.docker {
			want := plans.StatusChanged
			if n == healthy {
				want = plans.StatusOK
			}
			r := rep[n.Name]
			if r.Status != want || len(r.Verify) == 0 || !r.Verify[0].OK {
				t.Errorf("%s: %s (%s), verify %+v; want %s, verified", n.Name, r.Status, r.Reason, r.Verify, want)
			}
			if got := e.file(t, n); got != string(e.want) {
				t.Errorf("%s not applied: %q", n.Name, got)
			}
		}
		if r := rep[e.other[0].Name]; r.Status != plans.StatusOK {
			t.Errorf("containerd node: %s, want ok (nothing applied)", r.Status)
		}
		// Node by node: each node's apply result follows its plan result
		// before the next node is planned.
		var order []string
		for _, l := range readLog(t, log) {
			if l["type"] == "host_result" {
				order = append(order, fmt.Sprint(l["phase"], "/", l["target"]))
			}
		}
		if len(order) != 2*len(e.tb.Nodes) {
			t.Fatalf("%d host_result lines, want a plan and an apply one per node: %v", len(order), order)
		}
		for k := 0; k < len(order); k += 2 {
			node, ok := strings.CutPrefix(order[k], "plan/")
			if !ok || order[k+1] != "apply/"+node {
				t.Fatalf("host_result order %v: want plan/N, apply/N node after node", order)
			}
		}
		if code, _, _ := nksrun(t, append([]string{"plan", "--detailed-exitcode"}, append(e.conn(), e.runbook)...)...); code != 0 {
			t.Errorf("plan after apply --forks 1: exit %d, want 0 (nothing left to change)", code)
		}
	})

	t.Run("on-stale stop applies nothing", func(t *testing.T) {
		e.reset(t)
		planFile := filepath.Join(t.TempDir(), "plan.json")
		if code, _, _ := nksrun(t, append([]string{"plan", "--out", planFile}, append(e.conn(), e.runbook)...)...); code != 0 {
			t.Fatalf("plan: exit %d", code)
		}
		stale := e.docker[2]
		if err := os.WriteFile(stale.Path("/etc/logrotate.d/docker"), []byte("# by hand\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		code, out, stderr := nksrun(t, append([]string{"apply", "--auto-approve", "--on-stale", "stop", "--format", "json", "--lock-file", e.lockFile}, append(e.conn(), planFile)...)...)
		if code != cli.ExitError || !strings.Contains(stderr, "nothing was applied") {
			t.Fatalf("exit %d, want %d and 'nothing was applied'", code, cli.ExitError)
		}
		rep := reportOf(t, out)
		if rep[stale.Name].Status != plans.StatusStale {
			t.Errorf("%s: %s, want stale", stale.Name, rep[stale.Name].Status)
		}
		for _, n := range e.docker[:2] {
			if rep[n.Name].Status != plans.StatusNotRun {
				t.Errorf("%s: %s, want not-run", n.Name, rep[n.Name].Status)
			}
			if got := e.file(t, n); got != drifted {
				t.Errorf("%s changed although the run stopped: %q", n.Name, got)
			}
		}
	})

	t.Run("edited plan is refused", func(t *testing.T) {
		e.reset(t)
		planFile := filepath.Join(t.TempDir(), "plan.json")
		if code, _, _ := nksrun(t, append([]string{"plan", "--out", planFile}, append(e.conn(), e.runbook)...)...); code != 0 {
			t.Fatalf("plan: exit %d", code)
		}
		b, _ := os.ReadFile(planFile)
		edited := strings.Replace(string(b), `rotate 10`, `rotate 1000`, 1)
		if edited == string(b) {
			t.Fatal("plan has no 'rotate 10' to edit")
		}
		if err := os.WriteFile(planFile, []byte(edited), 0o644); err != nil {
			t.Fatal(err)
		}
		code, _, stderr := nksrun(t, append([]string{"apply", "--auto-approve", "--lock-file", e.lockFile}, append(e.conn(), planFile)...)...)
		if code != cli.ExitError || !strings.Contains(stderr, "edited") {
			t.Errorf("edited plan: exit %d, stderr %q", code, stderr)
		}
		if code, _, stderr := nksrun(t, "show", planFile); code != cli.ExitError || !strings.Contains(stderr, "edited") {
			t.Errorf("show of an edited plan: exit %d, stderr %q", code, stderr)
		}
		for _, n := range e.docker {
			if e.file(t, n) != drifted {
				t.Errorf("%s changed by an edited plan", n.Name)
			}
		}
	})

	t.Run("expired plan is refused", func(t *testing.T) {
		e.reset(t)
		planFile := filepath.Join(t.TempDir(), "plan.json")
		if code, _, _ := nksrun(t, append([]string{"plan", "--out", planFile}, append(e.conn(), e.runbook)...)...); code != 0 {
			t.Fatalf("plan: exit %d", code)
		}
		time.Sleep(1100 * time.Millisecond)
		code, _, stderr := nksrun(t, append([]string{"apply", "--auto-approve", "--max-plan-age", "1s", "--lock-file", e.lockFile}, append(e.conn(), planFile)...)...)
		if code != cli.ExitError || !strings.Contains(stderr, "too old") {
			t.Errorf("expired plan: exit %d, stderr %q", code, stderr)
		}
		for _, n := range e.docker {
			if e.file(t, n) != drifted {
				t.Errorf("%s changed by an expired plan", n.Name)
			}
		}
	})

	t.Run("without a terminal apply never waits for input", func(t *testing.T) {
		e.reset(t)
		begin := time.Now()
		code, _, stderr := nksrun(t, append([]string{"apply", "--lock-file", e.lockFile}, append(e.conn(), e.runbook)...)...)
		if code != cli.ExitError || !strings.Contains(stderr, "--auto-approve") || time.Since(begin) > 10*time.Second {
			t.Errorf("apply without terminal and --auto-approve: exit %d after %s, stderr %q", code, time.Since(begin), stderr)
		}
	})

	t.Run("two concurrent cron runs: one applies, one exits 3 at once", func(t *testing.T) {
		e.reset(t)
		dir := t.TempDir()
		// A slow node keeps the first run holding the lock for seconds.
		if err := e.docker[0].SetSlow(time.Second); err != nil {
			t.Fatal(err)
		}
		defer e.docker[0].SetSlow(0)
		args := func(log string) []string {
			return append([]string{"apply", "--auto-approve", "--lock-file", e.lockFile, "--log-format", "json", "--log-file", log}, append(e.conn(), e.runbook)...)
		}
		first := start(t, args(filepath.Join(dir, "first.log"))...)
		waitLockHolder(t, e.lockFile, first)
		begin := time.Now()
		second := start(t, args(filepath.Join(dir, "second.log"))...)
		code := second.wait(t, 30*time.Second)
		took := time.Since(begin)
		t.Logf("second run exited %d after %s (process start included): %s", code, took, strings.TrimSpace(second.stderr.String()))
		if code != cli.ExitLocked {
			t.Fatalf("second run: exit %d, want %d (lock held)", code, cli.ExitLocked)
		}
		if !strings.Contains(second.stderr.String(), "another run holds the lock") {
			t.Errorf("second run's message: %q", second.stderr.String())
		}
		select {
		case <-first.done:
			t.Errorf("the first run finished before the second returned: the lock was not what stopped it")
		default:
		}
		if code := first.wait(t, 2*time.Minute); code != 0 {
			t.Fatalf("first run: exit %d\n%s", code, first.stderr.String())
		}
		for _, n := range e.docker {
			if e.file(t, n) != string(e.want) {
				t.Errorf("%s not applied by the first run", n.Name)
			}
		}
		// The locked run is in its log too: run_start, then run_end "locked", exit 3.
		lines := readLog(t, filepath.Join(dir, "second.log"))
		if len(lines) != 2 || lines[1]["status"] != "locked" || lines[1]["exit_code"] != 3.0 {
			t.Errorf("locked run's log: %v", lines)
		}
	})

	t.Run("a run killed with SIGKILL does not block the next", func(t *testing.T) {
		e.reset(t)
		if err := e.docker[1].SetSlow(2 * time.Second); err != nil {
			t.Fatal(err)
		}
		victim := start(t, append([]string{"apply", "--auto-approve", "--lock-file", e.lockFile}, append(e.conn(), e.runbook)...)...)
		waitLockHolder(t, e.lockFile, victim)
		if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if code := victim.wait(t, 10*time.Second); code != -int(syscall.SIGKILL) {
			t.Fatalf("victim exit %d, want killed", code)
		}
		if err := e.docker[1].SetSlow(0); err != nil {
			t.Fatal(err)
		}
		// The kernel dropped the flock with the process; the file (and the
		// dead pid in it) are still there and must not matter.
		code, _, stderr := nksrun(t, append([]string{"apply", "--auto-approve", "--lock-file", e.lockFile}, append(e.conn(), e.runbook)...)...)
		if code != 0 {
			t.Fatalf("next run: exit %d, stderr %q", code, stderr)
		}
		for _, n := range e.docker {
			if e.file(t, n) != string(e.want) {
				t.Errorf("%s not in sync after the next run", n.Name)
			}
		}
	})

	t.Run("SIGTERM cancels cleanly", func(t *testing.T) {
		e.reset(t)
		// A slow node holds the plan up, so the signal arrives mid-run.
		slow := e.docker[1]
		if err := slow.SetSlow(30 * time.Second); err != nil {
			t.Fatal(err)
		}
		if err := slow.LogSudo(true); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { slow.LogSudo(false) })
		p := start(t, append([]string{"apply", "--auto-approve", "--lock-file", e.lockFile}, append(e.conn(), e.runbook)...)...)
		waitLockHolder(t, e.lockFile, p)
		// A fast node, planned, holds its root shell open for the apply.
		for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			procs, err := e.docker[0].Processes()
			if err != nil {
				t.Fatal(err)
			}
			if slices.Contains(procs, "sh -s") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no root shell while the run waits for the slow node; processes: %q", e.docker[0].Name, procs)
			}
		}
		sent := time.Now()
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		code := p.wait(t, 20*time.Second)
		t.Logf("exited %d, %s after SIGTERM; stderr: %s", code, time.Since(sent), p.stderr.String())
		if code != 1 || !strings.Contains(p.stderr.String(), "interrupted") {
			t.Fatalf("exit %d, want 1 with the interruption reported", code)
		}
		// Interrupted before apply: nothing changed anywhere.
		for _, n := range e.docker {
			if e.file(t, n) != drifted {
				t.Errorf("%s changed by an interrupted run", n.Name)
			}
		}
		// And nothing of the run is left on the nodes: not the root shells
		// the planned nodes had open for the apply that never came. The
		// slow node's session is still in the testbed's delay before its
		// command (nksrun waited 15 s for the command's process group and
		// closed the session).
		waitNothingLeft(t, append(append([]*testbed.Node{}, e.docker...), e.other...), 20*time.Second, func(p string) bool {
			return strings.HasSuffix(p, "/bin/session") || strings.HasPrefix(p, "sleep ")
		})
		// When that delay is over, the command it held must not start
		// (the wrapper in front of it writes its process group to the
		// closed channel first, before it would run sudo): the node's
		// sudo log stays empty.
		waitNothingLeft(t, []*testbed.Node{slow}, 45*time.Second, func(string) bool { return false })
		if runs, err := slow.SudoRuns(); err != nil || len(runs) != 0 {
			t.Fatalf("%s: the cancelled command ran sudo after the run had ended (%v):\n%s", slow.Name, err, strings.Join(runs, "\n"))
		}
		if err := slow.SetSlow(0); err != nil {
			t.Fatal(err)
		}
		// The lock went with the process.
		if code, _, stderr := nksrun(t, append([]string{"apply", "--auto-approve", "--lock-file", e.lockFile}, append(e.conn(), e.runbook)...)...); code != 0 {
			t.Fatalf("next run: exit %d, stderr %q", code, stderr)
		}
	})

	t.Run("JSON log validates and survives rotation", func(t *testing.T) {
		e.reset(t)
		dir := t.TempDir()
		log := filepath.Join(dir, "nksrun.log")
		for _, n := range e.docker {
			if err := n.SetSlow(700 * time.Millisecond); err != nil {
				t.Fatal(err)
			}
		}
		p := start(t, append([]string{"apply", "--auto-approve", "--lock-file", e.lockFile, "--log-format", "json", "--log-file", log}, append(e.conn(), e.runbook)...)...)
		waitLines(t, log, 2, p) // run_start and the plan's phase_start: the run is under way
		// What logrotate does: rename, then SIGHUP (postrotate).
		if err := os.Rename(log, log+".1"); err != nil {
			t.Fatal(err)
		}
		if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		if code := p.wait(t, 2*time.Minute); code != 0 {
			t.Fatalf("exit %d\n%s", code, p.stderr.String())
		}
		before, after := readLog(t, log+".1"), readLog(t, log)
		t.Logf("%d line(s) before the rotation, %d after", len(before), len(after))
		if len(after) == 0 {
			t.Fatal("nothing written to the new log file after SIGHUP")
		}
		all := append(before, after...)
		for i, l := range all {
			if err := validateEvent(l); err != nil {
				t.Errorf("line %d %v: %v", i+1, l, err)
			}
		}
		// No line lost: every event the run must have written is there once.
		count := map[string]int{}
		for _, l := range all {
			k, _ := l["type"].(string)
			if ph, ok := l["phase"].(string); ok {
				k = ph + " " + k
			}
			count[k]++
		}
		nodes := len(e.tb.Nodes)
		for k, want := range map[string]int{
			"run_start": 1, "plan phase_start": 1, "plan host_result": nodes,
			"apply phase_start": 1, "apply host_result": nodes, "apply change": len(e.docker), "run_end": 1,
		} {
			if count[k] != want {
				t.Errorf("%d %q event(s), want %d (all: %v)", count[k], k, want, count)
			}
		}
		if all[0]["type"] != "run_start" || all[len(all)-1]["type"] != "run_end" {
			t.Errorf("first/last lines: %v / %v", all[0]["type"], all[len(all)-1]["type"])
		}
		if end := all[len(all)-1]; end["exit_code"] != 0.0 || end["status"] != "ok" {
			t.Errorf("run_end: %v", end)
		}
	})

	t.Run("the printed crontab line runs", func(t *testing.T) {
		e.reset(t)
		dir := t.TempDir()
		metrics := filepath.Join(dir, "nksrun.prom")
		out, err := exec.Command(testbed.NksrunBinary(t), append([]string{"cron", "--schedule", "*/5 * * * *", "--lock-file", e.lockFile,
			"--log-file", filepath.Join(dir, "logs", "logrotate.log"), "--metrics-file", metrics}, append(e.conn(), e.runbook)...)...).Output()
		if err != nil {
			t.Fatal(err)
		}
		var line string
		for _, l := range strings.Split(string(out), "\n") {
			if l != "" && !strings.HasPrefix(l, "#") {
				line = l
			}
		}
		f := strings.SplitN(line, " ", 6)
		if len(f) != 6 || strings.Join(f[:5], " ") != "*/5 * * * *" {
			t.Fatalf("crontab line: %q", line)
		}
		// As cron would: sh -c, another working directory, no terminal.
		cmd := exec.Command("/bin/sh", "-c", f[5])
		cmd.Dir = "/"
		if b, err := cmd.CombinedOutput(); err != nil {
			last, _ := os.ReadFile(filepath.Join(dir, "logs", "logrotate.last.txt"))
			t.Fatalf("crontab command: %v %s\n%s", err, b, last)
		}
		for _, n := range e.docker {
			if e.file(t, n) != string(e.want) {
				t.Errorf("%s not applied by the crontab command", n.Name)
			}
		}
		m, err := os.ReadFile(metrics)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{
			`nksrun_last_run_success{runbook="logrotate",phase="apply"} 1`,
			`nksrun_changed_targets{runbook="logrotate",phase="apply"} 3`,
			`nksrun_failed_targets{runbook="logrotate",phase="apply"} 0`,
			`nksrun_last_run_exit_code{runbook="logrotate",phase="apply"} 0`,
		} {
			if !strings.Contains(string(m), want) {
				t.Errorf("metrics lack %q:\n%s", want, m)
			}
		}
		for _, l := range readLog(t, filepath.Join(dir, "logs", "logrotate.log")) {
			if err := validateEvent(l); err != nil {
				t.Errorf("%v: %v", l, err)
			}
		}
	})

	t.Run("every runbook's CronJob manifest is accepted and its RBAC suffices to plan it", func(t *testing.T) {
		e.reset(t)
		testCronJobRBAC(t, e)
	})

	t.Run("CronJob with a secret param: secretKeyRef accepted, the Secret template valid, no value anywhere", func(t *testing.T) {
		const token = "e2e-secret-token-0123456789"
		tokenFile := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
			t.Fatal(err)
		}
		code, manifest, stderr := nksrun(t, "cron", "--kubernetes", "--namespace", "nksrun-e2e-secret", "--set-file", "token="+tokenFile, "testdata/secret-param.yaml")
		if code != 0 || strings.Contains(manifest+stderr, token) {
			t.Fatalf("cron --kubernetes: exit %d (or the token printed): %s\n%s", code, stderr, manifest)
		}
		createManifest(t, e.tb, manifest)
		// The commented template, uncommented and filled in, is a Secret
		// the API server takes.
		var tmpl []string
		in := false
		for _, l := range strings.Split(manifest, "\n") {
			switch {
			case strings.HasPrefix(l, "# or from this template"):
				in = true
			case in && strings.HasPrefix(l, "#   "):
				tmpl = append(tmpl, strings.Replace(strings.TrimPrefix(l, "#   "), `token: ""`, "token: "+token, 1))
			case in:
				in = false
			}
		}
		createManifest(t, e.tb, strings.Join(tmpl, "\n"))
		cj, err := e.tb.Client.BatchV1().CronJobs("nksrun-e2e-secret").Get(context.Background(), "nksrun-secret-param", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		c := cj.Spec.JobTemplate.Spec.Template.Spec.Containers[0]
		// GOMEMLIMIT (a plain value, below the container limit), then the
		// secret param from the Secret, never as a value.
		if len(c.Env) != 2 || c.Env[0].Name != "GOMEMLIMIT" || c.Env[0].Value != "400MiB" ||
			c.Env[1].Name != "NKSRUN_SET_TOKEN" || c.Env[1].Value != "" || c.Env[1].ValueFrom == nil || c.Env[1].ValueFrom.SecretKeyRef == nil ||
			c.Env[1].ValueFrom.SecretKeyRef.Name != "nksrun-secret-param-params" || c.Env[1].ValueFrom.SecretKeyRef.Key != "token" {
			t.Errorf("container env: %+v", c.Env)
		}
		for _, a := range c.Args {
			if strings.Contains(a, "token") {
				t.Errorf("arg %q", a)
			}
		}
		sec, err := e.tb.Client.CoreV1().Secrets("nksrun-e2e-secret").Get(context.Background(), "nksrun-secret-param-params", metav1.GetOptions{})
		if err != nil || string(sec.Data["token"]) != token {
			t.Errorf("Secret from the template: %v %v", sec, err)
		}
	})
}

// rbacCase is one runbook's CronJob, planned as its ServiceAccount.
type rbacCase struct {
	runbook string
	args    []string          // given to cron and to the plans
	cron    []string          // given to cron only
	env     map[string]string // the plans' environment
}

// fixable are the runbooks whose fix the testbed can take: applied as the
// ServiceAccount too, then planned again to nothing.
var fixable = map[string]bool{"logrotate": true, "upgrade-finalizers": true, "cinder-csi-rescan": true, "dockerhub-ratelimit": true}

// testCronJobRBAC creates each runbook's emitted manifest (Namespace,
// ServiceAccount, Roles, bindings, CronJob) in the testbed's API server,
// takes a token of its ServiceAccount from the TokenRequest API and plans
// the runbook with it: the plan must be the one an administrator gets
// (same exit code, same targets, statuses, actions and summaries) and
// nothing may be forbidden. The cluster holds objects that make the
// runbooks read and dry-run-patch what they would change.
func testCronJobRBAC(t *testing.T, e *e2e) {
	ctx := context.Background()
	cs := e.tb.Client
	// team-a: where dockerhub-ratelimit's pull Secret goes.
	for _, ns := range []string{"team-a"} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// upgrade-finalizers: a kube-system Deployment with a finalizer (its
	// removal is previewed with a server-side dry-run patch).
	labels := map[string]string{"app": "coredns"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "coredns", Namespace: "kube-system", Finalizers: []string{"example.com/keep"}},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "coredns", Image: "registry.k8s.io/coredns/coredns:v1.11.1"}}}},
		},
	}
	if _, err := cs.AppsV1().Deployments("kube-system").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = cs.AppsV1().Deployments("kube-system").Patch(ctx, "coredns", types.JSONPatchType, []byte(`[{"op":"remove","path":"/metadata/finalizers"}]`), metav1.PatchOptions{})
	})
	// cinder-csi-rescan: the cloud-config Secret without the option.
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "cinder-csi-cloud-config", Namespace: "kube-system"},
		StringData: map[string]string{"cloud-config": "[Global]\nauth-url=https://keystone.example:5000/v3\n"}}
	if _, err := cs.CoreV1().Secrets("kube-system").Create(ctx, sec, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	paths, err := filepath.Glob("../../../runbooks/*.yaml")
	if err != nil || len(paths) != 13 {
		t.Fatalf("want the 13 runbooks, got %d (%v)", len(paths), err)
	}
	var cases []rbacCase
	for _, p := range paths {
		cases = append(cases, rbacCase{runbook: strings.TrimSuffix(filepath.Base(p), ".yaml")})
	}
	// dockerhub-ratelimit with credentials: its fix runs, in team-a.
	cases = append(cases, rbacCase{runbook: "dockerhub-ratelimit",
		args: []string{"--set", "username_env=E2E_HUB_USER", "--set", "password_env=E2E_HUB_TOKEN", "--set", "namespaces=team-a"},
		cron: []string{"--secret-env", "E2E_HUB_USER", "--secret-env", "E2E_HUB_TOKEN"},
		env:  map[string]string{"E2E_HUB_USER": "e2e-user", "E2E_HUB_TOKEN": "e2e-hub-token-0123456789"}})

	conn := []string{"-i", e.tb.KeyPath, "--known-hosts", e.tb.KnownHosts}
	for i, c := range cases {
		name := c.runbook
		if len(c.args) > 0 {
			name += " with " + strings.Join(c.args, " ")
		}
		t.Run(name, func(t *testing.T) {
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			rb, _ := filepath.Abs("../../../runbooks/" + c.runbook + ".yaml")
			ns := fmt.Sprintf("nksrun-e2e-%d", i)
			code, manifest, stderr := nksrun(t, append(append(append([]string{"cron", "--kubernetes", "--namespace", ns, "--image", "nksrun:e2e"}, c.cron...), c.args...), rb)...)
			if code != 0 {
				t.Fatalf("cron --kubernetes: exit %d: %s", code, stderr)
			}
			// Each runbook has its own ClusterRole name; a second
			// variant of one runbook takes over the names of the first.
			deleteClusterRBAC(t, e.tb, "nksrun-"+c.runbook)
			kinds := map[string]bool{}
			for _, o := range createManifest(t, e.tb, manifest) {
				kinds[o.GetKind()] = true
			}
			for _, k := range []string{"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "CronJob"} {
				if !kinds[k] {
					t.Errorf("manifest has no %s", k)
				}
			}
			if len(c.cron) > 0 {
				cj, err := e.tb.Client.BatchV1().CronJobs(ns).Get(ctx, "nksrun-"+c.runbook, metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				var names []string
				for _, ev := range cj.Spec.JobTemplate.Spec.Template.Spec.Containers[0].Env {
					if ev.ValueFrom != nil && ev.ValueFrom.SecretKeyRef != nil {
						names = append(names, ev.Name)
					}
				}
				if strings.Join(names, ",") != "E2E_HUB_USER,E2E_HUB_TOKEN" {
					t.Errorf("CronJob env from the Secret: %v", names)
				}
			}
			saKubeconfig := serviceAccountKubeconfig(t, e.tb, ns, "nksrun-"+c.runbook)

			plan := func(kubeconfig string) (int, string, string) {
				return nksrun(t, append(append(append([]string{"plan", "--detailed-exitcode", "--format", "json", "--kubeconfig", kubeconfig}, conn...), c.args...), rb)...)
			}
			adminCode, adminOut, adminErr := plan(e.tb.Kubeconfig)
			saCode, saOut, saErr := plan(saKubeconfig)
			// The runbooks' own text (embedded in the plan) may say
			// "forbidden"; what the API server answered may not.
			saSeen := saOut
			var saPlan plans.Plan
			if json.Unmarshal([]byte(saOut), &saPlan) == nil {
				for i := range saPlan.Runbooks {
					saPlan.Runbooks[i].Source = ""
				}
				b, _ := json.Marshal(saPlan)
				saSeen = string(b)
			}
			if strings.Contains(strings.ToLower(saSeen+saErr), "forbidden") {
				t.Errorf("planning as the CronJob's ServiceAccount hit a forbidden request:\n%s\n%s", saErr, saOut)
			}
			if adminCode == cli.ExitError {
				t.Errorf("the administrator's plan fails (exit 1), so it proves nothing: %s", adminErr)
			}
			if saCode != adminCode {
				t.Errorf("plan as the ServiceAccount: exit %d, as the administrator: exit %d\n%s", saCode, adminCode, saErr)
			}
			want, got := planSummary(t, adminOut), planSummary(t, saOut)
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("plan as the ServiceAccount:\n%s\nas the administrator:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			t.Logf("plan (exit %d):\n%s", saCode, strings.Join(got, "\n"))
			if fixable[c.runbook] && saCode == cli.ExitChanges {
				code, _, stderr := nksrun(t, append(append(append([]string{"apply", "--auto-approve", "--lock-file", e.lockFile, "--kubeconfig", saKubeconfig}, conn...), c.args...), rb)...)
				if code != 0 || strings.Contains(strings.ToLower(stderr), "forbidden") {
					t.Errorf("apply as the ServiceAccount: exit %d: %s", code, stderr)
				}
				if code, out, stderr := plan(saKubeconfig); code != cli.ExitOK {
					t.Errorf("plan after the fix: exit %d, want 0: %s\n%s", code, stderr, strings.Join(planSummary(t, out), "\n"))
				}
			}
			if c.runbook == "logrotate" {
				if saCode != cli.ExitChanges {
					t.Errorf("logrotate on drifted nodes: exit %d, want %d", saCode, cli.ExitChanges)
				}
				if code, _, stderr := nksrun(t, "inventory", "--kubeconfig", saKubeconfig); code != 0 {
					t.Errorf("inventory as the ServiceAccount: exit %d: %s", code, stderr)
				}
			}
		})
	}
}

// planSummary is what a plan decided, target by target: status, reason and
// each step's action and summary.
func planSummary(t *testing.T, out string) []string {
	t.Helper()
	var p plans.Plan
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatalf("plan --format json: %v\n%s", err, out)
	}
	var s []string
	for _, rp := range p.Runbooks {
		for _, tp := range rp.Targets {
			s = append(s, fmt.Sprintf("%s %s: %s %s", rp.Name, tp.Name, tp.Status, tp.Reason))
			for _, st := range tp.Steps {
				s = append(s, fmt.Sprintf("  %s: %s %s %s (%d finding(s))", st.ID, st.Action, st.Summary, st.Reason, len(st.Findings)))
			}
		}
	}
	return s
}

// serviceAccountKubeconfig is the testbed's kubeconfig with a token of the
// ServiceAccount ns/name (TokenRequest API) instead of the admin's.
func serviceAccountKubeconfig(t *testing.T, tb *testbed.Testbed, ns, name string) string {
	t.Helper()
	tok, err := tb.Client.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), name,
		&authv1.TokenRequest{Spec: authv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(600))}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.LoadFromFile(tb.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, ai := range cfg.AuthInfos {
		ai.Token = tok.Status.Token
		ai.ClientCertificateData, ai.ClientKeyData, ai.ClientCertificate, ai.ClientKey = nil, nil, "", ""
	}
	path := filepath.Join(t.TempDir(), "sa-kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// deleteClusterRBAC removes a ClusterRole and ClusterRoleBinding of that
// name if they exist.
func deleteClusterRBAC(t *testing.T, tb *testbed.Testbed, name string) {
	t.Helper()
	ctx := context.Background()
	if err := tb.Client.RbacV1().ClusterRoleBindings().Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	if err := tb.Client.RbacV1().ClusterRoles().Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
}

func ptr[T any](v T) *T { return &v }

// createManifest creates every object of a multi-document YAML manifest
// with the dynamic client (what kubectl create does) and checks each exists.
func createManifest(t *testing.T, tb *testbed.Testbed, manifest string) []*unstructured.Unstructured {
	t.Helper()
	ctx := context.Background()
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(tb.Client.Discovery()))
	var objs []*unstructured.Unstructured
	dec := yaml.NewDecoder(strings.NewReader(manifest))
	for {
		var doc map[string]any
		if err := dec.Decode(&doc); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatalf("manifest is not YAML: %v\n%s", err, manifest)
		}
		if doc == nil {
			continue
		}
		b, err := json.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		o := &unstructured.Unstructured{}
		if err := o.UnmarshalJSON(b); err != nil {
			t.Fatalf("object: %v\n%s", err, b)
		}
		gvk := o.GroupVersionKind()
		m, err := mapper.RESTMapping(schema.GroupKind{Group: gvk.Group, Kind: gvk.Kind}, gvk.Version)
		if err != nil {
			t.Fatalf("%s: %v", gvk, err)
		}
		ri := tb.Dynamic.Resource(m.Resource)
		var created *unstructured.Unstructured
		if ns := o.GetNamespace(); ns != "" && (gvk.Kind == "Role" || gvk.Kind == "RoleBinding") {
			// The cluster the manifest is for has the namespaces its
			// runbook reads (calico-system on operator installs, say).
			nsObj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}
			if _, err := tb.Client.CoreV1().Namespaces().Create(ctx, nsObj, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatalf("namespace %s: %v", ns, err)
			}
		}
		if ns := o.GetNamespace(); ns != "" {
			created, err = ri.Namespace(ns).Create(ctx, o, metav1.CreateOptions{FieldValidation: "Strict"})
		} else {
			created, err = ri.Create(ctx, o, metav1.CreateOptions{FieldValidation: "Strict"})
		}
		if err != nil {
			t.Fatalf("creating %s %s/%s: %v", gvk.Kind, o.GetNamespace(), o.GetName(), err)
		}
		t.Logf("created %s %s/%s", created.GetKind(), created.GetNamespace(), created.GetName())
		if ns := o.GetNamespace(); ns != "" {
			_, err = ri.Namespace(ns).Get(ctx, o.GetName(), metav1.GetOptions{})
		} else {
			_, err = ri.Get(ctx, o.GetName(), metav1.GetOptions{})
		}
		if err != nil {
			t.Fatalf("%s %s not found after create: %v", gvk.Kind, o.GetName(), err)
		}
		objs = append(objs, created)
	}
	return objs
}

func readLog(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("%s: line %d is not one JSON object: %v: %q", path, len(out)+1, err, sc.Text())
		}
		out = append(out, m)
	}
	return out
}

func waitLines(t *testing.T, path string, n int, p *proc) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil && bytes.Count(b, []byte("\n")) >= n {
			return
		}
		select {
		case <-p.done:
			t.Fatalf("nksrun exited (%d) early: %s", p.code, p.stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Fatalf("%s never had %d lines", path, n)
}

// waitNothingLeft waits (up to bound) until no process the nodes' sshds
// started is left but those ignore accepts: every session of a finished run has
// ended, with what it ran.
func waitNothingLeft(t *testing.T, nodes []*testbed.Node, bound time.Duration, ignore func(cmdline string) bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for {
		var left []string
		for _, n := range nodes {
			procs, err := n.Processes()
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range procs {
				if !ignore(p) {
					left = append(left, n.Name+": "+p)
				}
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still running on the nodes after the run ended:\n%s", strings.Join(left, "\n"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
