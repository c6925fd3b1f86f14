package engine

import (
	"context"
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
	"nksrun/inventory"
)

// openCounter is a connector whose connections count how many are open at
// once: the figure PlanAndApply exists to bound.
type openCounter struct {
	down      map[string]bool
	open, max atomic.Int64
}

type countedRunner struct {
	*moduletest.LocalRunner
	c    *openCounter
	once sync.Once
}

func (r *countedRunner) Close() error {
	r.once.Do(func() { r.c.open.Add(-1) })
	return nil
}

func (c *openCounter) Connect(_ context.Context, h inventory.Host) (module.Runner, error) {
	if c.down[h.Name] {
		return nil, unreachableErr{}
	}
	n := c.open.Add(1)
	for {
		m := c.max.Load()
		if n <= m || c.max.CompareAndSwap(m, n) {
			break
		}
	}
	return &countedRunner{LocalRunner: &moduletest.LocalRunner{}, c: c}, nil
}

// TestPlanAndApply: with more nodes than --forks, apply --auto-approve
// changes each node right after planning it and lets it go, so no more
// than --forks connections are ever open; the plan and the report are what
// Plan then Apply give: drift changed, in-sync left alone (and verified),
// skipped and unreachable nodes reported, a second runbook on the same
// connection.
func TestPlanAndApply(t *testing.T) {
	nodes := []node{
		{name: "a", ready: true, file: "v1"},
		{name: "b", ready: true, file: "v2"},
		{name: "down", ready: true, file: "v1"},
		{name: "gpu", ready: true, role: "gpu", file: "v1"},
		{name: "c", ready: true},
	}
	verified := strings.Replace(testRunbook, "steps:", "verify:\n  - that: params.want == \"v2\"\n    message: wanted v2\nsteps:", 1)
	conn := &openCounter{down: map[string]bool{"down": true}}
	var mu sync.Mutex
	var order []string // phase/target of each host_result
	e, rb, paths := setupEngine(t, nodes, nil, Options{Connector: conn, Forks: 1, Observer: func(ev Event) {
		if ev.Type == EventTarget {
			mu.Lock()
			order = append(order, ev.Phase+"/"+ev.Runbook+"/"+ev.Target)
			mu.Unlock()
		}
	}}, verified)
	// A second runbook on another file of the same nodes.
	rb2, err := runbook.Parse(filepath.Join(t.TempDir(), "t2.yaml"), []byte(strings.NewReplacer("name: t\n", "name: t2\n", "path: f", "path: g").Replace(verified)), e.o.Registry)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(filepath.Dir(paths["b"]), "g"), []byte("v2"), 0o644); err != nil {
		t.Fatal(err)
	}
	rbs := []*runbook.Runbook{rb, rb2}
	if !e.Streams(rbs) {
		t.Fatal("5 nodes, --forks 1, node runbooks: Streams is false")
	}
	p, rep, err := e.PlanAndApply(context.Background(), rbs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := conn.max.Load(); got != 1 {
		t.Errorf("%d connections open at once, want 1 (--forks 1)", got)
	}
	if got := conn.open.Load(); got != 0 {
		t.Errorf("%d connections still open when PlanAndApply returned", got)
	}
	// Node by node: a node is applied before the next one is planned.
	want := []string{}
	for _, n := range nodes {
		want = append(want, "plan/t/"+n.name, "plan/t2/"+n.name, "apply/t/"+n.name, "apply/t2/"+n.name)
	}
	if strings.Join(order, " ") != strings.Join(want, " ") {
		t.Errorf("host_result order:\n got %v\nwant %v", order, want)
	}
	if len(p.Runbooks) != 2 || len(rep.Targets) != 2*len(nodes) {
		t.Fatalf("%d runbooks planned, %d results, want 2 and %d", len(p.Runbooks), len(rep.Targets), 2*len(nodes))
	}
	wantPlan := map[string]string{"a": "changes", "b": "ok", "down": "unreachable", "gpu": "skipped", "c": "changes"}
	wantRep := map[string]plans.Status{"a": plans.StatusChanged, "b": plans.StatusOK, "down": plans.StatusUnreachable, "gpu": plans.StatusSkipped, "c": plans.StatusChanged}
	for _, rp := range p.Runbooks {
		for _, tp := range rp.Targets {
			if string(tp.Status) != wantPlan[tp.Name] {
				t.Errorf("plan %s/%s: %s, want %s", rp.Name, tp.Name, tp.Status, wantPlan[tp.Name])
			}
		}
	}
	for _, r := range rep.Targets {
		if r.Status != wantRep[r.Name] {
			t.Errorf("apply %s/%s: %s (%s), want %s", r.Runbook, r.Name, r.Status, r.Reason, wantRep[r.Name])
		}
		if (r.Status == plans.StatusChanged || r.Status == plans.StatusOK) && (len(r.Verify) != 1 || !r.Verify[0].OK) {
			t.Errorf("apply %s/%s: verify %+v, want one passing check", r.Runbook, r.Name, r.Verify)
		}
	}
	for n, want := range map[string]string{"a": "v2", "b": "v2", "c": "v2", "down": "v1", "gpu": "v1"} {
		for _, f := range []string{"f", "g"} {
			path := filepath.Join(filepath.Dir(paths[n]), f)
			b, _ := os.ReadFile(path)
			if f == "g" && n != "a" && n != "b" && n != "c" {
				want = "" // never written
			}
			if string(b) != want {
				t.Errorf("%s/%s: %q, want %q", n, f, b, want)
			}
		}
	}
	// Applied for real: a fresh plan has nothing left to change.
	p2, err := e.Plan(context.Background(), rbs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p2.HasChanges() {
		t.Errorf("plan after PlanAndApply has changes: %v", statuses(p2))
	}
}

// TestPlanAndApplyMaxFailures: --max-failures counts as in Plan then
// Apply; once reached, no later node is planned or changed.
func TestPlanAndApplyMaxFailures(t *testing.T) {
	nodes := []node{{name: "a", ready: true}, {name: "b", ready: true}, {name: "c", ready: true}}
	e, rb, paths := setupEngine(t, nodes, nil, Options{Connector: &openCounter{down: map[string]bool{"a": true}}, Forks: 1, MaxFailures: 1}, testRunbook)
	_, rep, err := e.PlanAndApply(context.Background(), []*runbook.Runbook{rb}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]plans.Status{}
	for _, r := range rep.Targets {
		got[r.Name] = r.Status
	}
	if got["a"] != plans.StatusUnreachable || got["b"] != plans.StatusNotRun || got["c"] != plans.StatusNotRun {
		t.Errorf("results %v, want a unreachable, b and c not-run", got)
	}
	for _, n := range []string{"b", "c"} {
		if _, err := os.Stat(paths[n]); err == nil {
			t.Errorf("%s written after the failure limit", n)
		}
	}
}

// TestStreams: one pass over the nodes only where it keeps Apply's order
// and saves memory.
func TestStreams(t *testing.T) {
	nodes := []node{{name: "a", ready: true}, {name: "b", ready: true}}
	clusterStep := strings.Replace(testRunbook, "      found: true\n", "      found: true\n    on: cluster\n", 1)
	for _, tc := range []struct {
		name  string
		forks int
		gate  int
		src   string
		want  bool
	}{
		{"more nodes than forks", 1, 0, testRunbook, true},
		{"as many nodes as forks", 2, 0, testRunbook, false},
		{"a shared gate counts, not Forks", 1, 2, testRunbook, false},
		{"a cluster step", 1, 0, clusterStep, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := Options{Forks: tc.forks}
			if tc.gate > 0 {
				o.Gate = make(chan struct{}, tc.gate)
			}
			e, rb, _ := setupEngine(t, nodes, nil, o, tc.src)
			if tc.src == clusterStep && !rb.HasScope(module.ScopeCluster) {
				t.Fatal("the cluster-step runbook has no cluster step")
			}
			if got := e.Streams([]*runbook.Runbook{rb}); got != tc.want {
				t.Errorf("Streams: %v, want %v", got, tc.want)
			}
		})
	}
}

