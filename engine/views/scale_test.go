package views

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"nksrun/engine/module"
	"nksrun/engine/plans"
	"nksrun/engine/redact"
	"nksrun/testdata/golden"
)

// synthetic is a plan for n nodes: most in sync, a large group with the
// same change, a few unreachable (each error names its own address), a few
// failed, some skipped; a second runbook changes half the nodes.
func synthetic(n int) *plans.Plan {
	diff := "--- /etc/logrotate.d/docker\n+++ /etc/logrotate.d/docker\n@@ -1,3 +1,3 @@\n /var/lib/docker/containers/*/*.log {\n-  rotate 5\n+  rotate 10\n   copytruncate\n"
	lr := plans.RunbookPlan{Name: "logrotate", Title: "Keep the docker container logrotate config identical", Section: "1", SourceHash: strings.Repeat("ab", 32)}
	cg := plans.RunbookPlan{Name: "cgroup-nokmem", Title: "Disable kernel memory accounting", Section: "5", SourceHash: strings.Repeat("cd", 32)}
	for i := 0; i < n; i++ {
		name, addr := fmt.Sprintf("w-node-%04d", i), fmt.Sprintf("10.0.%d.%d", i/250, i%250+1)
		t := plans.TargetPlan{Kind: plans.TargetNode, Name: name, Address: addr, User: "centos", Port: 22}
		switch {
		case i%333 == 7:
			t.Status, t.Reason = plans.StatusUnreachable, "node "+name+" ("+addr+":22): unreachable: dial tcp "+addr+":22: connect: no route to host"
		case i%200 == 3:
			t.Status, t.Reason = plans.StatusFailed, "gathering facts: sudo: a password is required"
		case i%150 == 5:
			t.Status, t.Reason = plans.StatusSkipped, "runtime is not docker"
		case i%5 == 0:
			t.Status = plans.StatusChanges
			t.Steps = []plans.StepPlan{{ID: "config", Module: "file_sync", Planned: module.Planned{Action: module.Change,
				Summary: "update /etc/logrotate.d/docker (9f86d081 0644 root:root)", Reason: "content differs (sha256 2c26b46b, want 9f86d081)", Diff: diff}}}
		default:
			t.Status = plans.StatusOK
			t.Steps = []plans.StepPlan{{ID: "config", Module: "file_sync", Planned: module.Planned{Action: module.NoOp, Summary: "/etc/logrotate.d/docker in sync (sha256 9f86d081)"}}}
		}
		lr.Targets = append(lr.Targets, t)
		c := plans.TargetPlan{Kind: plans.TargetNode, Name: name, Address: addr, User: "centos", Port: 22}
		if i%2 == 0 {
			c.Status = plans.StatusChanges
			c.Steps = []plans.StepPlan{
				{ID: "grub", Module: "grub_arg", Planned: module.Planned{Action: module.Change, Summary: "add cgroup.memory=nokmem to GRUB_CMDLINE_LINUX", Diff: "-GRUB_CMDLINE_LINUX=\"quiet\"\n+GRUB_CMDLINE_LINUX=\"quiet cgroup.memory=nokmem\"\n"}},
				{ID: "reboot", Module: "reboot", Planned: module.Planned{Action: module.Unknown, Summary: "reboot " + name, Reason: "after grub changes"}},
			}
		} else {
			c.Status, c.Reason = plans.StatusSkipped, "kernel 5.x does not need nokmem"
		}
		cg.Targets = append(cg.Targets, c)
	}
	return &plans.Plan{FormatVersion: plans.FormatVersion, Tool: "v0.1.0-test", CreatedAt: time.Date(2025, 3, 1, 9, 30, 0, 0, time.UTC),
		Runbooks: []plans.RunbookPlan{lr, cg}}
}

