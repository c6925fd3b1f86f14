// Package runbook loads and validates runbook YAML. Every mistake a loader
// can see (unknown keys, wrong types, missing fields, expressions that do not
// compile, unknown modules or module parameters) is reported as
// file:line:col before any host is contacted.
package runbook

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"nksrun/engine/module"
	"nksrun/engine/strictyaml"
)

// Runbook is one loaded, validated runbook.
type Runbook struct {
	Path   string `yaml:"-"`
	Dir    string `yaml:"-"`
	Source []byte `yaml:"-"`
	// Hash is the sha256 of Source; saved plans carry it.
	Hash string `yaml:"-"`

	Name        string           `yaml:"name" nks:"required"`
	Title       string           `yaml:"title" nks:"required"`
	Section     string           `yaml:"section" nks:"required"`
	Description string           `yaml:"description"`
	Params      map[string]Param `yaml:"params"`
	Nodes       NodeSelect       `yaml:"nodes"`
	Facts       map[string]Fact  `yaml:"facts"`
	// VarsNode holds `vars:`, a mapping of names to expressions computed per
	// target once its facts are read, in file order (a var may use the ones
	// above it). Steps and verify read them as vars.<name>, so a derived
	// value is written once, not in every step that needs it.
	VarsNode yaml.Node `yaml:"vars"`
	Vars     []Var     `yaml:"-"`
	Steps    []Step    `yaml:"steps" nks:"required"`
	Verify   []Check   `yaml:"verify"`

	// planFacts, planVars: see PlanReads.
	planFacts, planVars map[string]bool
	// followUps, followUpVars: see FollowUp and FollowUpVars.
	followUps, followUpVars map[string]bool
}

// FollowUp reports whether the command fact name is a follow-up read: its
// `when` reads facts, vars or host, so it is decided on what the node's
// first read returned, and read (in a second exec) only on the nodes where
// it holds. §3 lists a node's image store only where the kubelet's own
// report (node.images) does not already show every image the node needs.
func (rb *Runbook) FollowUp(name string) bool { return rb.followUps[name] }

// FollowUpVars are the vars that follow-up facts' conditions read, directly
// or through other vars: computed from the first read before the follow-up
// reads are decided. None of them reads a follow-up fact (the loader
// refuses such a runbook).
func (rb *Runbook) FollowUpVars() map[string]bool { return rb.followUpVars }

// PlanReads is what planning a node needs beyond params, node and host:
// the facts and vars that its node steps' conditions and parameters read,
// directly or through other vars. Facts and vars that only verify reads
// are not read at plan time (verify reads its own, fresh, after the
// change): logrotate's plan no longer hashes all of /etc/logrotate.d on
// every node. nil means all (an expression reads the whole map).
func (rb *Runbook) PlanReads() (facts, vars map[string]bool) {
	return rb.planFacts, rb.planVars
}

// computePlanReads fills planFacts and planVars from the compiled
// expressions.
func (rb *Runbook) computePlanReads() {
	facts, vars := map[string]bool{}, map[string]bool{}
	all := false
	take := func(e *Expr) {
		for root, into := range map[string]map[string]bool{EnvFacts: facts, EnvVars: vars} {
			for name := range e.Members[root] {
				all = all || name == "*"
				into[name] = true
			}
		}
	}
	for i := range rb.Steps {
		s := &rb.Steps[i]
		if s.Scope() != module.ScopeNode {
			continue
		}
		take(&s.When)
		for _, e := range s.exprs {
			take(e)
		}
	}
	// A var reads only vars above it: walking up closes the set.
	closeVars := func() {
		for i := len(rb.Vars) - 1; i >= 0; i-- {
			if vars[rb.Vars[i].Name] {
				take(&rb.Vars[i].Expr)
			}
		}
	}
	closeVars()
	// A follow-up fact needs what its condition reads; that reads no
	// follow-up fact (validateFactConditions), so one more pass closes it.
	for name := range rb.followUps {
		if facts[name] {
			w := rb.Facts[name].When
			take(&w)
		}
	}
	closeVars()
	if all {
		return
	}
	rb.planFacts, rb.planVars = facts, vars
}

// Var is one computed value of `vars:`.
type Var struct {
	Name string
	Expr Expr
}

