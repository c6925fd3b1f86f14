package runbook_test

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"nksrun/engine/runbook"
	"nksrun/modules"
	"nksrun/modules/filesync"
	"nksrun/testdata/golden"
)

// nameErrRE matches the errors that name an undeclared name (path in group 1).
var nameErrRE = regexp.MustCompile(`(?:undeclared \w+|unknown field|unknown name) ([\w.]+)|([\w.]+) does not exist here`)

// TestBadRunbooks loads every runbook in testdata/runbooks/bad and compares
// the positioned errors with the .err golden file next to it.
func TestBadRunbooks(t *testing.T) {
	files, err := filepath.Glob("../../testdata/runbooks/bad/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no bad runbooks found: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			rb, err := runbook.Load(f, modules.Registry())
			if err == nil {
				t.Fatalf("loaded %s without error: %+v", f, rb)
			}
			var es runbook.Errors
			if !errors.As(err, &es) {
				t.Fatalf("error is %T, want runbook.Errors: %v", err, err)
			}
			src, _ := os.ReadFile(f)
			lines := strings.Split(string(src), "\n")
			for _, e := range es {
				if e.Pos.File != f || e.Pos.Line < 1 || e.Pos.Col < 1 {
					t.Errorf("error without a full position: %q", e.Error())
					continue
				}
				// An undeclared name is reported at the column of the name
				// itself, inside the expression.
				if m := nameErrRE.FindStringSubmatch(e.Msg); m != nil {
					path := m[1] + m[2]
					name := path[strings.LastIndex(path, ".")+1:]
					line := lines[e.Pos.Line-1]
					if e.Pos.Col-1 >= len(line) || !strings.HasPrefix(line[e.Pos.Col-1:], name) {
						t.Errorf("%s: column %d does not point at %q in %q", e.Pos, e.Pos.Col, name, line)
					}
				}
			}
			got := strings.ReplaceAll(err.Error(), "../../testdata/runbooks/bad/", "") + "\n"
			abs, err := filepath.Abs(strings.TrimSuffix(f, ".yaml") + ".err")
			if err != nil {
				t.Fatal(err)
			}
			golden.Assert(t, abs, []byte(got))
		})
	}
}

func TestGoodRunbookEvaluates(t *testing.T) {
	src := `name: good
title: Good
section: "5"
params:
  arg:
    type: string
    default: cgroup.memory=nokmem
    description: the kernel argument
nodes:
  skip:
    - if: versionMajor(node.kernel) >= 5
      reason: kernel 5 or later
steps:
  - id: write
    module: file_sync
    when: '!hasWord(host.cmdline, params.arg)'
    with:
      dest: !expr '"/etc/" + params.arg'
      content: !expr 'params.arg + "\n"'
      mode: "0600"
`
	rb, err := runbook.Parse("good.yaml", []byte(src), modules.Registry())
	if err != nil {
		t.Fatal(err)
	}
	params, err := rb.ResolveParams(map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]any{
		"params": params, "node": map[string]any{"kernel": "3.10.0-1160.el7.x86_64"},
		"host": map[string]any{"cmdline": "ro quiet"}, "facts": map[string]any{}, "cluster": map[string]any{}, "steps": map[string]any{},
	}
	skip, err := rb.Nodes.Skip[0].If.EvalBool(env)
	if err != nil || skip {
		t.Fatalf("skip = %v, %v; want false for kernel 3.10", skip, err)
	}
	when, err := rb.Steps[0].When.EvalBool(env)
	if err != nil || !when {
		t.Fatalf("when = %v, %v; want true", when, err)
	}
	reg := modules.Registry()
	p, err := rb.Steps[0].Params(reg["file_sync"](), env)
	if err != nil {
		t.Fatal(err)
	}
	fp := p.(*filesync.Params)
	if fp.Dest != "/etc/cgroup.memory=nokmem" || fp.Content == nil || *fp.Content != "cgroup.memory=nokmem\n" || fp.Mode != "0600" {
		t.Fatalf("evaluated params = %+v", fp)
	}
}

func TestResolveParams(t *testing.T) {
	src := `name: p
title: P
section: "1"
params:
  n: {type: int, default: 3, description: n}
  on: {type: bool, default: false, description: on}
  names: {type: list, description: names}
  token: {type: string, description: token, secret: true, required: true}
steps:
  - {id: a, module: report, with: {title: x}}
`
	rb, err := runbook.Parse("p.yaml", []byte(src), modules.Registry())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		set     map[string]string
		wantErr string
		check   func(map[string]any) bool
	}{
		{set: map[string]string{}, wantErr: "needs --set token"},
		{set: map[string]string{"token": "s3cret", "n": "7", "on": "true", "names": "a, b"}, check: func(m map[string]any) bool {
			l, _ := m["names"].([]any)
			return m["n"] == 7 && m["on"] == true && len(l) == 2 && l[1] == "b"
		}},
		{set: map[string]string{"token": "x", "n": "seven"}, wantErr: `"seven" is not an integer`},
		{set: map[string]string{"token": "x", "nope": "1"}, wantErr: `no param "nope"`},
		{set: map[string]string{"token": "x", "names": "[1,2"}, wantErr: "not a JSON list"},
	}
	for _, tc := range tests {
		got, err := rb.ResolveParams(tc.set)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ResolveParams(%v) error = %v, want %q", tc.set, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !tc.check(got) {
			t.Errorf("ResolveParams(%v) = %v, %v", tc.set, got, err)
		}
	}
	if s := rb.SecretParams(); len(s) != 1 || s[0] != "token" {
		t.Errorf("SecretParams = %v", s)
	}
}

