// Package optest runs data-driven module cases, in the spirit of pyinfra's
// operation tests: each case gives a module's parameters and the state of a
// node (or canned probe outputs), and expects the action, fingerprint,
// summary, diff and the exact script Apply sends (golden). Every case that
// plans a change is then applied to a simulated node and planned again,
// which must be a no-op: a module that is not idempotent fails here.
//
// A case is testdata/modules/<module>/<case>.yaml; its golden file is the
// same name with .golden, rewritten by `go test -update`.
//
// The simulated node is a temp directory, NODE. Every command the module
// sends (probes and Apply's script) runs with the local /bin/sh in its own
// mount namespace (unshare -m) where NODE/etc/default, NODE/boot and
// NODE/sys/firmware are bind-mounted over /etc/default, /boot and
// /sys/firmware, and NODE/bin (the testbed's stand-ins for systemctl,
// grub2-mkconfig, grubby, ...) comes first on PATH. So the module's own
// probe commands read what its own apply script wrote, at the paths a real
// node has, and nothing on the host changes.
package optest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"

	"go.yaml.in/yaml/v3"

	"nksrun/engine/module"
	"nksrun/engine/module/moduletest"
	"nksrun/engine/shell"
	"nksrun/testdata/golden"
)

// Case is one testdata/modules/<module>/<case>.yaml.
type Case struct {
	// About says what the case shows (one line; it heads the golden file).
	About string `yaml:"about"`
	// Params is the step's `with:` mapping, decoded strictly into the
	// module's NewParams().
	Params yaml.Node `yaml:"params"`
	// Facts are the node's facts (osFamily, osImage, host: {os, cmdline}).
	Facts map[string]any `yaml:"facts"`
	// Node is the simulated node's state before the plan.
	Node *NodeState `yaml:"node"`
	// Probes, instead of Node, are canned probe outputs (key → output):
	// the case then checks only the plan (no apply, no idempotence run).
	Probes map[string]CannedProbe `yaml:"probes"`
	// Objects are Kubernetes objects created before the plan (cluster
	// modules). "$NS" in them and in params is the case's own namespace.
	Objects []map[string]any `yaml:"objects"`
	// Deleting names objects ("Kind name") deleted right after they are
	// created, so the ones with finalizers are left terminating.
	Deleting []string `yaml:"deleting"`
	// Now is the plan's time (RFC 3339) for modules that write it
	// (rollout_restart); default 2026-01-02T03:04:05Z.
	Now string `yaml:"now"`
	// KnownBug marks a case that shows a bug not fixed yet (name such
	// files BUG_*.yaml): it is skipped unless CI is set, where it fails
	// until the module is fixed. Say what is wrong.
	KnownBug string `yaml:"known_bug"`
	// Secrets are values that must never be in the plan (summary, diff,
	// data, outputs) nor on a command line; stdin may carry them (they are
	// shown as "(secret)" in the golden file).
	Secrets []string `yaml:"secrets"`
	Expect  Expect   `yaml:"expect"`
}

// CannedProbe is what a node answered to one probe.
type CannedProbe struct {
	Output string `yaml:"output"`
	Exit   int    `yaml:"exit"`
}

// NodeState is the simulated node.
type NodeState struct {
	// Files under /etc/default, /boot or /sys/firmware: path → content.
	Files map[string]string `yaml:"files"`
	// Modes of Files (default 0644): path → octal.
	Modes map[string]string `yaml:"modes"`
	// Owners of Files (default root:root): path → "user:group".
	Owners map[string]string `yaml:"owners"`
	// Symlinks: path → target.
	Symlinks map[string]string `yaml:"symlinks"`
	// Dirs to create (e.g. /sys/firmware/efi).
	Dirs []string `yaml:"dirs"`
	// Units: systemd unit → ActiveState (the systemctl stand-in's state).
	Units map[string]string `yaml:"units"`
	// RestartFails lists units whose start/restart fails.
	RestartFails []string `yaml:"restart_fails"`
	// Bin lists the testbed stand-ins installed on the node's PATH
	// (systemctl, grub2-mkconfig, grub-mkconfig, update-grub, grubby).
	Bin []string `yaml:"bin"`
	// GrubBroken makes the grub-mkconfig stand-in fail after writing FILE.new.
	GrubBroken bool `yaml:"grub_broken"`
}