// EvalVars computes the runbook's vars against env (which must already hold
// params, node, host, facts and cluster) and stores them as env["vars"].
//
// Deprecated: build a runbook.Env and call Env.EvalVars.
func (rb *Runbook) EvalVars(env map[string]any) error {
	vars := map[string]any{}
	env[EnvVars] = vars
	for i := range rb.Vars {
		v, err := rb.Vars[i].Expr.Eval(env)
		if err != nil {
			return fmt.Errorf("vars.%s: %w", rb.Vars[i].Name, err)
		}
		vars[rb.Vars[i].Name] = v
	}
	return nil
}

// Param is a typed runbook parameter, set with --set name=value.
type Param struct {
	Type        string `yaml:"type" nks:"required"` // string | int | bool | list | map
	Default     any    `yaml:"default"`
	Description string `yaml:"description" nks:"required"`
	// Secret values are redacted from every plan, log and error.
	Secret   bool `yaml:"secret"`
	Required bool `yaml:"required"`
}

// NodeSelect narrows the nodes a runbook's node steps run on. Skip rules are
// checked before nksrun connects, so they may only use params, node and cluster.
type NodeSelect struct {
	Skip []SkipRule `yaml:"skip"`
}

// SkipRule skips a node, showing Reason, when If holds.
type SkipRule struct {
	If     Expr   `yaml:"if" nks:"required"`
	Reason string `yaml:"reason" nks:"required"`
}

// Fact is a declared fact: a command on each node with a parser, or a
// Kubernetes object lookup done once per run.
type Fact struct {
	Command string   `yaml:"command"`
	Sudo    bool     `yaml:"sudo"`
	Parse   string   `yaml:"parse"` // text (default) | lines | int | json | kv | exitcode
	K8s     *K8sFact `yaml:"k8s"`
	// When limits a command fact to the nodes where it holds (params, node
	// and cluster only, like skip rules): elsewhere the command is not run
	// and the fact is nil. Reading a node costs CPU on it; a fact only some
	// nodes need should say so.
	When Expr `yaml:"when"`
}

// K8sFact looks Kubernetes objects up. With Name it yields one object (or
// nil); without, a list.
type K8sFact struct {
	APIVersion    string `yaml:"apiVersion" nks:"required"`
	Kind          string `yaml:"kind" nks:"required"`
	Namespace     string `yaml:"namespace"`
	Name          string `yaml:"name"`
	LabelSelector string `yaml:"labelSelector"`
	FieldSelector string `yaml:"fieldSelector"`
	// Events adds each object's events as `_events` (list of messages), for
	// pods whose pull failures are explained there.
	Events bool `yaml:"events"`
	// Optional: a kind the API server does not serve (a CRD that is not
	// installed, e.g. Calico's FelixConfiguration) reads as no objects ([])
	// instead of an error, and a list the credentials may not read
	// (forbidden) as nil, so that the runbook can say it cannot tell.
	Optional bool `yaml:"optional"`
}

// Step is one module invocation.
type Step struct {
	ID     string    `yaml:"id" nks:"required"`
	Name   string    `yaml:"name"`
	Module string    `yaml:"module" nks:"required"`
	On     string    `yaml:"on"` // node | cluster, for modules that run on either
	When   Expr      `yaml:"when"`
	With   yaml.Node `yaml:"with"`
	Pos    Pos       `yaml:"-"`

	scope module.Scope
	exprs map[*yaml.Node]*Expr
}

// Scope is where the step runs.
func (s *Step) Scope() module.Scope { return s.scope }

// Uses is every top-level name read by the step's condition and parameters.
func (s *Step) Uses() map[string]bool {
	u := map[string]bool{}
	for k := range s.When.Uses {
		u[k] = true
	}
	for _, e := range s.exprs {
		for k := range e.Uses {
			u[k] = true
		}
	}
	return u
}

// Check is a verify condition evaluated after apply.
type Check struct {
	That    Expr   `yaml:"that" nks:"required"`
	Message string `yaml:"message" nks:"required"`
	On      string `yaml:"on"` // node (default when the runbook has node steps) | cluster
}

// Target is the kind of target the check runs on: On, or node when the
// runbook has node steps and cluster otherwise.
func (c *Check) Target(rb *Runbook) string {
	if c.On != "" {
		return c.On
	}
	if rb.HasScope(module.ScopeNode) {
		return string(module.ScopeNode)
	}
	return string(module.ScopeCluster)
}

var (
	nameRE = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	idRE   = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
)

var parsers = map[string]bool{"": true, "text": true, "lines": true, "int": true, "json": true, "kv": true, "exitcode": true}

