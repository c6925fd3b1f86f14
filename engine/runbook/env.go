package runbook

import (
	"fmt"
	"maps"
	"sort"
	"strings"
	"sync"

	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/types"
)

// Env is the environment an expression runs in. It is the one place the
// engine builds it (plan, apply, verify, stale re-check): fill what exists
// for the target and hand Map() to Eval.
//
// Every name an expression may read is declared at load time (see declEnv),
// so a typo fails `nksrun validate` instead of evaluating to nil.
type Env struct {
	// Params are the resolved params: ResolveParams, or a saved plan's. A
	// param with a default or required is typed, so it must be present.
	Params map[string]any
	// Node is the node.* facts: inventory.Host.Facts. Nil for the cluster
	// target; missing fields read as their zero value.
	Node map[string]any
	// Host is host.* (gather.HostFacts), nil until the node's facts are read.
	Host map[string]any
	// Facts are the runbook's declared facts: Kubernetes facts and, on a
	// node, the parsed command facts.
	Facts map[string]any
	// Vars are the runbook's vars; EvalVars fills them.
	Vars map[string]any
	// Steps holds steps.<id> of the steps done so far on this target.
	// Map shares it (no copy), so a step registered after Map is visible;
	// set it to an empty map before registering into it.
	Steps map[string]any
	// Cluster is cluster.*, shared by every target of a run (nil reads as
	// no cluster).
	Cluster *Cluster
}

// Cluster is cluster.*, computed once per run and shared by the targets.
// Its fields must not change once an Env using it has been mapped.
type Cluster struct {
	// Version is the API server's GitVersion ("" without a cluster).
	Version string
	// Nodes are every inventory host's node.* facts.
	Nodes []map[string]any
	// Connected is true when a cluster is configured.
	Connected bool

	once sync.Once
	m    map[string]any
}

// env is cluster.* as expressions read it, built once: at 200 nodes the
// list would otherwise be copied for every step of every node.
func (c *Cluster) env() map[string]any {
	if c == nil {
		return map[string]any{"version": "", "nodes": []any{}, "connected": false}
	}
	c.once.Do(func() {
		nodes := make([]any, len(c.Nodes))
		for i, n := range c.Nodes {
			nodes[i] = n
		}
		c.m = map[string]any{"version": c.Version, "nodes": nodes, "connected": c.Connected}
	})
	return c.m
}

// Map returns the environment as expr.Run (and Expr.Eval) wants it: node,
// host and cluster complete with every declared field.
func (e *Env) Map() map[string]any {
	return map[string]any{
		EnvParams:  orEmpty(e.Params),
		EnvNode:    complete(e.Node, nodeFields),
		EnvHost:    complete(e.Host, hostFields),
		EnvFacts:   orEmpty(e.Facts),
		EnvVars:    orEmpty(e.Vars),
		EnvSteps:   orEmpty(e.Steps),
		EnvCluster: e.Cluster.env(),
	}
}

// EvalVars computes the runbook's vars in file order (each sees the ones
// above it) and stores them in e.Vars.
func (e *Env) EvalVars(rb *Runbook) error { return e.EvalVarsOnly(rb, nil) }

// EvalVarsOnly is EvalVars for the vars in only (nil: all); the others are
// left out (planning skips those only verify reads, see PlanReads).
func (e *Env) EvalVarsOnly(rb *Runbook, only map[string]bool) error {
	m := e.Map()
	vars := map[string]any{}
	m[EnvVars] = vars
	for i := range rb.Vars {
		if only != nil && !only[rb.Vars[i].Name] {
			continue
		}
		v, err := rb.Vars[i].Expr.Eval(m)
		if err != nil {
			return fmt.Errorf("vars.%s: %w", rb.Vars[i].Name, err)
		}
		vars[rb.Vars[i].Name] = v
	}
	e.Vars = vars
	return nil
}

func orEmpty(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return m
}

