package runbook

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"nksrun/modules"
)

// fuzzRunbook declares one name of each kind for FuzzCompileExpr.
const fuzzRunbook = `name: f
title: F
section: "1"
params:
  p: {type: string, default: x, description: p}
  n: {type: int, description: n}
facts:
  lines: {command: "true", parse: lines}
  kv: {command: "true", parse: kv}
  pods: {k8s: {apiVersion: v1, kind: Pod}}
vars:
  v: params.p
steps:
  - {id: a, module: report, with: {title: x}}
  - {id: b, module: report, on: cluster, with: {title: x}}
`

// FuzzCompileExpr compiles arbitrary expressions against a declared
// environment, on a node and on the cluster: compiling never panics, every
// error is positioned inside the file, and what compiles evaluates against
// the zero environment without panicking (an error is fine).
func FuzzCompileExpr(f *testing.F) {
	seeds := []string{
		`node.runtime != "docker"`, `facts.kv.x == "y"`, `steps.a.found`, `vars.v + params.p`,
		`filter(facts.pods, .metadata?.name matches "^x")`, `let node = 1; node.x`, `steps["a"].changed`,
		`cluster.nodes[0].kernel`, "node.kernel ==\n  host.kernel", `$env.node.x`, `facts.lines[0]`,
	}
	// Every expression of the shipped runbooks (read as plain YAML: the
	// modules cannot be imported here, they import this package).
	files, _ := filepath.Glob("../../runbooks/*.yaml")
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		var doc yaml.Node
		if err := yaml.Unmarshal(b, &doc); err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, exprScalars(&doc, false)...)
	}
	for _, s := range seeds {
		if s != "" {
			f.Add(s)
		}
	}
	rb, err := Parse("f.yaml", []byte(fuzzRunbook), modules.Registry())
	if err != nil {
		f.Fatal(err)
	}
	d := newDeclEnv(rb, nil)
	d.vars = []string{"v"}
	d.steps = []stepDecl{{id: "a", scope: "node", typ: stepType([]string{"found"}, true)}, {id: "b", scope: "cluster", typ: stepType(nil, false)}}
	zero := (&Env{}).Map()
	f.Fuzz(func(t *testing.T, src string) {
		for _, sc := range []scope{d.skipScope(), d.varScope(), d.targetScope("node"), d.targetScope("cluster")} {
			e := Expr{Source: src, Pos: Pos{File: "f.yaml", Line: 3, Col: 7}, node: &yaml.Node{Kind: yaml.ScalarNode, Value: src}}
			if err := compileExpr(&e, d, sc, false); err != nil {
				if err.Pos.Line < 3 || err.Pos.Col < 1 || !strings.HasPrefix(err.Error(), "f.yaml:") {
					t.Fatalf("%q: badly positioned error %q", src, err.Error())
				}
				continue
			}
			_, _ = e.Eval(zero)
		}
	})
}

// exprScalars finds the expressions of a runbook document: if, when, that,
// vars values and !expr scalars.
func exprScalars(n *yaml.Node, isExpr bool) []string {
	var out []string
	if n.Kind == yaml.ScalarNode && (isExpr || n.Tag == "!expr") {
		return []string{n.Value}
	}
	for i, c := range n.Content {
		sub := false
		if n.Kind == yaml.MappingNode && i%2 == 1 {
			k := n.Content[i-1].Value
			sub = k == "if" || k == "when" || k == "that"
		}
		if n.Kind == yaml.MappingNode && i%2 == 1 && n.Content[i-1].Value == "vars" && c.Kind == yaml.MappingNode {
			for j := 1; j < len(c.Content); j += 2 {
				out = append(out, exprScalars(c.Content[j], true)...)
			}
			continue
		}
		out = append(out, exprScalars(c, sub)...)
	}
	return out
}