// Load reads, decodes and validates a runbook file against the module registry.
func Load(path string, reg module.Registry) (*Runbook, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading runbook: %w", err)
	}
	return Parse(path, src, reg)
}

// Parse is Load for a runbook already in memory (saved plans embed theirs).
func Parse(path string, src []byte, reg module.Registry) (*Runbook, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(src))
	if err := dec.Decode(&doc); err != nil {
		// yaml.v3 reports syntax errors by line only; column 1 is the best
		// position it allows.
		return nil, Errors{{Pos: Pos{File: path, Line: yamlErrLine(err), Col: 1}, Msg: "yaml: " + strictyaml.CleanYAMLError(err)}}
	}
	if len(doc.Content) == 0 {
		return nil, Errors{{Pos: Pos{File: path, Line: 1, Col: 1}, Msg: "empty runbook"}}
	}
	d := newDecoder(path, strings.Split(string(src), "\n"))
	rb := &Runbook{Path: path, Dir: filepath.Dir(path), Source: src}
	sum := sha256.Sum256(src)
	rb.Hash = hex.EncodeToString(sum[:])
	root := doc.Content[0]
	d.Decode(root, reflectValue(rb))
	if len(d.Errs) == 0 {
		v := validator{d: d, rb: rb, reg: reg}
		v.validate(root)
	}
	if len(d.Errs) > 0 {
		return nil, d.Errs.Sorted()
	}
	rb.computePlanReads()
	return rb, nil
}

var lineRE = regexp.MustCompile(`line (\d+)`)

func yamlErrLine(err error) int {
	if m := lineRE.FindStringSubmatch(err.Error()); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n
	}
	return 1
}

type validator struct {
	d   *decoder
	rb  *Runbook
	reg module.Registry
	// env is the declared expression environment, grown as vars and steps
	// are validated in file order.
	env *declEnv
}

// keyNode finds the value node of key in a mapping (for positions).
func keyNode(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return m
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return m
}

func (v *validator) errAt(p Pos, format string, args ...any) {
	v.d.Errs = append(v.d.Errs, &Error{Pos: p, Msg: fmt.Sprintf(format, args...)})
}

func (v *validator) compile(e *Expr, sc scope, asBool bool) {
	if !e.IsSet() {
		return
	}
	if err := compileExpr(e, v.env, sc, asBool); err != nil {
		v.d.Errs = append(v.d.Errs, err)
	}
}

func (v *validator) validate(root *yaml.Node) {
	rb := v.rb
	if !nameRE.MatchString(strings.ReplaceAll(rb.Name, "-", "_")) {
		v.d.Errorf(keyNode(root, "name"), "name %q: use lower-case letters, digits, - and _", rb.Name)
	}
	paramsNode := keyNode(root, "params")
	for name, p := range rb.Params {
		pn := keyNode(paramsNode, name)
		if !nameRE.MatchString(name) {
			v.d.Errorf(pn, "param name %q: use lower-case letters, digits and _", name)
		}
		if _, err := ConvertParam(p.Type, p.Default); err != nil && p.Default != nil {
			v.d.Errorf(keyNode(pn, "default"), "default: %v", err)
		}
		if !validTypes[p.Type] {
			v.d.Errorf(keyNode(pn, "type"), "type %q: want one of string, int, bool, list, map", p.Type)
		}
	}
	factsNode := keyNode(root, "facts")
	for name, f := range rb.Facts {
		fn := keyNode(factsNode, name)
		if !nameRE.MatchString(name) {
			v.d.Errorf(fn, "fact name %q: use lower-case letters, digits and _", name)
		}
		if (f.Command == "") == (f.K8s == nil) {
			v.d.Errorf(fn, "fact %q: set exactly one of command or k8s", name)
		}
		if !parsers[f.Parse] {
			v.d.Errorf(keyNode(fn, "parse"), "parse %q: want one of text, lines, int, json, kv, exitcode", f.Parse)
		}
	}
	var stepLines []int
	if sn := keyNode(root, "steps"); sn != nil && sn.Kind == yaml.SequenceNode {
		for _, c := range sn.Content {
			stepLines = append(stepLines, c.Line)
		}
	}
	v.env = newDeclEnv(rb, stepLines)
	for i := range rb.Nodes.Skip {
		v.compile(&rb.Nodes.Skip[i].If, v.env.skipScope(), true)
	}
	v.validateVars()
	v.validateFactConditions(factsNode)
	stepsNode := keyNode(root, "steps")
	ids := map[string]bool{}
	for i := range rb.Steps {
		var sn *yaml.Node
		if stepsNode.Kind == yaml.SequenceNode && i < len(stepsNode.Content) {
			sn = stepsNode.Content[i]
		}
		v.validateStep(&rb.Steps[i], sn, ids)
	}
	for i := range rb.Verify {
		c := &rb.Verify[i]
		if c.On != "" && c.On != "node" && c.On != "cluster" {
			v.errAt(c.That.Pos, "on %q: want node or cluster", c.On)
		}
		v.compile(&c.That, v.env.targetScope(c.Target(rb)), true)
	}
}

