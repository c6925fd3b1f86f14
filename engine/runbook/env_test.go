package runbook_test

import (
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/expr-lang/expr/types"
	corev1 "k8s.io/api/core/v1"

	"nksrun/engine/gather"
	"nksrun/engine/runbook"
	"nksrun/inventory"
	"nksrun/modules"
)

// envRunbook reads every kind of name: node and host fields, a typed param,
// a command fact, a Kubernetes fact, a var, an earlier step's output and
// cluster.*.
const envRunbook = `name: env
title: Env
section: "1"
params:
  replicas: {type: int, default: 3, description: n}
  runtime: {type: string, default: docker, description: r}
facts:
  units: {command: systemctl is-active rpcbind, parse: kv}
  pods: {k8s: {apiVersion: v1, kind: Pod}}
vars:
  docker: node.runtime == params.runtime
  pods: len(facts.pods)
nodes:
  skip:
    - if: node.runtime != params.runtime && !node.static
      reason: not docker
steps:
  - id: config
    module: file_sync
    when: vars.docker && host.kernel != "" && params.replicas == 3
    with: {dest: /etc/x, content: "x"}
  - id: report
    module: report
    when: steps.config.changed || steps.config.sha256 == "abc"
    with: {title: !expr 'node.name + " " + cluster.version + " " + string(vars.pods)'}
  - id: cluster_report
    module: report
    on: cluster
    when: cluster.connected && len(cluster.nodes) > 0 && cluster.nodes[0].name != ""
    with: {title: !expr 'string(len(facts.pods))'}
`

func TestEnvEvaluates(t *testing.T) {
	rb, err := runbook.Parse("env.yaml", []byte(envRunbook), modules.Registry())
	if err != nil {
		t.Fatal(err)
	}
	params, err := rb.ResolveParams(nil)
	if err != nil {
		t.Fatal(err)
	}
	// A saved plan carries params as JSON: ints come back as float64.
	b, _ := json.Marshal(params)
	var planParams map[string]any
	if err := json.Unmarshal(b, &planParams); err != nil {
		t.Fatal(err)
	}
	node := map[string]any{"name": "n1", "runtime": "docker", "kernel": 5} // a static inventory's loose value
	tests := []struct {
		name      string
		env       runbook.Env
		skip      bool
		when      bool
		reportErr string
	}{
		{
			name: "node, fresh params",
			env: runbook.Env{Params: params, Node: node, Host: map[string]any{"kernel": "5.15"},
				Facts: map[string]any{"pods": []any{map[string]any{}}}, Steps: map[string]any{},
				Cluster: &runbook.Cluster{Version: "v1.29.3", Nodes: []map[string]any{node}, Connected: true}},
			when: true,
		},
		{
			name: "node, params from a saved plan",
			env: runbook.Env{Params: planParams, Node: node, Host: map[string]any{"kernel": "5.15"},
				Facts: map[string]any{"pods": []any{}}, Steps: map[string]any{}},
			when: true,
		},
		{
			// The cluster target has no node: node.* reads as zero values
			// instead of failing a typed comparison on nil.
			name: "no node, no host",
			env:  runbook.Env{Params: params, Facts: map[string]any{"pods": []any{}}},
			skip: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.env.EvalVars(rb); err != nil {
				t.Fatal(err)
			}
			m := tc.env.Map()
			skip, err := rb.Nodes.Skip[0].If.EvalBool(m)
			if err != nil || skip != tc.skip {
				t.Errorf("skip = %v, %v; want %v", skip, err, tc.skip)
			}
			when, err := rb.Steps[0].When.EvalBool(m)
			if err != nil || when != tc.when {
				t.Errorf("when = %v, %v; want %v", when, err, tc.when)
			}
			// steps.config before config ran: not an error, false.
			tc.env.Steps = map[string]any{"config": map[string]any{"action": "no-op", "changed": false, "findings": 0}}
			got, err := rb.Steps[1].When.EvalBool(tc.env.Map())
			if err != nil || got {
				t.Errorf("report when = %v, %v; want false", got, err)
			}
		})
	}
	if node["kernel"] != 5 {
		t.Errorf("Map changed the caller's node facts: %v", node)
	}
}

func TestEnvMapTitle(t *testing.T) {
	rb, err := runbook.Parse("env.yaml", []byte(envRunbook), modules.Registry())
	if err != nil {
		t.Fatal(err)
	}
	params, err := rb.ResolveParams(nil)
	if err != nil {
		t.Fatal(err)
	}
	env := runbook.Env{Params: params, Node: map[string]any{"name": "n1"}, Facts: map[string]any{"pods": []any{1, 2}},
		Cluster: &runbook.Cluster{Version: "v1.29.3"}}
	if err := env.EvalVars(rb); err != nil {
		t.Fatal(err)
	}
	reg := modules.Registry()
	p, err := rb.Steps[1].Params(reg["report"](), env.Map())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(p)
	if !strings.Contains(string(b), `"n1 v1.29.3 2"`) {
		t.Errorf("report params = %s, want title \"n1 v1.29.3 2\"", b)
	}
}

// TestEveryModuleDeclaresOutputs: a module without declared outputs leaves
// steps.<id>.<anything> unchecked, so every module must declare them.
func TestEveryModuleDeclaresOutputs(t *testing.T) {
	for name, f := range modules.Registry() {
		od, ok := f().(runbook.OutputDeclarer)
		if !ok {
			t.Errorf("module %s does not declare its outputs (Outputs() []string)", name)
			continue
		}
		for _, k := range od.Outputs() {
			if k == "action" || k == "changed" || k == "findings" {
				t.Errorf("module %s declares %q, which the engine sets for every step", name, k)
			}
		}
	}
}

// TestDeclaredFieldsMatchTheEngine: node.* and host.* are declared here and
// filled elsewhere (inventory, gather); a field added there and not here
// would fail validate, one removed there would read as a zero value.
func TestDeclaredFieldsMatchTheEngine(t *testing.T) {
	static := filepath.Join(t.TempDir(), "inventory.yaml")
	if err := os.WriteFile(static, []byte("hosts:\n  - {name: n1, address: 10.0.0.1, user: rocky}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	hosts, err := inventory.FromFile(static)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		what     string
		got      map[string]any
		declared map[string]types.Type
	}{
		{"node.* of a cluster Node (inventory.FromNode)", inventory.FromNode(&corev1.Node{}).Facts, runbook.NodeFields},
		{"node.* of a static host (inventory.FromFile)", hosts[0].Facts, runbook.NodeFields},
		{"host.* (gather.HostFacts)", gather.HostFacts(nil), runbook.HostFields},
	}
	for _, tc := range tests {
		got := slices.Sorted(maps.Keys(tc.got))
		want := slices.Sorted(maps.Keys(tc.declared))
		if !slices.Equal(got, want) {
			t.Errorf("%s: keys %v, declared %v", tc.what, got, want)
		}
		for k, typ := range tc.declared {
			if (typ == types.String && reflect.TypeOf(tc.got[k]) != reflect.TypeOf("")) || (typ == types.Bool && reflect.TypeOf(tc.got[k]) != reflect.TypeOf(true)) {
				t.Errorf("%s: %s is %T, declared %s", tc.what, k, tc.got[k], typ)
			}
		}
	}
}