// Expect is what the case must give.
type Expect struct {
	Action module.Action `yaml:"action"`
	// Diff, if set, is the exact diff the plan must show (most cases
	// leave the diff to the golden file).
	Diff string `yaml:"diff"`
	// Reason, if set, is a substring the plan's reason must contain.
	Reason string `yaml:"reason"`
	// PlanError, if set, is a substring of the error Plan must return.
	PlanError string `yaml:"plan_error"`
	// ApplyError, if set, is a substring of the error Apply must return;
	// the node must then be exactly as before (files and units).
	ApplyError string `yaml:"apply_error"`
	// Again is the action planned after apply. It defaults to no-op (the
	// idempotence check); only a module that changes something on every
	// run by design (systemd_restart with always: true) may declare more.
	Again module.Action `yaml:"again"`
	// Between is a shell command run on the node after the plan and
	// before apply (someone else's change); a failed apply must then leave
	// the node as Between left it.
	Between string `yaml:"between"`
	// Files the node must hold after apply (path → content).
	Files map[string]string `yaml:"files"`
}

// Dir is the absolute path of testdata/modules.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "testdata", "modules")
}

func standins() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "testdata", "testbed", "standins")
}

// Run runs every case of testdata/modules/<dir> against m.
func Run(t *testing.T, m module.Module, dir string) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(Dir(), dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no cases in %s (%v)", filepath.Join(Dir(), dir), err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		t.Run(name, func(t *testing.T) {
			// Each case has its own node directory; systemd_restart's
			// failure cases spend seconds in the module's own waits.
			t.Parallel()
			RunCase(t, m, f)
		})
	}
}

// LoadCase reads one case file strictly.
func LoadCase(path string) (*Case, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var c Case
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if c.Expect.Action == "" && c.Expect.PlanError == "" {
		return nil, fmt.Errorf("%s: expect.action or expect.plan_error is required", path)
	}
	if c.Node != nil && c.Probes != nil {
		return nil, fmt.Errorf("%s: give node or probes, not both", path)
	}
	return &c, nil
}