// validateFactConditions compiles command facts' `when`. One over params,
// node and cluster only is decided before the node is read; one that reads
// facts, vars or host makes a follow-up read, decided on the first read,
// which therefore must not depend on a follow-up read itself.
func (v *validator) validateFactConditions(factsNode *yaml.Node) {
	rb := v.rb
	for name, f := range rb.Facts {
		if !f.When.IsSet() {
			continue
		}
		if f.K8s != nil {
			v.d.Errorf(keyNode(keyNode(factsNode, name), "when"), "fact %q: when applies to command facts only", name)
			continue
		}
		v.compile(&f.When, v.env.varScope(), true)
		rb.Facts[name] = f
		if f.When.Uses[EnvFacts] || f.When.Uses[EnvVars] || f.When.Uses[EnvHost] {
			if rb.followUps == nil {
				rb.followUps, rb.followUpVars = map[string]bool{}, map[string]bool{}
			}
			rb.followUps[name] = true
		}
	}
	for _, name := range slices.Sorted(maps.Keys(rb.followUps)) {
		when := rb.Facts[name].When
		facts, vars := rb.reads(&when)
		if facts["*"] || vars["*"] {
			v.errAt(when.Pos, "fact %q: when reads facts or vars by a computed name; a follow-up read's condition must name what it reads", name)
			continue
		}
		for _, other := range slices.Sorted(maps.Keys(facts)) {
			if rb.followUps[other] {
				v.errAt(when.Pos, "fact %q: when reads facts.%s (directly or through vars), which is itself a follow-up read (its when reads facts, vars or host); a follow-up read's condition can use only what the first read returns", name, other)
			}
		}
		for n := range vars {
			rb.followUpVars[n] = true
		}
	}
}

// reads is what e reads under facts and vars, closed over the vars it
// reads (a var reads only vars above it); "*" when a whole map is read.
func (rb *Runbook) reads(e *Expr) (facts, vars map[string]bool) {
	facts, vars = map[string]bool{}, map[string]bool{}
	take := func(e *Expr) {
		for n := range e.Members[EnvFacts] {
			facts[n] = true
		}
		for n := range e.Members[EnvVars] {
			vars[n] = true
		}
	}
	take(e)
	for i := len(rb.Vars) - 1; i >= 0; i-- {
		if vars[rb.Vars[i].Name] || vars["*"] {
			take(&rb.Vars[i].Expr)
		}
	}
	return facts, vars
}

func (v *validator) validateVars() {
	n := &v.rb.VarsNode
	if n.Kind == 0 {
		return
	}
	if n.Kind != yaml.MappingNode {
		v.d.Errorf(n, "vars: expected a mapping of names to expressions, got %s", kindName(n))
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := n.Content[i]; v.env.varLine[k.Value] == 0 {
			v.env.varLine[k.Value] = k.Line
		}
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		switch {
		case !nameRE.MatchString(k.Value):
			v.d.Errorf(k, "var name %q: use lower-case letters, digits and _", k.Value)
			continue
		case seen[k.Value]:
			v.d.Errorf(k, "duplicate var %q", k.Value)
			continue
		case val.Kind != yaml.ScalarNode:
			v.d.Errorf(val, "var %s: expected an expression (a string), got %s", k.Value, kindName(val))
			continue
		}
		seen[k.Value] = true
		e := v.d.newExpr(val)
		v.compile(&e, v.env.varScope(), false)
		v.rb.Vars = append(v.rb.Vars, Var{Name: k.Value, Expr: e})
		v.env.vars = append(v.env.vars, k.Value)
	}
}