// NodeFields are the node.* names: what inventory.FromNode and FromFile put
// in Host.Facts. Strings and booleans are typed, so `node.ready == "true"`
// fails validate; labels is a map of any label.
var NodeFields = map[string]types.Type{
	"name":           types.String,
	"address":        types.String,
	"hostname":       types.String,
	"labels":         types.Map{types.Extra: types.Any},
	"nodegroup":      types.String,
	"role":           types.String,
	"osImage":        types.String,
	"osFamily":       types.String,
	"kernel":         types.String,
	"runtime":        types.String,
	"runtimeVersion": types.String,
	"kubelet":        types.String,
	"ready":          types.Bool,
	"unschedulable":  types.Bool,
	"user":           types.String,
	"static":         types.Bool,
	// The Node's identity (status.nodeInfo), checked against host.*.
	"bootID":     types.String,
	"machineID":  types.String,
	"systemUUID": types.String,
	// images is every name in the Node's status.images, the kubelet's own
	// report of the node's image store: digests then tags, at most 5 names
	// per image, of at most 50 images (kubelet's --node-status-max-images),
	// largest first, refreshed within about a minute while the node is
	// Ready. Evidence of presence only: a name listed was in the store at
	// the last report; one not listed may still be there. [] for a static
	// inventory.
	"images": types.Array(types.String),
}

// HostFields are the host.* names, read over SSH (gather.BuiltinProbes).
var HostFields = map[string]types.Type{
	"bootID":  types.String,
	"cmdline": types.String,
	"kernel":  types.String,
	"os":      types.String,
	// The host's identity, compared with the Node's.
	"machineID":   types.String,
	"productUUID": types.String,
}

var (
	nodeFields = NodeFields
	hostFields = HostFields
)

// complete returns m with every declared field present and of its declared
// type: a missing one (the cluster target has no node; a saved plan's node
// may be gone from the inventory) reads as "" or false, and a static
// inventory's `kernel: 5` as "5". Typed fields compile to typed comparisons,
// which would fail on nil. m itself is never modified (it is shared between
// targets); it is returned as is when nothing is missing.
func complete(m map[string]any, fields map[string]types.Type) map[string]any {
	if isComplete(m, fields) {
		return m
	}
	out := make(map[string]any, len(fields)+len(m))
	maps.Copy(out, m)
	for k, t := range fields {
		v, present := out[k]
		if fits(v, t) {
			continue
		}
		switch t {
		case types.String:
			if present && v != nil {
				out[k] = fmt.Sprint(v)
			} else {
				out[k] = ""
			}
		case types.Bool:
			out[k] = false
		case nodeFields["images"]:
			if !present || v == nil {
				out[k] = []string{}
			}
		default:
			if !present || v == nil {
				out[k] = map[string]any{}
			}
		}
	}
	return out
}

func isComplete(m map[string]any, fields map[string]types.Type) bool {
	if m == nil {
		return false
	}
	for k, t := range fields {
		if !fits(m[k], t) {
			return false
		}
	}
	return true
}

func fits(v any, t types.Type) bool {
	switch t {
	case types.String:
		_, ok := v.(string)
		return ok
	case types.Bool:
		_, ok := v.(bool)
		return ok
	}
	return v != nil
}

// completeEnv is Map's completion for an environment built as a map literal
// (the engine's older call sites): it copies the top level only when node or
// host needs completing.
func completeEnv(env map[string]any) map[string]any {
	n, _ := env[EnvNode].(map[string]any)
	h, _ := env[EnvHost].(map[string]any)
	if isComplete(n, nodeFields) && isComplete(h, hostFields) {
		return env
	}
	out := maps.Clone(env)
	out[EnvNode], out[EnvHost] = complete(n, nodeFields), complete(h, hostFields)
	return out
}

// OutputDeclarer is implemented by modules that declare the outputs their
// steps register, read by later steps as steps.<id>.<key>. A module without
// it leaves steps.<id> open (any key compiles).
type OutputDeclarer interface {
	Outputs() []string
}

// registeredKeys are set for every step by the engine (engine `registered`).
var registeredKeys = []string{"action", "changed", "findings"}

// scope decides which names exist where an expression runs.
type scope struct {
	names []string // top-level names, in the order error messages list them
	env   types.Map
	// why the other top-level names do not exist here.
	why string
}

// declEnv is the declared environment of one runbook, built while it is
// validated.
type declEnv struct {
	rb     *Runbook
	params types.Map
	// facts by where they exist: command facts only on nodes.
	factsNode, factsCluster types.Map
	// steps declared so far, in order, and every step's id → index (for
	// "runs later" hints).
	steps   []stepDecl
	stepIdx map[string]int
	// stepLine is every step's line, for "runs later" hints.
	stepLine []int
	// vars declared so far.
	vars []string
	// varLine is every var's line, for "defined below" hints.
	varLine map[string]int
}

type stepDecl struct {
	id    string
	scope string
	typ   types.Type
}