func TestVersionCompare(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"3.10.0-1160.el7.x86_64", "5", -1},
		{"4.18.0-553.el8_10.x86_64", "4.18", 0},
		{"5.15.0-113-generic", "5.4", 1},
		{"v1.24.3", "1.24.3", 0},
		{"v1.29.3", "v1.29.10", -1},
		{"v3.28.0", "v3.28.2", -1},
		{"v1.24.3+k3s1", "v1.24", 1},
		{"", "1", -1},
	}
	for _, tc := range tests {
		if got := runbook.VersionCompare(tc.a, tc.b); got != tc.want {
			t.Errorf("VersionCompare(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

// FuzzParse feeds arbitrary bytes to the loader: it must never panic, and
// every error it returns must carry a position.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob("../../testdata/runbooks/bad/*.yaml")
	seeds = append(seeds, "../../runbooks/logrotate.yaml")
	for _, s := range seeds {
		if b, err := os.ReadFile(s); err == nil {
			f.Add(b)
		}
	}
	reg := modules.Registry()
	f.Fuzz(func(t *testing.T, src []byte) {
		_, err := runbook.Parse("fuzz.yaml", src, reg)
		if err == nil {
			return
		}
		var es runbook.Errors
		if !errors.As(err, &es) {
			t.Fatalf("unpositioned error %T: %v", err, err)
		}
		for _, e := range es {
			if !strings.HasPrefix(e.Error(), "fuzz.yaml:") {
				t.Fatalf("error without file position: %q", e.Error())
			}
		}
	})
}

func TestVars(t *testing.T) {
	src := `name: v
title: V
section: "1"
facts:
  images: {command: crictl images -q, parse: lines}
vars:
  images: facts.images ?? []
  missing: 'filter(["pause", "kube-proxy"], {# not in vars.images})'
steps:
  - id: r
    module: report
    with:
      found: !expr len(vars.missing) > 0
      title: !expr '"missing: " + join(vars.missing, ", ")'
  - {id: not_yet_defined, module: report, with: {title: x}}
`
	rb, err := runbook.Parse("v.yaml", []byte(src), modules.Registry())
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]any{"params": map[string]any{}, "node": map[string]any{}, "host": map[string]any{},
		"facts": map[string]any{"images": []any{"pause"}}, "cluster": map[string]any{}, "steps": map[string]any{}}
	if err := rb.EvalVars(env); err != nil {
		t.Fatal(err)
	}
	vars := env["vars"].(map[string]any)
	if m, _ := vars["missing"].([]any); len(m) != 1 || m[0] != "kube-proxy" {
		t.Errorf("vars.missing = %v", vars["missing"])
	}
	if rb.Steps[0].Uses()["vars"] != true {
		t.Errorf("step using vars is not marked as such: %v", rb.Steps[0].Uses())
	}
}

// TestPlanReads: planning a node reads the facts and vars its node steps
// use, directly or through vars; what only verify reads waits for verify.
func TestPlanReads(t *testing.T) {
	const head = `name: t
title: t
section: "0"
facts:
  a: {command: echo a}
  b: {command: echo b}
  c: {command: echo c}
`
	tests := []struct {
		name  string
		body  string
		facts string // sorted, comma separated; "all" = nil
		vars  string
	}{
		{"step when and with", `steps:
  - {id: r, module: report, when: 'facts.a != ""', with: {title: !expr 'facts["b"] ?? "x"'}}
verify:
  - {that: 'facts.c == "c"', message: m}
`, "a,b", ""},
		{"through vars, verify-only var left out", `vars:
  x: facts.a
  y: vars.x + "!"
  z: facts.c
steps:
  - {id: r, module: report, with: {title: !expr vars.y}}
verify:
  - {that: 'vars.z == "c"', message: m}
`, "a", "x,y"},
		{"optional chain", `steps:
  - {id: r, module: report, with: {title: !expr 'facts.b?.x ?? "none"'}}
`, "b", ""},
		{"the whole map", `steps:
  - {id: r, module: report, with: {title: !expr 'string(len(facts))'}}
`, "all", "all"},
	}
	join := func(m map[string]bool) string {
		if m == nil {
			return "all"
		}
		var s []string
		for k := range m {
			s = append(s, k)
		}
		slices.Sort(s)
		return strings.Join(s, ",")
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rb, err := runbook.Parse("t.yaml", []byte(head+tt.body), modules.Registry())
			if err != nil {
				t.Fatal(err)
			}
			facts, vars := rb.PlanReads()
			if join(facts) != tt.facts || join(vars) != tt.vars {
				t.Errorf("PlanReads = facts %q vars %q, want %q %q", join(facts), join(vars), tt.facts, tt.vars)
			}
		})
	}
}
