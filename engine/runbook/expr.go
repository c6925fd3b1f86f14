package runbook

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"nksrun/engine/imageref"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/vm"
	"go.yaml.in/yaml/v3"
)

// Expr is an expr-lang expression written in a runbook, with its position.
type Expr struct {
	Source  string
	Pos     Pos
	node    *yaml.Node
	program *vm.Program
	// blockIndent is the indentation of a block scalar's text.
	blockIndent int
	// tagWidth is the width of a `!expr ` tag before the scalar's text.
	tagWidth int
	// Uses is the set of top-level names the expression reads (params, node,
	// host, facts, cluster, steps). The engine uses it to gather everything a
	// node needs in one round trip.
	Uses map[string]bool
	// Members are the names read under facts and vars (facts.x, vars.y,
	// facts["x"]); "*" when the whole map is read some other way.
	Members map[string]map[string]bool
}

// IsSet reports whether the expression was written in the runbook.
func (e Expr) IsSet() bool { return e.Source != "" }

// Environment names. They are documented in the README ("Expressions").
const (
	EnvParams  = "params"
	EnvNode    = "node"
	EnvHost    = "host"
	EnvFacts   = "facts"
	EnvCluster = "cluster"
	EnvSteps   = "steps"
	EnvVars    = "vars"
)

// Which names an expression may use depends on when it is evaluated.
var (
	// Node skip rules run before nksrun connects: only free facts.
	envBeforeConnect = []string{EnvParams, EnvNode, EnvCluster}
	// Vars are computed once facts are read, before any step.
	envVars = []string{EnvParams, EnvNode, EnvHost, EnvFacts, EnvCluster, EnvVars}
	// Conditions, parameters and verify checks on a node run with everything.
	envFull = []string{EnvParams, EnvNode, EnvHost, EnvFacts, EnvCluster, EnvVars, EnvSteps}
	// On the cluster target there is no node: no node, host or command facts.
	envCluster = []string{EnvParams, EnvFacts, EnvCluster, EnvVars, EnvSteps}
)

// functionNames are the helpers above, for "did you mean".
var functionNames = []string{"versionCompare", "versionAtLeast", "versionMajor", "versionMinor", "sha256", "hasWord", "imageTag", "imageRepo", "imageRef", "matches"}

// functions are the helpers available in every expression.
var functions = []expr.Option{
	expr.Function("versionCompare", func(p ...any) (any, error) {
		return VersionCompare(p[0].(string), p[1].(string)), nil
	}, new(func(string, string) int)),
	expr.Function("versionAtLeast", func(p ...any) (any, error) {
		return VersionCompare(p[0].(string), p[1].(string)) >= 0, nil
	}, new(func(string, string) bool)),
	expr.Function("versionMajor", func(p ...any) (any, error) {
		return versionPart(p[0].(string), 0), nil
	}, new(func(string) int)),
	expr.Function("versionMinor", func(p ...any) (any, error) {
		return versionPart(p[0].(string), 1), nil
	}, new(func(string) int)),
	expr.Function("sha256", func(p ...any) (any, error) {
		sum := sha256.Sum256([]byte(p[0].(string)))
		return hex.EncodeToString(sum[:]), nil
	}, new(func(string) string)),
	expr.Function("hasWord", func(p ...any) (any, error) {
		for _, w := range strings.Fields(p[0].(string)) {
			if w == p[1].(string) {
				return true, nil
			}
		}
		return false, nil
	}, new(func(string, string) bool)),
	expr.Function("imageTag", func(p ...any) (any, error) {
		_, tag, _ := imageref.Split(p[0].(string))
		return tag, nil
	}, new(func(string) string)),
	expr.Function("imageRepo", func(p ...any) (any, error) {
		repo, _, _ := imageref.Split(p[0].(string))
		return repo, nil
	}, new(func(string) string)),
	expr.Function("imageRef", func(p ...any) (any, error) {
		return imageref.Full(p[0].(string)), nil
	}, new(func(string) string)),
	expr.Function("matches", func(p ...any) (any, error) {
		re, err := regexp.Compile(p[1].(string))
		if err != nil {
			return nil, err
		}
		return re.MatchString(p[0].(string)), nil
	}, new(func(string, string) bool)),
}

// compileExpr compiles e against the declared environment of where it runs
// (sc). asBool requires a condition to be boolean. Names are checked first
// so that an undeclared one is reported with its path and a "did you mean";
// expr's own checker then reports type errors and unknown top-level names.
func compileExpr(e *Expr, d *declEnv, sc scope, asBool bool) *Error {
	if ne := d.checkNames(e.Source, sc); ne != nil {
		fe := (&file.Error{Location: ne.loc, Message: ne.msg}).Bind(file.NewSource(e.Source))
		return e.errorAt(fe, sc)
	}
	opts := append([]expr.Option{expr.Env(sc.env)}, functions...)
	if asBool {
		opts = append(opts, expr.AsBool())
	}
	prog, err := expr.Compile(e.Source, opts...)
	if err != nil {
		return e.errorAt(err, sc)
	}
	e.program = prog
	e.Uses = map[string]bool{}
	node := prog.Node()
	ast.Walk(&node, identCollector(e.Uses))
	mc := &memberCollector{members: map[string]map[string]bool{}, whole: map[string]int{}}
	ast.Walk(&node, mc)
	for root, n := range mc.whole {
		if n > 0 {
			mc.add(root, "*")
		}
	}
	e.Members = mc.members
	return nil
}