func newDeclEnv(rb *Runbook, stepLine []int) *declEnv {
	d := &declEnv{rb: rb, stepLine: stepLine, params: types.Map{}, factsNode: types.Map{}, factsCluster: types.Map{}, stepIdx: map[string]int{}, varLine: map[string]int{}}
	for name, p := range rb.Params {
		d.params[name] = paramType(p)
	}
	for name, f := range rb.Facts {
		t := factType(f)
		d.factsNode[name] = t
		if f.K8s != nil {
			d.factsCluster[name] = t
		}
	}
	for i := range rb.Steps {
		if _, dup := d.stepIdx[rb.Steps[i].ID]; !dup {
			d.stepIdx[rb.Steps[i].ID] = i
		}
	}
	d.steps = make([]stepDecl, 0, len(rb.Steps))
	return d
}

// paramType is a param's type where its value always has it: a param with
// no default that is not required is absent (nil) when not --set, and int
// params come back as float64 from a saved plan's JSON.
func paramType(p Param) types.Type {
	set := p.Default != nil || p.Required
	switch p.Type {
	case "string":
		if set {
			return types.String
		}
	case "bool":
		if set {
			return types.Bool
		}
	case "list":
		return types.Array(types.Any)
	case "map":
		return types.Map{types.Extra: types.Any}
	}
	return types.Any
}

// factType is what a fact's parser yields. A command that fails yields nil,
// and a fact not read (verify reads only what it needs) is absent, so
// scalars stay untyped; lists and maps are typed by shape.
func factType(f Fact) types.Type {
	if f.K8s != nil {
		if f.K8s.Name != "" {
			return types.Any // one object, or nil when absent
		}
		return types.Array(types.Any)
	}
	switch f.Parse {
	case "lines":
		return types.Array(types.String)
	case "kv":
		return types.Map{types.Extra: types.Any}
	}
	return types.Any
}

func nodeType() types.Map {
	m := types.Map{}
	for k, t := range nodeFields {
		m[k] = t
	}
	return m
}

func hostType() types.Map {
	m := types.Map{}
	for k, t := range hostFields {
		m[k] = t
	}
	return m
}

func clusterType() types.Map {
	// cluster.nodes holds the inventory's facts as they are (not completed):
	// names are checked, values untyped.
	n := types.Map{}
	for k := range nodeFields {
		n[k] = types.Any
	}
	return types.Map{"version": types.String, "connected": types.Bool, "nodes": types.Array(n)}
}

func (d *declEnv) varsType() types.Map {
	m := types.Map{}
	for _, v := range d.vars {
		m[v] = types.Any
	}
	return m
}

// stepsType is steps.* as seen from a target of scope sc: the steps already
// declared that run there.
func (d *declEnv) stepsType(sc string) types.Map {
	m := types.Map{}
	for _, s := range d.steps {
		if s.scope == sc {
			m[s.id] = s.typ
		}
	}
	return m
}

// stepType is steps.<id>: what the engine registers for every step plus the
// module's declared outputs (values untyped: a skipped step has none).
func stepType(outputs []string, declared bool) types.Type {
	m := types.Map{}
	for _, k := range registeredKeys {
		m[k] = types.Any
	}
	m["action"], m["changed"] = types.String, types.Bool
	for _, k := range outputs {
		m[k] = types.Any
	}
	if !declared {
		m[types.Extra] = types.Any
	}
	return m
}

// Scopes.
func (d *declEnv) skipScope() scope {
	return scope{names: envBeforeConnect, env: types.Map{EnvParams: d.params, EnvNode: nodeType(), EnvCluster: clusterType()},
		why: "skip rules are checked before nksrun connects to the node"}
}

func (d *declEnv) varScope() scope {
	// Vars are computed for every target, node or cluster: node and host
	// read as zero values on the cluster, command facts as nil.
	return scope{names: envVars, env: types.Map{
		EnvParams: d.params, EnvNode: nodeType(), EnvHost: hostType(), EnvFacts: d.factsNode,
		EnvCluster: clusterType(), EnvVars: d.varsType(),
	}, why: "vars are computed before any step runs"}
}

// targetScope is a step's condition and parameters, or a verify check, on
// a target of kind sc (node or cluster).
func (d *declEnv) targetScope(sc string) scope {
	if sc == "cluster" {
		return scope{names: envCluster, env: types.Map{
			EnvParams: d.params, EnvFacts: d.factsCluster, EnvCluster: clusterType(),
			EnvVars: d.varsType(), EnvSteps: d.stepsType(sc),
		}, why: "this runs on the cluster target, which has no node"}
	}
	return scope{names: envFull, env: types.Map{
		EnvParams: d.params, EnvNode: nodeType(), EnvHost: hostType(), EnvFacts: d.factsNode,
		EnvCluster: clusterType(), EnvVars: d.varsType(), EnvSteps: d.stepsType(sc),
	}}
}

