package engine

// Table-driven tests of the planner and apply orchestration over canned
// nodes (each node is a directory, its commands run by a local sh): skip
// rules, when:, NotReady, --max-failures, unreachable nodes, panics,
// idempotence, and saved plans that went stale.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"nksrun/engine/module"
	"nksrun/engine/module/moduletest"
	"nksrun/engine/plans"
	"nksrun/engine/runbook"
	"nksrun/engine/shell"
	"nksrun/inventory"
	"nksrun/modules/report"
)

// lineModule keeps one file on a node at a wanted content: the smallest
// module with a probe, a fingerprint, a payload and an apply. `panic: true`
// makes Plan panic (a module bug); `fail: true` makes it return an error.
type lineModule struct{}

type lineParams struct {
	Path  string `yaml:"path"`
	Want  string `yaml:"want"`
	Fail  bool   `yaml:"fail,omitempty"`
	Panic bool   `yaml:"panic,omitempty"`
}

func (lineModule) Name() string         { return "line" }
func (lineModule) Scope() module.Scope  { return module.ScopeNode }
func (lineModule) NewParams() any       { return &lineParams{} }
func (lineModule) Validate(p any) error { return nil }
func (lineModule) nodePath(t module.Target, p *lineParams) string {
	return filepath.Join(t.Node.Address, p.Path)
}

func (m lineModule) Probes(t module.Target, s module.Step) ([]module.Probe, error) {
	p := s.Params.(*lineParams)
	return []module.Probe{{Key: "cur", Command: "cat " + shell.Quote(m.nodePath(t, p))}}, nil
}

func sum(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:8]) }

func (m lineModule) Plan(_ context.Context, t module.Target, s module.Step, probes map[string]module.ProbeResult) (module.Planned, error) {
	p := s.Params.(*lineParams)
	if p.Panic {
		panic("line: bug")
	}
	if p.Fail {
		return module.Planned{}, errors.New("line: cannot plan")
	}
	cur := string(probes["cur"].Output)
	fp := map[string]string{"sum": sum(cur)}
	if cur == p.Want {
		return module.Planned{Action: module.NoOp, Summary: p.Path + " in sync", Fingerprint: fp}, nil
	}
	data, _ := json.Marshal(p.Want)
	return module.Planned{Action: module.Change, Summary: "write " + p.Path, Fingerprint: fp, Data: data}, nil
}

func (m lineModule) Apply(ctx context.Context, t module.Target, s module.Step, pl module.Planned) (module.Applied, error) {
	p := s.Params.(*lineParams)
	path := m.nodePath(t, p)
	script := fmt.Sprintf(`cur=$(cat %[1]s 2>/dev/null || true); [ "$(printf %%s "$cur" | sha256sum | cut -c1-16)" = %[2]s ] || exit 9; printf %%s %[3]s > %[1]s`,
		shell.Quote(path), shell.Quote(pl.Fingerprint["sum"]), shell.Quote(p.Want))
	res, err := t.Node.Runner.Run(ctx, script, module.RunOpts{Sudo: true})
	if err != nil {
		return module.Applied{}, err
	}
	if res.ExitCode == 9 {
		return module.Applied{}, fmt.Errorf("%w: %s", module.ErrStale, path)
	}
	return module.Applied{Changed: true, Summary: pl.Summary}, nil
}

// unreachableErr is what a transport returns for a node it cannot reach.
type unreachableErr struct{}

func (unreachableErr) Error() string     { return "dial tcp: connection refused" }
func (unreachableErr) Unreachable() bool { return true }

// localConnector gives every node a local sh runner; names in down are
// unreachable.
type localConnector struct {
	down    map[string]bool
	runners *sync.Map // host name → *moduletest.LocalRunner
}

func (c localConnector) Connect(_ context.Context, h inventory.Host) (module.Runner, error) {
	if c.down[h.Name] {
		return nil, unreachableErr{}
	}
	r := &moduletest.LocalRunner{}
	if c.runners != nil {
		c.runners.Store(h.Name, r)
	}
	return r, nil
}