func (v *validator) validateStep(s *Step, sn *yaml.Node, ids map[string]bool) {
	s.Pos = v.d.Position(sn)
	if !idRE.MatchString(s.ID) {
		v.d.Errorf(keyNode(sn, "id"), "step id %q: use lower-case letters, digits and _ (it is used as steps.%s)", s.ID, s.ID)
	}
	if ids[s.ID] {
		v.d.Errorf(keyNode(sn, "id"), "duplicate step id %q", s.ID)
	}
	ids[s.ID] = true

	factory, ok := v.reg[s.Module]
	if !ok {
		// Later steps may still read steps.<id>: leave it open so that one
		// mistake is reported once.
		v.env.steps = append(v.env.steps, stepDecl{id: s.ID, scope: string(module.ScopeNode), typ: stepType(nil, false)})
		v.compile(&s.When, v.env.targetScope(string(module.ScopeNode)), true)
		names := make([]string, 0, len(v.reg))
		for n := range v.reg {
			names = append(names, n)
		}
		sort.Strings(names)
		v.d.Errorf(keyNode(sn, "module"), "unknown module %q%s (modules: %s)", s.Module, suggest(s.Module, names), strings.Join(names, ", "))
		return
	}
	mod := factory()
	s.scope = mod.Scope()
	switch {
	case s.scope == module.ScopeAny && s.On == "":
		s.scope = module.ScopeNode
	case s.scope == module.ScopeAny && (s.On == "node" || s.On == "cluster"):
		s.scope = module.Scope(s.On)
	case s.On != "" && s.On != string(s.scope):
		v.d.Errorf(keyNode(sn, "on"), "on %q: module %s runs on %s only", s.On, s.Module, s.scope)
	}
	// The step's condition and parameters see the steps before it on the
	// same target; the steps after it see its outputs.
	sc := v.env.targetScope(string(s.scope))
	v.compile(&s.When, sc, true)
	outputs, declared := []string(nil), false
	if od, ok := mod.(OutputDeclarer); ok {
		outputs, declared = od.Outputs(), true
	}
	defer func() {
		v.env.steps = append(v.env.steps, stepDecl{id: s.ID, scope: string(s.scope), typ: stepType(outputs, declared)})
	}()

	// Compile every !expr value, then check the literal parameters: unknown
	// keys and wrong literal types are caught now, before any host; values
	// written as expressions are checked once evaluated.
	s.exprs = map[*yaml.Node]*Expr{}
	if s.With.Kind == 0 {
		s.With = yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: s.Pos.Line, Column: s.Pos.Col}
	}
	walkNodes(&s.With, func(n *yaml.Node) {
		if n.Tag == "!expr" {
			ne := v.d.newExpr(n)
			e := &ne
			if n.Kind != yaml.ScalarNode {
				v.d.Errorf(n, "!expr takes a string")
				return
			}
			v.compile(e, sc, false)
			s.exprs[n] = e
		}
	})
	params := mod.NewParams()
	before := len(v.d.Errs)
	v.d.exprPlaceholders = true
	v.d.Decode(&s.With, reflectValue(params))
	v.d.exprPlaceholders = false
	if len(v.d.Errs) > before {
		for _, e := range v.d.Errs[before:] {
			e.Msg = s.Module + ": " + e.Msg
		}
		return
	}
	if len(s.exprs) == 0 {
		if err := mod.Validate(params); err != nil {
			v.errAt(v.d.Position(&s.With), "%s: %v", s.Module, err)
		}
	}
}

func walkNodes(n *yaml.Node, f func(*yaml.Node)) {
	f(n)
	for _, c := range n.Content {
		walkNodes(c, f)
	}
}

// Params evaluates the step's `with:` mapping against env and decodes it
// into the module's parameter struct.
func (s *Step) Params(mod module.Module, env map[string]any) (any, error) {
	tree, err := s.evalTree(&s.With, env)
	if err != nil {
		return nil, err
	}
	params := mod.NewParams()
	if err := DecodeStrict(s.Pos.File, tree, params); err != nil {
		return nil, fmt.Errorf("%s: %w", s.Module, err)
	}
	if err := mod.Validate(params); err != nil {
		return nil, fmt.Errorf("%s: step %s: %s: %w", s.Pos, s.ID, s.Module, err)
	}
	return params, nil
}

func (s *Step) evalTree(n *yaml.Node, env map[string]any) (*yaml.Node, error) {
	if e, ok := s.exprs[n]; ok {
		val, err := e.Eval(env)
		if err != nil {
			return nil, err
		}
		var out yaml.Node
		if err := out.Encode(normalize(val)); err != nil {
			return nil, fmt.Errorf("%s: value of %q: %w", e.Pos, e.Source, err)
		}
		out.Line, out.Column = n.Line, n.Column
		return &out, nil
	}
	c := *n
	c.Content = make([]*yaml.Node, len(n.Content))
	for i, child := range n.Content {
		ev, err := s.evalTree(child, env)
		if err != nil {
			return nil, err
		}
		c.Content[i] = ev
	}
	return &c, nil
}