// nameError is an undeclared name found by checkNames.
type nameError struct {
	loc file.Location
	msg string
}

// checkNames walks the member chains rooted at environment names (node.x,
// steps.a.b, facts["x"]) and reports the first name that is not declared in
// sc, with a "did you mean". Unknown top-level names are left to expr's
// checker, which reports them the same way.
func (d *declEnv) checkNames(src string, sc scope) *nameError {
	tree, err := parser.Parse(src)
	if err != nil {
		return nil // expr.Compile reports it
	}
	w := &nameWalker{d: d, sc: sc, shadow: map[string]bool{}}
	ast.Walk(&tree.Node, shadowCollector(w.shadow))
	ast.Walk(&tree.Node, w)
	return w.err
}

type shadowCollector map[string]bool

func (c shadowCollector) Visit(n *ast.Node) {
	if v, ok := (*n).(*ast.VariableDeclaratorNode); ok {
		c[v.Name] = true
	}
}

type nameWalker struct {
	d      *declEnv
	sc     scope
	shadow map[string]bool
	err    *nameError
}

func (w *nameWalker) Visit(n *ast.Node) {
	if w.err != nil {
		return
	}
	m, ok := (*n).(*ast.MemberNode)
	if !ok {
		return
	}
	// Flatten the chain: root identifier and the string properties after it.
	var props []*ast.StringNode
	var cur ast.Node = m
	for {
		switch c := cur.(type) {
		case *ast.ChainNode:
			cur = c.Node
			continue
		case *ast.MemberNode:
			s, ok := c.Property.(*ast.StringNode)
			if !ok {
				props = nil // facts[x].y: cannot follow a computed key
			} else {
				props = append(props, s)
			}
			cur = c.Node
			continue
		}
		break
	}
	root, ok := cur.(*ast.IdentifierNode)
	if !ok || w.shadow[root.Value] || len(props) == 0 {
		return
	}
	t, ok := w.sc.env[root.Value]
	if !ok {
		return // not available here: expr reports "unknown name"
	}
	// props were collected outermost first.
	path := root.Value
	for i := len(props) - 1; i >= 0; i-- {
		tm, ok := t.(types.Map)
		if !ok {
			return // a list, a scalar or untyped: nothing more to check
		}
		key := props[i].Value
		next, found := tm[key]
		if !found {
			if _, open := tm[types.Extra]; open {
				return
			}
			w.err = &nameError{loc: props[i].Location(), msg: w.d.unknownField(path, key, tm)}
			return
		}
		t, path = next, path+"."+key
	}
}

// unknownField explains an undeclared key of path (known: its declared keys).
func (d *declEnv) unknownField(path, key string, known types.Map) string {
	switch {
	case path == EnvSteps:
		if i, ok := d.stepIdx[key]; ok {
			if i >= len(d.steps) {
				line := 0
				if i < len(d.stepLine) {
					line = d.stepLine[i]
				}
				return fmt.Sprintf("steps.%s does not exist here: step %s (line %d) has not run yet when this is evaluated; only earlier steps' outputs can be read", key, key, line)
			}
			return fmt.Sprintf("steps.%s does not exist here: step %s runs on %s, and steps.* holds only the steps of the same target", key, key, d.steps[i].scope)
		}
	case path == EnvVars:
		if line, ok := d.varLine[key]; ok {
			return fmt.Sprintf("vars.%s does not exist here: it is defined below (line %d); a var reads only the vars above it", key, line)
		}
	case path == EnvFacts:
		if f, ok := d.rb.Facts[key]; ok && f.K8s == nil {
			return fmt.Sprintf("facts.%s does not exist here: it is a command fact, read on nodes only, and this runs on the cluster", key)
		}
	}
	names := make([]string, 0, len(known))
	for k := range known {
		names = append(names, k)
	}
	sort.Strings(names)
	what := "unknown field"
	if strings.HasPrefix(path, EnvSteps+".") && strings.Count(path, ".") == 1 {
		what = "undeclared output"
	}
	switch path {
	case EnvParams:
		what = "undeclared param"
	case EnvFacts:
		what = "undeclared fact"
	case EnvVars:
		what = "undeclared var"
	case EnvSteps:
		what = "unknown step"
	}
	has := strings.Join(names, ", ")
	if has == "" {
		has = "nothing"
	}
	return fmt.Sprintf("%s %s.%s%s (%s has: %s)", what, path, key, suggest(key, names), path, has)
}