// TestMarkdownAt1000Nodes: a review of 1,000 nodes fits a GitHub comment
// (golden file), each diff appears once, long node lists are folded.
func TestMarkdownAt1000Nodes(t *testing.T) {
	p := synthetic(1000)
	var buf bytes.Buffer
	if err := RenderPlan(&buf, p, FormatMarkdown, &redact.Secrets{}); err != nil {
		t.Fatal(err)
	}
	md := buf.String()
	if len(md) >= 60000 {
		t.Errorf("markdown for 1,000 nodes is %d characters, want < 60,000", len(md))
	}
	for want, n := range map[string]int{
		"rotate 10":                                1, // one diff for the whole group
		"cgroup.memory=nokmem\"\n":                 1,
		"dial tcp {address}:22: connect: no route": 1, // unreachable grouped by error
		"reboot {node}":                            1, // per-node text normalized in a group
	} {
		if got := strings.Count(md, want); got != n {
			t.Errorf("%q appears %d times, want %d", want, got, n)
		}
	}
	if !regexp.MustCompile(`#### changes on 1\d\d nodes \(the same plan on each\)`).MatchString(md) {
		t.Error("no grouped change heading")
	}
	if !strings.Contains(md, "<details><summary>500 nodes</summary>") {
		t.Error("long node list not folded in <details>")
	}
	golden.Assert(t, "plan/plan-1000.md", buf.Bytes())
	t.Logf("markdown for 1,000 nodes: %d characters", len(md))
}

// TestTextGroupsAndFolds: the text view prints a group once with a folded
// node list (all with Verbose), and one line per in-sync group.
func TestTextGroupsAndFolds(t *testing.T) {
	p := synthetic(1000)
	var short, long bytes.Buffer
	if err := RenderPlanOpts(&short, p, FormatText, nil, Options{}); err != nil {
		t.Fatal(err)
	}
	if err := RenderPlanOpts(&long, p, FormatText, nil, Options{Verbose: true}); err != nil {
		t.Fatal(err)
	}
	s := short.String()
	if n := strings.Count(s, "\n"); n > 60 {
		t.Errorf("text plan of 1,000 nodes is %d lines:\n%s", n, s)
	}
	for _, want := range []string{
		"= ok on 793 nodes", "(1 step, nothing to do)", "and 788 more", "(-v lists all)",
		"x unreachable on 3 nodes: dial tcp {address}:22",
		"x failed on 5 nodes: gathering facts: sudo: a password is required",
		"Targets: 692 with changes,",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("text plan lacks %q:\n%s", want, s)
		}
	}
	if strings.Count(s, "rotate 10") != 1 {
		t.Error("the shared diff is not printed exactly once")
	}
	if !strings.Contains(long.String(), "w-node-0999") || strings.Contains(s, "w-node-0999") {
		t.Error("Verbose should list every node, the default fold them")
	}
	if strings.Contains(s, "\033[") {
		t.Error("colour without Options.Color")
	}
	var col bytes.Buffer
	_ = RenderPlanOpts(&col, p, FormatText, nil, Options{Color: true})
	if !strings.Contains(col.String(), "\033[33m~\033[0m") || !strings.Contains(col.String(), "\033[32m+  rotate 10\033[0m") {
		t.Error("no colour with Options.Color")
	}
}