// memberCollector records facts.x / vars.y reads. Every identifier facts
// or vars counts once in whole; a member read with a constant name takes
// its identifier back, so what is left was read as a whole map.
type memberCollector struct {
	members map[string]map[string]bool
	whole   map[string]int
}

func (c *memberCollector) add(root, name string) {
	if c.members[root] == nil {
		c.members[root] = map[string]bool{}
	}
	c.members[root][name] = true
}

func (c *memberCollector) Visit(n *ast.Node) {
	switch x := (*n).(type) {
	case *ast.IdentifierNode:
		if x.Value == EnvFacts || x.Value == EnvVars {
			c.whole[x.Value]++
		}
	case *ast.MemberNode:
		id, ok := x.Node.(*ast.IdentifierNode)
		if !ok || (id.Value != EnvFacts && id.Value != EnvVars) {
			return
		}
		if name, ok := x.Property.(*ast.StringNode); ok {
			c.add(id.Value, name.Value)
			c.whole[id.Value]--
		}
	}
}

type identCollector map[string]bool

func (c identCollector) Visit(n *ast.Node) {
	if id, ok := (*n).(*ast.IdentifierNode); ok {
		c[id.Value] = true
	}
}

// errorAt converts an expr compile error into a runbook position: the
// expression's own line/column are offset by where the scalar starts.
func (e *Expr) errorAt(err error, sc scope) *Error {
	names := sc.names
	pos := e.Pos
	msg := err.Error()
	var fe *file.Error
	if errors.As(err, &fe) {
		msg = fe.Message
		if e.node != nil && (e.node.Style&(yaml.LiteralStyle|yaml.FoldedStyle)) != 0 {
			pos.Line += fe.Line // block scalars start on the next line
			pos.Col = e.blockIndent + fe.Column + 1
		} else {
			pos.Line += fe.Line - 1
			quote := 0
			if e.node != nil && (e.node.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle)) != 0 {
				quote = 1
			}
			pos.Col += e.tagWidth + quote + fe.Column
		}
		if name, ok := strings.CutPrefix(msg, "unknown name "); ok {
			known := append([]string{EnvParams, EnvNode, EnvHost, EnvFacts, EnvCluster, EnvVars, EnvSteps}, functionNames...)
			if !slices.Contains(known, name) {
				msg += suggest(name, append(slices.Clone(names), functionNames...))
			} else if !slices.Contains(names, name) && sc.why != "" {
				msg += ": " + sc.why
			}
			msg += fmt.Sprintf(" (available here: %s)", strings.Join(names, ", "))
		}
	}
	return &Error{Pos: pos, Msg: "expression: " + msg}
}

// Eval evaluates a compiled expression against env: Env.Map(), or a map
// literal whose node and host are completed here the same way.
func (e *Expr) Eval(env map[string]any) (any, error) {
	if e.program == nil {
		return nil, fmt.Errorf("%s: expression not compiled", e.Pos)
	}
	v, err := expr.Run(e.program, completeEnv(env))
	if err != nil {
		return nil, fmt.Errorf("%s: evaluating %q: %w", e.Pos, e.Source, err)
	}
	return v, nil
}

// EvalBool evaluates a condition. An unset condition is true.
func (e *Expr) EvalBool(env map[string]any) (bool, error) {
	if !e.IsSet() {
		return true, nil
	}
	v, err := e.Eval(env)
	if err != nil {
		return false, err
	}
	b, ok := v.(bool)
	if !ok {
		return false, fmt.Errorf("%s: condition %q is %T, not a boolean", e.Pos, e.Source, v)
	}
	return b, nil
}

// VersionCompare compares dotted versions numerically, ignoring a leading
// "v" and anything after the numeric parts ("3.10.0-1160.el7" is 3.10.0,
// "v1.24.3+k3s1" is 1.24.3). It returns -1, 0 or 1.
func VersionCompare(a, b string) int {
	pa, pb := versionParts(a), versionParts(b)
	for i := 0; i < max(len(pa), len(pb)); i++ {
		var x, y int
		if i < len(pa) {
			x = pa[i]
		}
		if i < len(pb) {
			y = pb[i]
		}
		if x != y {
			if x < y {
				return -1
			}
			return 1
		}
	}
	return 0
}

func versionParts(v string) []int {
	v = strings.TrimPrefix(strings.TrimSpace(v), "v")
	if i := strings.IndexAny(v, "-+_ "); i >= 0 {
		v = v[:i]
	}
	var parts []int
	for _, s := range strings.Split(v, ".") {
		n, err := strconv.Atoi(s)
		if err != nil {
			break
		}
		parts = append(parts, n)
	}
	return parts
}

func versionPart(v string, i int) int {
	p := versionParts(v)
	if i < len(p) {
		return p[i]
	}
	return 0
}