// normalize round-trips a value through JSON so yaml encodes plain data.
func normalize(v any) any {
	switch v.(type) {
	case nil, string, bool, int, int64, float64:
		return v
	}
	// expr's builtins (concat, flatten, ...) return a nil slice for an
	// empty result: that is an empty list, not a missing value.
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Slice && rv.IsNil() {
		return []any{}
	}
	b, err := json.Marshal(v)
	if err != nil {
		return v
	}
	var out any
	if json.Unmarshal(b, &out) != nil {
		return v
	}
	return out
}

var validTypes = map[string]bool{"string": true, "int": true, "bool": true, "list": true, "map": true}

// ConvertParam checks/converts a value (from YAML or --set) to a param type.
func ConvertParam(typ string, v any) (any, error) {
	if s, ok := v.(string); ok {
		switch typ {
		case "int":
			n, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil {
				return nil, fmt.Errorf("%q is not an integer", s)
			}
			return n, nil
		case "bool":
			b, err := strconv.ParseBool(strings.TrimSpace(s))
			if err != nil {
				return nil, fmt.Errorf("%q is not true or false", s)
			}
			return b, nil
		case "list":
			if strings.HasPrefix(strings.TrimSpace(s), "[") {
				var l []any
				if err := json.Unmarshal([]byte(s), &l); err != nil {
					return nil, fmt.Errorf("%q is not a JSON list: %v", s, err)
				}
				return l, nil
			}
			var l []any
			for _, p := range strings.Split(s, ",") {
				if p = strings.TrimSpace(p); p != "" {
					l = append(l, p)
				}
			}
			return l, nil
		case "map":
			var m map[string]any
			if err := json.Unmarshal([]byte(s), &m); err != nil {
				return nil, fmt.Errorf("%q is not a JSON object: %v", s, err)
			}
			return m, nil
		}
		return s, nil
	}
	switch typ {
	case "string":
		if _, ok := v.(string); !ok {
			return nil, fmt.Errorf("want a string, got %v", v)
		}
	case "int":
		if _, ok := v.(int); !ok {
			return nil, fmt.Errorf("want an integer, got %v", v)
		}
	case "bool":
		if _, ok := v.(bool); !ok {
			return nil, fmt.Errorf("want true or false, got %v", v)
		}
	case "list":
		if _, ok := v.([]any); !ok {
			return nil, fmt.Errorf("want a list, got %v", v)
		}
	case "map":
		if _, ok := v.(map[string]any); !ok {
			return nil, fmt.Errorf("want a mapping, got %v", v)
		}
	}
	return v, nil
}

// ResolveParams merges defaults with --set values (name=value strings).
func (rb *Runbook) ResolveParams(set map[string]string) (map[string]any, error) {
	out := map[string]any{}
	for name, p := range rb.Params {
		if p.Default != nil {
			out[name] = p.Default
		}
	}
	for name, raw := range set {
		p, ok := rb.Params[name]
		if !ok {
			return nil, fmt.Errorf("runbook %s has no param %q", rb.Name, name)
		}
		v, err := ConvertParam(p.Type, raw)
		if err != nil {
			return nil, fmt.Errorf("--set %s: %w", name, err)
		}
		out[name] = v
	}
	for name, p := range rb.Params {
		if _, ok := out[name]; !ok && p.Required {
			return nil, fmt.Errorf("runbook %s needs --set %s=... (%s)", rb.Name, name, p.Description)
		}
	}
	return out, nil
}

// SecretParams lists the params marked secret.
func (rb *Runbook) SecretParams() []string {
	var out []string
	for name, p := range rb.Params {
		if p.Secret {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// HasScope reports whether any step runs in scope.
func (rb *Runbook) HasScope(sc module.Scope) bool {
	for i := range rb.Steps {
		if rb.Steps[i].scope == sc {
			return true
		}
	}
	return false
}

// Step returns the step with the given id, or nil.
func (rb *Runbook) Step(id string) *Step {
	for i := range rb.Steps {
		if rb.Steps[i].ID == id {
			return &rb.Steps[i]
		}
	}
	return nil
}