// DecodeParams decodes a case's params strictly into m's parameter struct
// and validates them, as the engine does at load time.
func DecodeParams(m module.Module, n *yaml.Node) (any, error) {
	p := m.NewParams()
	if n.Kind != 0 {
		// Through a YAML round trip: Node.Decode has no strict mode.
		b, err := yaml.Marshal(n)
		if err != nil {
			return nil, err
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(p); err != nil {
			return nil, fmt.Errorf("params: %w", err)
		}
	}
	if err := m.Validate(p); err != nil {
		return nil, fmt.Errorf("params: %w", err)
	}
	return p, nil
}

// AsInPlan returns params as apply gets them from a saved plan: written by
// module.ParamsToJSON and read back by module.ParamsFromJSON into a fresh
// m.NewParams(). Anything lost or changed on the way is an error: what was
// reviewed is what runs.
func AsInPlan(t testing.TB, m module.Module, params any) any {
	t.Helper()
	raw, err := module.ParamsToJSON(params)
	if err != nil {
		t.Fatalf("params into the plan: %v", err)
	}
	back := m.NewParams()
	if err := module.ParamsFromJSON(raw, back); err != nil {
		t.Fatalf("params from the plan %s: %v", raw, err)
	}
	if !reflect.DeepEqual(back, params) {
		t.Errorf("params changed on their way through the plan file:\n got %#v\nwant %#v\n(JSON %s)", back, params, raw)
	}
	return back
}

// plannedAsInPlan is a module's Planned as apply reads it back from a plan
// file (plans travel as JSON): apply gets what a reader would.
func plannedAsInPlan(t testing.TB, pl module.Planned) module.Planned {
	t.Helper()
	b, err := json.Marshal(pl)
	if err != nil {
		t.Fatal(err)
	}
	var back module.Planned
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	return back
}

// RunCase runs one node or any-scope case file (see Run).
func RunCase(t testing.TB, m module.Module, path string) {
	if abs, err := filepath.Abs(path); err == nil {
		path = abs // golden files sit next to the case
	}
	c, err := LoadCase(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.KnownBug != "" && os.Getenv("CI") == "" {
		t.Skipf("known bug (fails with CI set): %s", c.KnownBug)
	}
	params, err := DecodeParams(m, &c.Params)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	step := module.Step{ID: "step", Params: params}
	var node *SimNode
	if c.Node != nil {
		node = NewSimNode(t, c.Node)
	}
	rec := &recorder{secrets: c.Secrets}
	tgt := module.Target{RunbookDir: filepath.Dir(path)}
	if m.Scope() != module.ScopeCluster {
		tgt.Node = &module.Node{Name: "n1", Address: "192.0.2.1", Facts: c.Facts}
		if node != nil {
			rec.inner = node
			tgt.Node.Runner = rec
		}
	}
	var g strings.Builder
	fmt.Fprintf(&g, "# %s\n", c.About)

	probe := func() map[string]module.ProbeResult {
		t.Helper()
		if c.Probes != nil {
			out := map[string]module.ProbeResult{}
			for k, v := range c.Probes {
				out[k] = module.ProbeResult{Output: []byte(v.Output), ExitCode: v.Exit}
			}
			return out
		}
		var probes []module.Probe
		if prober, ok := m.(module.Prober); ok {
			var err error
			if probes, err = prober.Probes(tgt, step); err != nil {
				t.Fatalf("probes: %v", err)
			}
		}
		out := map[string]module.ProbeResult{}
		for _, p := range probes {
			if node == nil {
				t.Fatalf("probe %s needs a node: give node or probes", p.Key)
			}
			if !p.Sudo {
				// Every probe the modules have runs as root; a new one
				// that does not is worth a look.
				t.Logf("probe %s runs without sudo", p.Key)
			}
			r, err := node.Run(ctx, p.Command, module.RunOpts{Sudo: p.Sudo})
			if err != nil {
				t.Fatalf("probe %s: %v", p.Key, err)
			}
			out[p.Key] = module.ProbeResult{Output: r.Stdout, ExitCode: r.ExitCode}
		}
		return out
	}
	plan := func() (module.Planned, error) {
		t.Helper()
		pl, err := m.Plan(ctx, tgt, step, probe())
		if err != nil {
			return pl, err
		}
		return plannedAsInPlan(t, pl), nil
	}

	var before string
	if node != nil {
		before = node.Snapshot(t)
	}
	pl, err := plan()
	if node != nil {
		// Plan never changes anything on the node.
		if after := node.Snapshot(t); after != before {
			t.Errorf("planning changed the node:\n%s", golden.LineDiff(before, after))
		}
		if rec.n != 0 {
			t.Errorf("Plan ran %d commands itself; modules run commands only through Probes", rec.n)
		}
	}
	if c.Expect.PlanError != "" {
		if err == nil || !strings.Contains(err.Error(), c.Expect.PlanError) {
			t.Fatalf("plan error = %v, want one containing %q", err, c.Expect.PlanError)
		}
		g.WriteString("plan error: " + err.Error() + "\n")
		finish(t, path, node, &g, c.Secrets)
		return
	}
	if err != nil {
		t.Fatalf("plan: %v", err)
	}
	if pl.Action != c.Expect.Action {
		t.Errorf("action = %s, want %s (summary %q, reason %q)", pl.Action, c.Expect.Action, pl.Summary, pl.Reason)
	}
	if c.Expect.Diff != "" && pl.Diff != c.Expect.Diff {
		t.Errorf("diff:\n%s\nwant:\n%s", pl.Diff, c.Expect.Diff)
	}
	if c.Expect.Reason != "" && !strings.Contains(pl.Reason, c.Expect.Reason) {
		t.Errorf("reason = %q, want one containing %q", pl.Reason, c.Expect.Reason)
	}
	writePlan(&g, "plan", pl)
	planJSON, _ := json.Marshal(pl)
	for _, sec := range c.Secrets {
		if strings.Contains(string(planJSON), sec) {
			t.Errorf("secret %q is in the plan", sec)
		}
	}
	if pl.Action != module.Change {
		if c.Expect.ApplyError != "" || c.Expect.Files != nil {
			t.Errorf("expect.apply_error/files given, but the plan is %s: nothing is applied", pl.Action)
		}
		finish(t, path, node, &g, c.Secrets)
		return
	}
	if node == nil {
		finish(t, path, node, &g, c.Secrets)
		return
	}

	if c.Expect.Between != "" {
		r, err := node.Run(ctx, c.Expect.Between, module.RunOpts{})
		if err != nil || r.ExitCode != 0 {
			t.Fatalf("between: exit %d, %v: %s", r.ExitCode, err, r.Stderr)
		}
		fmt.Fprintf(&g, "\n== between plan and apply\n%s\n", c.Expect.Between)
		before = node.Snapshot(t)
	}
	// Apply gets the params as a saved plan holds them, like pl.
	ap, err := m.Apply(ctx, tgt, module.Step{ID: step.ID, Params: AsInPlan(t, m, params)}, pl)
	g.WriteString("\n== apply sends\n")
	for _, cmd := range rec.cmds {
		g.WriteString(cmd)
	}
	if c.Expect.ApplyError != "" {
		if err == nil || !strings.Contains(err.Error(), c.Expect.ApplyError) {
			t.Fatalf("apply error = %v, want one containing %q", err, c.Expect.ApplyError)
		}
		fmt.Fprintf(&g, "\n== apply error\n%s\n", err)
		// A failed apply leaves the node as it was, and the next plan
		// proposes the same change again.
		if after := node.Snapshot(t); after != before {
			t.Errorf("failed apply changed the node:\n%s", golden.LineDiff(before, after))
		}
		again, err := plan()
		if err != nil {
			t.Fatalf("plan after the failed apply: %v", err)
		}
		if c.Expect.Between == "" && (again.Action != pl.Action || again.Summary != pl.Summary) {
			t.Errorf("plan after the failed apply = %s %q, want the first plan's %s %q", again.Action, again.Summary, pl.Action, pl.Summary)
		}
		finish(t, path, node, &g, c.Secrets)
		return
	}
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	if !ap.Changed {
		t.Errorf("apply of a change reported Changed=false: %+v", ap)
	}
	fmt.Fprintf(&g, "\n== applied\nchanged: %v\nsummary: %s\noutputs: %s\n", ap.Changed, ap.Summary, jsonString(ap.Outputs))
	for p, want := range c.Expect.Files {
		got, err := os.ReadFile(node.Path(p))
		if err != nil {
			t.Errorf("after apply: %v", err)
		} else if string(got) != want {
			t.Errorf("after apply %s =\n%s\nwant\n%s", p, got, want)
		}
	}

	checkAgain(t, plan, c.Expect.Again, &g)
	finish(t, path, node, &g, c.Secrets)
}

// checkAgain is the idempotence check of every case: planning again over
// the state apply left must give expect (no-op unless the case says
// otherwise), and that plan goes into the golden file.
func checkAgain(t testing.TB, plan func() (module.Planned, error), expect module.Action, g *strings.Builder) {
	t.Helper()
	again, err := plan()
	if err != nil {
		t.Fatalf("plan after apply: %v", err)
	}
	if expect == "" {
		expect = module.NoOp
	}
	if again.Action != expect {
		t.Errorf("not idempotent: the plan after apply is %s %q (reason %q), want %s", again.Action, again.Summary, again.Reason, expect)
	}
	g.WriteString("\n")
	writePlan(g, "plan after apply", again)
}

func finish(t testing.TB, path string, node *SimNode, g *strings.Builder, secrets []string) {
	t.Helper()
	if node != nil {
		g.WriteString("\n== node at the end\n")
		g.WriteString(node.Snapshot(t))
	}
	out := g.String()
	for _, sec := range secrets {
		out = strings.ReplaceAll(out, sec, "(secret)")
	}
	if node != nil {
		out = strings.ReplaceAll(out, node.Root, "$NODE")
	}
	// Backup names carry the apply's time, temp file names a random id.
	out = stampRE.ReplaceAllString(out, "${1}YYYYMMDDhhmmss")
	out = tempIDRE.ReplaceAllString(out, "${1}RANDOM~")
	golden.Assert(t, strings.TrimSuffix(path, ".yaml")+".golden", []byte(out))
}

var (
	stampRE  = regexp.MustCompile(`([.-])20\d{12}`)
	tempIDRE = regexp.MustCompile(`(\.nksrun-[^/\s"]*\.)[0-9a-f]{16}~`)
)

func writePlan(g *strings.Builder, title string, pl module.Planned) {
	fmt.Fprintf(g, "== %s\naction: %s\nsummary: %s\n", title, pl.Action, pl.Summary)
	if pl.Reason != "" {
		fmt.Fprintf(g, "reason: %s\n", pl.Reason)
	}
	keys := make([]string, 0, len(pl.Fingerprint))
	for k := range pl.Fingerprint {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(g, "fingerprint %s: %s\n", k, pl.Fingerprint[k])
	}
	if pl.Outputs != nil {
		fmt.Fprintf(g, "outputs: %s\n", jsonString(pl.Outputs))
	}
	for _, f := range pl.Findings {
		fmt.Fprintf(g, "finding: %s\n", jsonString(f))
	}
	if len(pl.Data) > 0 {
		fmt.Fprintf(g, "data: %s\n", pl.Data)
	}
	if pl.Diff != "" {
		fmt.Fprintf(g, "diff:\n%s", pl.Diff)
	}
}

func jsonString(v any) string {
	b, err := json.Marshal(v) // map keys sorted
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	return string(b)
}

// recorder keeps every command sent through it, with its options and stdin,
// for the golden file.
type recorder struct {
	inner   module.Runner
	secrets []string
	n       int
	cmds    []string
}

func (r *recorder) Run(ctx context.Context, command string, opts module.RunOpts) (module.RunResult, error) {
	r.n++
	for _, sec := range r.secrets {
		if strings.Contains(command, sec) {
			return module.RunResult{}, fmt.Errorf("optest: a secret is on the command line of command %d", r.n)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "--- command %d (sudo %v, timeout %v)\n%s", r.n, opts.Sudo, opts.Timeout, command)
	if !strings.HasSuffix(command, "\n") {
		b.WriteString("\n")
	}
	if opts.Stdin != nil {
		in, err := io.ReadAll(opts.Stdin)
		if err != nil {
			return module.RunResult{}, err
		}
		opts.Stdin = bytes.NewReader(in)
		shown := string(in)
		for _, sec := range r.secrets {
			shown = strings.ReplaceAll(shown, sec, "(secret)")
		}
		fmt.Fprintf(&b, "--- stdin (%d bytes)\n%s", len(in), shown)
		if len(in) > 0 && !bytes.HasSuffix(in, []byte("\n")) {
			b.WriteString("\n")
		}
	}
	res, err := r.inner.Run(ctx, command, opts)
	fmt.Fprintf(&b, "--- exit %d\n", res.ExitCode)
	r.cmds = append(r.cmds, b.String())
	return res, err
}

// SimNode is a temp directory standing in for a node (see the package doc).
type SimNode struct {
	Root   string
	runner moduletest.LocalRunner
	mounts []string // those of mounts this host has a directory for
}

// mounts are the node directories bind-mounted from Root.
var mounts = []string{"/etc/default", "/boot", "/sys/firmware"}

// NewSimNode builds a node from s. It skips the test when this machine
// cannot make mount namespaces, unless CI is set (then it fails).
func NewSimNode(t testing.TB, s *NodeState) *SimNode {
	t.Helper()
	n := &SimNode{Root: t.TempDir()}
	for _, d := range append(append([]string{"/bin", "/state/units"}, mounts...), s.Dirs...) {
		if err := os.MkdirAll(n.Path(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// A host without one of the directories (a container without
	// /sys/firmware) cannot mount over it: fine unless the case puts
	// something there.
	for _, m := range mounts {
		if fi, err := os.Stat(m); err == nil && fi.IsDir() {
			n.mounts = append(n.mounts, m)
			continue
		}
		for _, p := range append(slices.Collect(maps.Keys(s.Files)), s.Dirs...) {
			if p == m || strings.HasPrefix(p, m+"/") {
				msg := fmt.Sprintf("cannot simulate %s: this host has no %s to mount over", p, m)
				if os.Getenv("CI") != "" {
					t.Fatal(msg)
				}
				t.Skip(msg)
			}
		}
	}
	// Can this machine make the namespace at all?
	r, err := n.Run(context.Background(), "true", module.RunOpts{})
	if err != nil || r.ExitCode != 0 {
		msg := fmt.Sprintf("cannot simulate a node here (unshare -m with bind mounts): %v %s", err, r.Stderr)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	for p, content := range s.Files {
		if !under(p) {
			t.Fatalf("node file %s: only files under %v are simulated", p, mounts)
		}
		mode := os.FileMode(0o644)
		if m, ok := s.Modes[p]; ok {
			if _, err := fmt.Sscanf(m, "%o", &mode); err != nil {
				t.Fatalf("mode of %s: %v", p, err)
			}
		}
		if err := os.MkdirAll(filepath.Dir(n.Path(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(n.Path(p), []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(n.Path(p), mode); err != nil { // past the umask
			t.Fatal(err)
		}
		if o, ok := s.Owners[p]; ok {
			r, err := n.Run(context.Background(), "chown "+shell.Quote(o)+" "+shell.Quote(p), module.RunOpts{})
			if err != nil || r.ExitCode != 0 {
				t.Fatalf("chown %s %s: exit %d, %v: %s", o, p, r.ExitCode, err, r.Stderr)
			}
		}
	}
	for p, target := range s.Symlinks {
		if !under(p) {
			t.Fatalf("node symlink %s: only paths under %v are simulated", p, mounts)
		}
		if err := os.Symlink(target, n.Path(p)); err != nil {
			t.Fatal(err)
		}
	}
	for u, st := range s.Units {
		if err := os.WriteFile(n.Path("/state/units/"+u), []byte(st+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, u := range s.RestartFails {
		if err := os.WriteFile(n.Path("/state/units/"+u+".restart-fails"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if s.GrubBroken {
		if err := os.WriteFile(n.Path("/state/grub-broken"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// What the grub-mkconfig stand-in reads about "its" node.
	if err := os.WriteFile(n.Path("/state/node"), []byte("OS_PRETTY='Rocky Linux 8.10'\nKERNEL=4.18.0-553.el8_10.x86_64\nROOT_UUID=0f6b7c1e-1111-4222-8333-944455556666\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, b := range s.Bin {
		src := b
		if b == "grub2-mkconfig" {
			src = "grub-mkconfig"
		}
		code, err := os.ReadFile(filepath.Join(standins(), src))
		if err != nil {
			t.Fatalf("stand-in %s: %v", b, err)
		}
		// The stand-ins keep their state in /var/lib/nksrun-testbed; here
		// it is the node's own directory, so nothing on the host is used.
		code = bytes.ReplaceAll(code, []byte("/var/lib/nksrun-testbed"), []byte(n.Path("/state")))
		if err := os.WriteFile(n.Path("/bin/"+b), code, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

func under(p string) bool {
	for _, m := range mounts {
		if p == m || strings.HasPrefix(p, m+"/") {
			return true
		}
	}
	return false
}

// Path is node path p on the host.
func (n *SimNode) Path(p string) string { return filepath.Join(n.Root, p) }

// Run runs command "on the node": as root (the test is root, or in a user
// namespace mapping it to root), whatever opts.Sudo says, in the node's
// mount namespace.
func (n *SimNode) Run(ctx context.Context, command string, opts module.RunOpts) (module.RunResult, error) {
	var setup strings.Builder
	setup.WriteString("set -e\n")
	for _, m := range n.mounts {
		fmt.Fprintf(&setup, "mount --bind %s %s\n", shell.Quote(n.Path(m)), shell.Quote(m))
	}
	// LC_ALL=C: tool messages in the golden files do not depend on the
	// machine's locale.
	fmt.Fprintf(&setup, "PATH=%s:$PATH; LC_ALL=C; export PATH LC_ALL\nset +e\nexec sh -c \"$1\"\n", shell.Quote(n.Path("/bin")))
	args := []string{"unshare", "-m"}
	if os.Geteuid() != 0 {
		args = append(args, "-r")
	}
	args = append(args, "--", "sh", "-c", setup.String(), "node")
	if opts.UserScript != "" {
		// Everything runs as the node's root here; the user script still
		// comes first, in the node's namespace, as on a real node.
		command = "( eval " + shell.Quote(opts.UserScript) + " ) </dev/null\n" + command
		opts.UserScript = ""
	}
	var q []string
	for _, a := range append(args, command) {
		q = append(q, shell.Quote(a))
	}
	wrapped := strings.Join(q, " ")
	opts.Sudo = false
	return n.runner.Run(ctx, wrapped, opts)
}

// owner names a file's owner when it is not the node's root (the test's
// own uid, or the uid a user namespace maps to root).
func owner(fi os.FileInfo) string {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || int(st.Uid) == os.Geteuid() && int(st.Gid) == os.Getegid() {
		return ""
	}
	return fmt.Sprintf(" owner %d:%d", st.Uid, st.Gid)
}

// Snapshot lists the node's files (mode, content; units' states) in a
// stable order, for comparisons and the golden file.
func (n *SimNode) Snapshot(t testing.TB) string {
	t.Helper()
	var b strings.Builder
	var paths []string
	err := filepath.WalkDir(n.Root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel := filepath.ToSlash(strings.TrimPrefix(p, n.Root))
		if rel == "/bin" || rel == "/state/node" {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.IsDir() {
			paths = append(paths, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(paths)
	for _, p := range paths {
		fi, err := os.Lstat(n.Path(p))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			target, _ := os.Readlink(n.Path(p))
			fmt.Fprintf(&b, "%s -> %s\n", p, target)
			continue
		}
		c, err := os.ReadFile(n.Path(p))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s %04o%s\n", p, fi.Mode().Perm(), owner(fi))
		for _, l := range strings.SplitAfter(string(c), "\n") {
			if l != "" {
				b.WriteString("  | " + strings.TrimSuffix(l, "\n") + "\n")
			}
		}
	}
	return b.String()
}