// TestPlanAndApplyInterrupted: an interruption after the first node leaves
// that node applied and the later ones neither planned nor changed, each
// reported as such.
func TestPlanAndApplyInterrupted(t *testing.T) {
	nodes := []node{{name: "a", ready: true}, {name: "b", ready: true}, {name: "c", ready: true}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conn := &openCounter{}
	e, rb, paths := setupEngine(t, nodes, nil, Options{Connector: conn, Forks: 1, Observer: func(ev Event) {
		if ev.Type == EventTarget && ev.Phase == "apply" {
			cancel() // Ctrl-C once the first node is done
		}
	}}, testRunbook)
	p, rep, err := e.PlanAndApply(ctx, []*runbook.Runbook{rb}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range rep.Targets {
		got[r.Name] = string(r.Status) + ": " + r.Reason
	}
	if !strings.HasPrefix(got["a"], "changed") {
		t.Errorf("a: %s, want changed", got["a"])
	}
	for _, n := range []string{"b", "c"} {
		if got[n] != "not-run: not planned: interrupted" {
			t.Errorf("%s: %q, want not-run, not planned: interrupted", n, got[n])
		}
		if _, err := os.Stat(paths[n]); err == nil {
			t.Errorf("%s written after the interruption", n)
		}
	}
	if s := statuses(p); s["b"] != "not-run" || s["c"] != "not-run" {
		t.Errorf("plan: %v, want b and c not-run", s)
	}
	if n := conn.max.Load(); n != 1 || conn.open.Load() != 0 {
		t.Errorf("connections: %d at most, %d left open; want 1 and 0 (b and c never dialled)", n, conn.open.Load())
	}
}

// TestPlanAndApplyPanic: a module that panics while planning one node fails
// that node (at plan time, never applied) and no other.
func TestPlanAndApplyPanic(t *testing.T) {
	nodes := []node{{name: "a", ready: true, file: "v1"}, {name: "b", ready: true, file: "v1"}}
	src := strings.Replace(testRunbook, "want: !expr params.want", "want: !expr params.want\n      panic: !expr node.name == \"a\"", 1)
	conn := &openCounter{}
	e, rb, paths := setupEngine(t, nodes, nil, Options{Connector: conn, Forks: 1}, src)
	_, rep, err := e.PlanAndApply(context.Background(), []*runbook.Runbook{rb}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]plans.TargetResult{}
	for _, r := range rep.Targets {
		got[r.Name] = r
	}
	if r := got["a"]; r.Status != plans.StatusFailed || !strings.Contains(r.Reason, "at plan time: internal error") {
		t.Errorf("a: %s (%s), want failed at plan time with the internal error", r.Status, r.Reason)
	}
	if r := got["b"]; r.Status != plans.StatusChanged {
		t.Errorf("b: %s (%s), want changed", r.Status, r.Reason)
	}
	if b, _ := os.ReadFile(paths["a"]); string(b) != "v1" {
		t.Errorf("a's file: %q, want v1 untouched", b)
	}
	if n := conn.open.Load(); n != 0 {
		t.Errorf("%d connections left open (a's must be let go too)", n)
	}
}