// TestControlCharactersEscaped: text from nodes cannot drive the terminal
// (OSC 52 writes the clipboard, CSI moves the cursor, CR overwrites a line)
// nor forge a line of the plan (newline in a name or a reason).
func TestControlCharactersEscaped(t *testing.T) {
	osc52 := "\x1b]52;c;Y3VybCBldmlsfHNo\x07"
	p := synthetic(3)
	rp := &p.Runbooks[0]
	rp.Title = "title \u009b31m C1 CSI, raw \x9b byte"
	rp.Targets[0].Name = "evil" + osc52
	rp.Targets[1].Status, rp.Targets[1].Reason, rp.Targets[1].Steps = plans.StatusFailed, "boom\r  = w-node-0001: ok\n  ~ fake line \u202e", nil
	rp.Targets[2].Steps[0].Diff = "+line \x1b[2J cleared\n"
	rp.Targets[2].Status, rp.Targets[2].Steps[0].Action = plans.StatusChanges, module.Change
	for _, format := range []string{FormatText, FormatMarkdown} {
		var buf bytes.Buffer
		if err := RenderPlanOpts(&buf, p, format, nil, Options{}); err != nil {
			t.Fatal(err)
		}
		out := buf.String()
		for _, bad := range []string{"\x1b", "\x07", "\r", "\u009b", "\x9b", "\u202e", "\n  ~ fake line"} {
			if strings.Contains(out, bad) {
				t.Errorf("%s view contains %q:\n%s", format, bad, out)
			}
		}
		for _, want := range []string{`\x1b]52;c;`, `\x07`, `\x0d`, `\u009b`, `\u202e`, `\x1b[2J`} {
			if !strings.Contains(out, want) {
				t.Errorf("%s view lacks the escaped form %q", format, want)
			}
		}
	}
	if Escape("ok\ttab\nline") != "ok\ttab\nline" {
		t.Error("Escape changed tab or newline")
	}
}

func TestYAMLIsTheJSONData(t *testing.T) {
	p, secrets := synthetic(2), &redact.Secrets{}
	var buf bytes.Buffer
	if err := RenderPlan(&buf, p, FormatYAML, secrets); err != nil {
		t.Fatal(err)
	}
	y := buf.String()
	for _, want := range []string{"format_version: 1\n", "runbooks:\n", "  - name: logrotate\n", "status: changes"} {
		if !strings.Contains(y, want) {
			t.Errorf("YAML plan lacks %q:\n%s", want, y)
		}
	}
}

func TestReportGroups(t *testing.T) {
	r := &plans.Report{}
	for i := 0; i < 50; i++ {
		name := fmt.Sprintf("w-node-%02d", i)
		tr := plans.TargetResult{Runbook: "logrotate", Kind: plans.TargetNode, Name: name, Address: fmt.Sprintf("10.0.0.%d", i), Status: plans.StatusChanged,
			Steps: []plans.StepResult{{ID: "config", Changed: true, Summary: "updated /etc/logrotate.d/docker on " + name}}}
		if i%10 == 9 {
			tr.Status, tr.Steps = plans.StatusFailed, []plans.StepResult{{ID: "config", Error: "exit 1: disk full"}}
		}
		r.Targets = append(r.Targets, tr)
	}
	var buf bytes.Buffer
	if err := RenderReport(&buf, r, FormatText, nil); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"changed      logrotate on 45 nodes", "config changed: updated /etc/logrotate.d/docker on {node}", "failed       logrotate on 5 nodes", "config FAILED: exit 1: disk full", "Targets: ok=0 changed=45 failed=5"} {
		if !strings.Contains(out, want) {
			t.Errorf("recap lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "\n"); n > 12 {
		t.Errorf("recap of 50 nodes is %d lines:\n%s", n, out)
	}
}

// TestFindingsOnInSyncNodesShown: a group in sync is one line only when
// nothing in it needs a look; a finding on an in-sync node is shown.
func TestFindingsOnInSyncNodesShown(t *testing.T) {
	p := synthetic(10)
	for i := range p.Runbooks[0].Targets {
		tp := &p.Runbooks[0].Targets[i]
		if tp.Status == plans.StatusOK {
			tp.Steps = append(tp.Steps, plans.StepPlan{ID: "kubelet", Module: "report", Planned: module.Planned{Action: module.Finding, Summary: "kubelet log limits",
				Findings: []module.FindingInfo{{Severity: "info", Title: "does not set containerLogMaxSize"}}}})
		}
	}
	for _, format := range []string{FormatText, FormatMarkdown} {
		var buf bytes.Buffer
		if err := RenderPlan(&buf, p, format, nil); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(buf.String(), "does not set containerLogMaxSize") {
			t.Errorf("%s: the finding on in-sync nodes is hidden:\n%s", format, buf.String())
		}
	}
}