const testRunbook = `name: t
title: engine test
section: "0"
params:
  want:
    type: string
    default: v2
    description: the wanted content
nodes:
  skip:
    - if: node.labels["role"] == "gpu"
      reason: gpu nodes are not ours
steps:
  - id: file
    module: line
    when: node.name != "n-when"
    with:
      path: f
      want: !expr params.want
  - id: note
    module: report
    with:
      title: done
      found: true
`

type node struct {
	name  string
	ready bool
	role  string
	file  string // content of the node's file; "" = absent
}

func setupEngine(t *testing.T, nodes []node, down map[string]bool, o Options, rbSrc string) (*Engine, *runbook.Runbook, map[string]string) {
	t.Helper()
	reg := module.Registry{"line": func() module.Module { return lineModule{} }, "report": report.New}
	dir := t.TempDir()
	src := rbSrc
	rb, err := runbook.Parse(filepath.Join(dir, "t.yaml"), []byte(src), reg)
	if err != nil {
		t.Fatal(err)
	}
	paths := map[string]string{}
	for _, n := range nodes {
		// A node is a directory; the module addresses files under it.
		nd := filepath.Join(dir, n.name)
		if err := os.MkdirAll(nd, 0o755); err != nil {
			t.Fatal(err)
		}
		paths[n.name] = filepath.Join(nd, "f")
		if n.file != "" {
			if err := os.WriteFile(paths[n.name], []byte(n.file), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		facts := map[string]any{"name": n.name, "ready": n.ready, "labels": map[string]any{"role": n.role}}
		o.Hosts = append(o.Hosts, inventory.Host{Name: n.name, Address: nd, Port: 22, Labels: map[string]string{"role": n.role}, Facts: facts})
	}
	if o.Connector == nil {
		o.Connector = localConnector{down: down}
	}
	o.Registry = reg
	e := New(o)
	t.Cleanup(e.Close)
	return e, rb, paths
}

func statuses(p *plans.Plan) map[string]string {
	out := map[string]string{}
	for _, tp := range p.Runbooks[0].Targets {
		s := string(tp.Status)
		for _, sp := range tp.Steps {
			s += " " + sp.ID + ":" + string(sp.Action)
		}
		out[tp.Name] = s
	}
	return out
}

func TestPlanner(t *testing.T) {
	for _, tc := range []struct {
		name  string
		nodes []node
		down  map[string]bool
		opts  Options
		src   string
		want  map[string]string // node → "status step:action ..."
	}{
		{
			name:  "drift, in sync, skip rule, when, NotReady",
			nodes: []node{{name: "n-drift", ready: true, file: "v1"}, {name: "n-sync", ready: true, file: "v2"}, {name: "n-gpu", ready: true, role: "gpu"}, {name: "n-when", ready: true}, {name: "n-down", ready: false}},
			want: map[string]string{
				"n-drift": "changes file:change note:finding",
				"n-sync":  "ok file:no-op note:finding",
				"n-gpu":   "skipped",
				"n-when":  "ok file:skip note:finding",
				"n-down":  "skipped",
			},
		},
		{
			name:  "NotReady planned when asked",
			nodes: []node{{name: "n-down", ready: false, file: "v1"}},
			opts:  Options{IncludeNotReady: true},
			want:  map[string]string{"n-down": "changes file:change note:finding"},
		},
		{
			name:  "unreachable and max-failures: later nodes are not planned",
			nodes: []node{{name: "a", ready: true}, {name: "b", ready: true}, {name: "c", ready: true}},
			down:  map[string]bool{"a": true, "b": true},
			opts:  Options{MaxFailures: 1, Forks: 1},
			want:  map[string]string{"a": "unreachable", "b": "not-run", "c": "not-run"},
		},
		{
			name:  "a module that panics fails its node only",
			nodes: []node{{name: "a", ready: true}, {name: "b", ready: true, file: "v2"}},
			src:   strings.Replace(testRunbook, "want: !expr params.want", "want: !expr params.want\n      panic: !expr node.name == \"a\"", 1),
			want:  map[string]string{"a": "failed", "b": "ok file:no-op note:finding"},
		},
		{
			name:  "a step that cannot plan fails the node with the step named",
			nodes: []node{{name: "a", ready: true}},
			src:   strings.Replace(testRunbook, "want: !expr params.want", "want: !expr params.want\n      fail: true", 1),
			want:  map[string]string{"a": "failed"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := tc.src
			if src == "" {
				src = testRunbook
			}
			e, rb, _ := setupEngine(t, tc.nodes, tc.down, tc.opts, src)
			p, err := e.Plan(context.Background(), []*runbook.Runbook{rb}, nil)
			if err != nil {
				t.Fatal(err)
			}
			got := statuses(p)
			for n, want := range tc.want {
				if got[n] != want {
					t.Errorf("%s: %q, want %q", n, got[n], want)
				}
			}
			for _, tp := range p.Runbooks[0].Targets {
				if tp.Status == plans.StatusFailed && !strings.Contains(tp.Reason, "step file (line)") && !strings.Contains(tp.Reason, "internal error") {
					t.Errorf("%s: failure reason does not name the step: %q", tp.Name, tp.Reason)
				}
			}
		})
	}
}

func TestApplyThenPlanIsIdempotent(t *testing.T) {
	e, rb, paths := setupEngine(t, []node{{name: "a", ready: true, file: "v1"}, {name: "b", ready: true}}, nil, Options{}, testRunbook)
	ctx := context.Background()
	p, err := e.Plan(ctx, []*runbook.Runbook{rb}, nil)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := e.Apply(ctx, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rep.Targets {
		if r.Status != plans.StatusChanged {
			t.Errorf("%s: %s (%s), want changed", r.Name, r.Status, r.Reason)
		}
	}
	for n, path := range paths {
		if b, _ := os.ReadFile(path); string(b) != "v2" {
			t.Errorf("%s: file %q after apply", n, b)
		}
	}
	p2, err := e.Plan(ctx, []*runbook.Runbook{rb}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p2.HasChanges() {
		t.Errorf("second plan has changes: %v", statuses(p2))
	}
}

func TestSavedPlanStaleTargetIsNotApplied(t *testing.T) {
	e, rb, paths := setupEngine(t, []node{{name: "a", ready: true, file: "v1"}, {name: "b", ready: true, file: "v1"}}, nil, Options{}, testRunbook)
	ctx := context.Background()
	p, err := e.Plan(ctx, []*runbook.Runbook{rb}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Someone fixes b by hand, differently, after the review.
	if err := os.WriteFile(paths["b"], []byte("by hand"), 0o644); err != nil {
		t.Fatal(err)
	}
	stale, err := e.Rederive(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if len(stale) != 1 || stale[0].Name != "b" || !strings.Contains(stale[0].Reason, "changed since the plan") {
		t.Fatalf("stale = %+v, want b only", stale)
	}
	rep, err := e.Apply(ctx, p, stale)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]plans.Status{}
	for _, r := range rep.Targets {
		got[r.Name] = r.Status
	}
	if got["a"] != plans.StatusChanged || got["b"] != plans.StatusStale {
		t.Errorf("report %v, want a changed, b stale", got)
	}
	if b, _ := os.ReadFile(paths["b"]); string(b) != "by hand" {
		t.Errorf("stale node's file overwritten: %q", b)
	}
}

func TestSavedPlanEditsAreRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(p *plans.Plan)
	}{
		{"payload", func(p *plans.Plan) { p.Runbooks[0].Targets[0].Steps[0].Data = json.RawMessage(`"evil"`) }},
		{"params", func(p *plans.Plan) {
			p.Runbooks[0].Targets[0].Steps[0].Params = json.RawMessage(`{"path":"../../etc/evil","want":"v2"}`)
		}},
		{"summary", func(p *plans.Plan) { p.Runbooks[0].Targets[0].Steps[0].Summary = "harmless" }},
		{"unknown step", func(p *plans.Plan) { p.Runbooks[0].Targets[0].Steps[0].ID = "other" }},
		{"step on the cluster", func(p *plans.Plan) { p.Runbooks[0].Targets[0].Kind = plans.TargetCluster }},
		{"undeclared param", func(p *plans.Plan) { p.Runbooks[0].Params["dest"] = "/etc/evil" }},
		{"runbook text without its hash", func(p *plans.Plan) { p.Runbooks[0].Source += "# x\n" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, rb, paths := setupEngine(t, []node{{name: "a", ready: true, file: "v1"}}, nil, Options{}, testRunbook)
			ctx := context.Background()
			p, err := e.Plan(ctx, []*runbook.Runbook{rb}, nil)
			if err != nil {
				t.Fatal(err)
			}
			tc.edit(p)
			if _, err := e.Rederive(ctx, p); !errors.Is(err, ErrPlanTampered) {
				t.Fatalf("Rederive = %v, want ErrPlanTampered", err)
			}
			if b, _ := os.ReadFile(paths["a"]); string(b) != "v1" {
				t.Errorf("file changed: %q", b)
			}
		})
	}
}

// TestSavedPlanOtherParamNamesRefused: params in a plan are read by their
// yaml names, strictly. A plan whose params use other names (Go field names,
// as json.Marshal wrote them without tags; encoding/json matched those
// case-insensitively) fails the step with an error naming the key, and
// nothing is written, even when apply is not preceded by Rederive.
func TestSavedPlanOtherParamNamesRefused(t *testing.T) {
	e, rb, paths := setupEngine(t, []node{{name: "a", ready: true, file: "v1"}}, nil, Options{}, testRunbook)
	ctx := context.Background()
	p, err := e.Plan(ctx, []*runbook.Runbook{rb}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sp := &p.Runbooks[0].Targets[0].Steps[0]
	if !strings.HasPrefix(string(sp.Params), `{"path":`) || !strings.Contains(string(sp.Params), `"want":"v2"`) {
		t.Fatalf("params in the plan = %s, want them under their yaml names", sp.Params)
	}
	sp.Params = json.RawMessage(strings.NewReplacer(`"path"`, `"Path"`, `"want"`, `"Want"`).Replace(string(sp.Params)))
	rep, err := e.Apply(ctx, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := rep.Targets[0]
	if r.Status != plans.StatusFailed || !strings.Contains(r.Reason, `params in plan: params:1:2: unknown key "Path" (did you mean "path"?)`) {
		t.Errorf("apply: %s %q, want failed with the unknown key", r.Status, r.Reason)
	}
	if b, _ := os.ReadFile(paths["a"]); string(b) != "v1" {
		t.Errorf("file changed: %q", b)
	}
}

// TestManyRunbooksOneExecPerNode: planning several runbooks (doctor plans
// all 13) reads each node's facts for all of them in one exec over one
// connection.
func TestManyRunbooksOneExecPerNode(t *testing.T) {
	runners := &sync.Map{}
	nodes := []node{{name: "a", ready: true, file: "v1"}, {name: "b", ready: true, file: "v2"}}
	e, rb1, _ := setupEngine(t, nodes, nil, Options{Connector: localConnector{runners: runners}}, testRunbook)
	reg := module.Registry{"line": func() module.Module { return lineModule{} }, "report": report.New}
	rb2, err := runbook.Parse(filepath.Join(t.TempDir(), "t2.yaml"), []byte(strings.Replace(testRunbook, "name: t\n", "name: t2\n", 1)), reg)
	if err != nil {
		t.Fatal(err)
	}
	p, err := e.Plan(context.Background(), []*runbook.Runbook{rb1, rb2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Runbooks) != 2 {
		t.Fatalf("planned %d runbooks", len(p.Runbooks))
	}
	for _, rp := range p.Runbooks {
		got := map[string]string{}
		for _, tp := range rp.Targets {
			got[tp.Name] = string(tp.Status)
		}
		if got["a"] != "changes" || got["b"] != "ok" {
			t.Errorf("runbook %s: %v", rp.Name, got)
		}
	}
	for _, n := range []string{"a", "b"} {
		r, ok := runners.Load(n)
		if !ok {
			t.Fatalf("%s: never connected", n)
		}
		if calls := r.(*moduletest.LocalRunner).Calls.Load(); calls != 1 {
			t.Errorf("%s: %d execs for two runbooks, want 1", n, calls)
		}
	}
}

// TestSavedPlanAppliedTwice: applying a saved plan whose changes are in
// place already is a no-op reported as "already applied", not stale.
func TestSavedPlanAppliedTwice(t *testing.T) {
	e, rb, paths := setupEngine(t, []node{{name: "a", ready: true, file: "v1"}}, nil, Options{}, testRunbook)
	ctx := context.Background()
	p, err := e.Plan(ctx, []*runbook.Runbook{rb}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for round := 1; round <= 2; round++ {
		stale, err := e.Rederive(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if n := Stale(stale); n != 0 {
			t.Fatalf("round %d: %d stale: %+v", round, n, stale)
		}
		before, _ := os.Stat(paths["a"])
		rep, err := e.Apply(ctx, p, stale)
		if err != nil {
			t.Fatal(err)
		}
		r := rep.Targets[0]
		switch round {
		case 1:
			if r.Status != plans.StatusChanged {
				t.Fatalf("first apply: %s %q", r.Status, r.Reason)
			}
		case 2:
			if r.Status != plans.StatusOK || !strings.Contains(r.Reason, "already applied") {
				t.Fatalf("second apply: %s %q, want ok, already applied", r.Status, r.Reason)
			}
			if after, _ := os.Stat(paths["a"]); !after.ModTime().Equal(before.ModTime()) {
				t.Error("the file was written again")
			}
		}
	}
}

// TestFactWhen: a command fact with when: runs only on the nodes where it
// holds; elsewhere it is nil and nothing runs on the node for it.
func TestFactWhen(t *testing.T) {
	mark := filepath.Join(t.TempDir(), "ran")
	src := strings.Replace(testRunbook, "nodes:\n", fmt.Sprintf("facts:\n  marked:\n    when: node.name == \"a\"\n    command: echo x >> %s; echo yes\n    sudo: true\nnodes:\n", mark), 1)
	src = strings.Replace(src, "title: done", `title: !expr '"done " + (facts.marked ?? "")'`, 1)
	e, rb, _ := setupEngine(t, []node{{name: "a", ready: true}, {name: "b", ready: true}}, nil, Options{}, src)
	if _, err := e.Plan(context.Background(), []*runbook.Runbook{rb}, nil); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(mark)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(string(b), "x"); got != 1 {
		t.Errorf("the fact's command ran %d times for two nodes, want once (node a only)", got)
	}
}

// TestFollowUpFacts: a fact whose when reads other facts (here through a
// var) is read in a second exec, only on the nodes where the first read
// says it is needed; elsewhere it is nil and the node makes one exec.
// Apply's verify decides it the same way on its fresh read.
func TestFollowUpFacts(t *testing.T) {
	mark := filepath.Join(t.TempDir(), "ran")
	facts := fmt.Sprintf(`facts:
  need:
    when: node.name == "a"
    command: echo need
  second:
    when: vars.needs_second
    command: echo x >> %s; echo 2nd
vars:
  needs_second: facts.need != nil
nodes:
`, mark)
	src := strings.Replace(testRunbook, "nodes:\n", facts, 1)
	src = strings.Replace(src, "title: done", `title: !expr '"done " + (facts.second ?? "none")'`, 1)
	src += "verify:\n  - that: '(facts.second ?? \"none\") == (node.name == \"a\" ? \"2nd\" : \"none\")'\n    message: the follow-up read ran where needed\n"
	runners := &sync.Map{}
	e, rb, _ := setupEngine(t, []node{{name: "a", ready: true, file: "v1"}, {name: "b", ready: true, file: "v1"}}, nil, Options{Connector: localConnector{runners: runners}}, src)
	if !rb.FollowUp("second") || rb.FollowUp("need") {
		t.Fatalf("follow-up: second %v, need %v; want true, false", rb.FollowUp("second"), rb.FollowUp("need"))
	}
	ctx := context.Background()
	p, err := e.Plan(ctx, []*runbook.Runbook{rb}, nil)
	if err != nil {
		t.Fatal(err)
	}
	titles := map[string]string{}
	for _, tp := range p.Runbooks[0].Targets {
		for _, sp := range tp.Steps {
			if sp.ID == "note" {
				titles[tp.Name] = sp.Summary
			}
		}
	}
	if !strings.Contains(titles["a"], "done 2nd") || !strings.Contains(titles["b"], "done none") {
		t.Errorf("titles: %q", titles)
	}
	for n, want := range map[string]int64{"a": 2, "b": 1} {
		r, ok := runners.Load(n)
		if !ok {
			t.Fatalf("%s: never connected", n)
		}
		if calls := r.(*moduletest.LocalRunner).Calls.Load(); calls != want {
			t.Errorf("%s: %d execs, want %d", n, calls, want)
		}
	}
	if b, _ := os.ReadFile(mark); strings.Count(string(b), "x") != 1 {
		t.Fatalf("the follow-up fact ran %d times at plan, want once (node a)", strings.Count(string(b), "x"))
	}
	rep, err := e.Apply(ctx, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rep.Targets {
		if r.Status != plans.StatusChanged || len(r.Verify) != 1 || !r.Verify[0].OK {
			t.Errorf("apply %s: %s %q verify %+v", r.Name, r.Status, r.Reason, r.Verify)
		}
	}
	if b, _ := os.ReadFile(mark); strings.Count(string(b), "x") != 2 {
		t.Errorf("the follow-up fact ran %d times after apply's verify, want twice (node a, plan and verify)", strings.Count(string(b), "x"))
	}
}

// TestFollowUpParseErrorStaysWithItsRunbook: two runbooks' follow-up reads
// share a node's second exec; a fact of one that does not parse fails that
// runbook's target only.
func TestFollowUpParseErrorStaysWithItsRunbook(t *testing.T) {
	withFollowUp := func(name, out, parse string) string {
		src := strings.Replace(testRunbook, "name: t\n", "name: "+name+"\n", 1)
		src = strings.Replace(src, "nodes:\n", fmt.Sprintf(`facts:
  first:
    command: echo yes
  second:
    when: facts.first == "yes"
    command: echo %s
    parse: %s
nodes:
`, out, parse), 1)
		return strings.Replace(src, "title: done", `title: !expr '"done " + string(facts.second)'`, 1)
	}
	e, bad, _ := setupEngine(t, []node{{name: "a", ready: true, file: "v2"}}, nil, Options{}, withFollowUp("bad", "abc", "int"))
	reg := module.Registry{"line": func() module.Module { return lineModule{} }, "report": report.New}
	good, err := runbook.Parse(filepath.Join(t.TempDir(), "good.yaml"), []byte(withFollowUp("good", "7", "int")), reg)
	if err != nil {
		t.Fatal(err)
	}
	p, err := e.Plan(context.Background(), []*runbook.Runbook{bad, good}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, rp := range p.Runbooks {
		tp := rp.Targets[0]
		switch rp.Name {
		case "bad":
			if tp.Status != plans.StatusFailed || !strings.Contains(tp.Reason, "follow-up read") || !strings.Contains(tp.Reason, "not an integer") {
				t.Errorf("bad: %s %q, want failed on its follow-up read", tp.Status, tp.Reason)
			}
		case "good":
			if tp.Status == plans.StatusFailed || len(tp.Steps) < 2 || !strings.Contains(tp.Steps[1].Summary, "done 7") {
				t.Errorf("good: %s %q %+v, want planned with its follow-up fact", tp.Status, tp.Reason, tp.Steps)
			}
		}
	}
}

// TestVerifyOnlyFactsAtApply: a fact only verify reads costs nothing at
// plan time; apply's verify reads it fresh after the change.
func TestVerifyOnlyFactsAtApply(t *testing.T) {
	mark := filepath.Join(t.TempDir(), "ran")
	src := strings.Replace(testRunbook, "nodes:\n", fmt.Sprintf("facts:\n  content:\n    command: echo x >> %s; echo v2\n    sudo: true\nnodes:\n", mark), 1)
	src += "verify:\n  - that: facts.content == params.want\n    message: the file holds the wanted content\n"
	e, rb, paths := setupEngine(t, []node{{name: "a", ready: true, file: "v1"}}, nil, Options{}, src)
	ctx := context.Background()
	p, err := e.Plan(ctx, []*runbook.Runbook{rb}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(mark); err == nil {
		t.Fatal("planning read a fact only verify uses")
	}
	rep, err := e.Apply(ctx, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := rep.Targets[0]
	if r.Status != plans.StatusChanged || len(r.Verify) != 1 || !r.Verify[0].OK {
		t.Fatalf("apply: %s %q verify %+v", r.Status, r.Reason, r.Verify)
	}
	if b, _ := os.ReadFile(mark); strings.Count(string(b), "x") != 1 {
		t.Errorf("verify read the fact %d times, want once", strings.Count(string(b), "x"))
	}
	if b, _ := os.ReadFile(paths["a"]); string(b) != "v2" {
		t.Errorf("file = %q", b)
	}
}

// TestApplyReleasesDoneNodes: apply closes a node's connection once the
// last runbook that targets it is done with it (so closing overlaps the
// other nodes' work), not between runbooks (which would dial again).
func TestApplyReleasesDoneNodes(t *testing.T) {
	nodes := []node{{name: "a", ready: true, file: "v1"}, {name: "b", ready: true, file: "v2"}}
	closed := &atomic.Int64{}
	conn := &dialCountingConnector{closingConnector: closingConnector{closed}}
	e, rb, _ := setupEngine(t, nodes, nil, Options{Connector: conn}, testRunbook)
	rb2, err := runbook.Parse(filepath.Join(t.TempDir(), "t2.yaml"), []byte(strings.Replace(testRunbook, "name: t\n", "name: t2\n", 1)), e.o.Registry)
	if err != nil {
		t.Fatal(err)
	}
	p, err := e.Plan(context.Background(), []*runbook.Runbook{rb, rb2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := closed.Load(); n != 0 {
		t.Fatalf("%d connections closed by the end of the plan, want 0 (apply needs them)", n)
	}
	rep, err := e.Apply(context.Background(), p, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Targets) != 4 {
		t.Fatalf("%d results", len(rep.Targets))
	}
	if n := closed.Load(); n != 2 {
		t.Errorf("%d connections closed when apply returned, want 2", n)
	}
	if n := conn.dials.Load(); n != 2 {
		t.Errorf("%d dials for 2 nodes and 2 runbooks, want 2 (one per node for the whole run)", n)
	}
	e.Close()
	if n := closed.Load(); n != 2 {
		t.Errorf("%d closes after Close, want 2 (each once)", n)
	}
}

type dialCountingConnector struct {
	closingConnector
	dials atomic.Int64
}

func (c *dialCountingConnector) Connect(ctx context.Context, h inventory.Host) (module.Runner, error) {
	c.dials.Add(1)
	return c.closingConnector.Connect(ctx, h)
}

// closingRunner is a local runner that counts its Close calls.
type closingRunner struct {
	*moduletest.LocalRunner
	closed *atomic.Int64
}

func (c closingRunner) Close() error { c.closed.Add(1); return nil }

type closingConnector struct{ closed *atomic.Int64 }

func (c closingConnector) Connect(context.Context, inventory.Host) (module.Runner, error) {
	return closingRunner{&moduletest.LocalRunner{}, c.closed}, nil
}

// TestClosePlanned: a run that only plans lets each node's connection go
// as soon as the node is planned, not at the end of the run (what held
// 1,000 connections' memory at once); one that will apply keeps them.
func TestClosePlanned(t *testing.T) {
	nodes := []node{{name: "a", ready: true, file: "v1"}, {name: "b", ready: true, file: "v2"}}
	for _, closePlanned := range []bool{true, false} {
		closed := &atomic.Int64{}
		e, rb, _ := setupEngine(t, nodes, nil, Options{Connector: closingConnector{closed}, ClosePlanned: closePlanned}, testRunbook)
		p, err := e.Plan(context.Background(), []*runbook.Runbook{rb}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := statuses(p); !strings.HasPrefix(got["a"], "changes") || !strings.HasPrefix(got["b"], "ok") {
			t.Fatalf("ClosePlanned=%v: plan %v", closePlanned, got)
		}
		want := int64(0)
		if closePlanned {
			want = 2
		}
		if n := closed.Load(); n != want {
			t.Errorf("ClosePlanned=%v: %d connections closed by the end of the plan, want %d", closePlanned, n, want)
		}
		e.Close()
		if n := closed.Load(); n != 2 {
			t.Errorf("ClosePlanned=%v: %d connections closed after Close, want 2 (each once)", closePlanned, n)
		}
	}
}
