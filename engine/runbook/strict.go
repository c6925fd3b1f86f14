package runbook

import (
	"fmt"
	"reflect"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Pos is a position in a runbook file.
type Pos struct {
	File string `json:"file"`
	Line int    `json:"line"`
	Col  int    `json:"col"`
}

func (p Pos) String() string { return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Col) }

// Error is one positioned problem in a runbook.
type Error struct {
	Pos Pos
	Msg string
}

func (e *Error) Error() string { return e.Pos.String() + ": " + e.Msg }

// Errors is every problem found in one load, in file order.
type Errors []*Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

func (es Errors) sorted() Errors {
	sort.SliceStable(es, func(i, j int) bool {
		if es[i].Pos.Line != es[j].Pos.Line {
			return es[i].Pos.Line < es[j].Pos.Line
		}
		return es[i].Pos.Col < es[j].Pos.Col
	})
	return es
}

// decoder decodes yaml.Nodes into Go structs strictly. yaml.v3's own
// KnownFields only exists on a stream Decoder and reports lines without
// columns; runbooks need file:line:col for every mistake, so the walk over
// struct fields is done here and yaml.v3 only converts scalars.
type decoder struct {
	file string
	errs Errors
	// exprPlaceholders makes !expr values count as present but undecoded:
	// at load time their value is not known yet.
	exprPlaceholders bool
	// lines of the source, to position errors inside block scalars.
	lines []string
}

// newExpr records an expression written at n.
func (d *decoder) newExpr(n *yaml.Node) Expr {
	e := Expr{Source: n.Value, Pos: d.pos(n), node: n}
	if n.Line >= 1 && n.Line <= len(d.lines) {
		// yaml.v3 positions a tagged scalar at its tag: `!expr 'x'` starts
		// at the !, its text after the tag and the blanks that follow.
		line := d.lines[n.Line-1]
		if i := n.Column - 1; i >= 0 && i < len(line) && line[i] == '!' {
			j := i
			for j < len(line) && line[j] != ' ' && line[j] != '\t' {
				j++
			}
			for j < len(line) && (line[j] == ' ' || line[j] == '\t') {
				j++
			}
			e.tagWidth = j - i
		}
	}
	if n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 && n.Line < len(d.lines) {
		// A block scalar's text starts on the next line, indented.
		first := d.lines[n.Line] // 0-based: the line after the indicator
		e.blockIndent = len(first) - len(strings.TrimLeft(first, " "))
	}
	return e
}

func (d *decoder) pos(n *yaml.Node) Pos { return Pos{File: d.file, Line: n.Line, Col: n.Column} }

func (d *decoder) errorf(n *yaml.Node, format string, args ...any) {
	d.errs = append(d.errs, &Error{Pos: d.pos(n), Msg: fmt.Sprintf(format, args...)})
}

var (
	yamlNodeType = reflect.TypeOf(yaml.Node{})
	exprType     = reflect.TypeOf(Expr{})
)

// decode fills out (a settable value) from n.
func (d *decoder) decode(n *yaml.Node, out reflect.Value) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Tag == "!expr" && d.exprPlaceholders {
		return
	}
	switch {
	case out.Type() == yamlNodeType:
		out.Set(reflect.ValueOf(*n))
		return
	case out.Type() == exprType:
		if n.Kind != yaml.ScalarNode {
			d.errorf(n, "expected an expression (a string), got %s", kindName(n))
			return
		}
		out.Set(reflect.ValueOf(d.newExpr(n)))
		return
	}
	switch out.Kind() {
	case reflect.Pointer:
		if out.IsNil() {
			out.Set(reflect.New(out.Type().Elem()))
		}
		d.decode(n, out.Elem())
	case reflect.Struct:
		d.decodeStruct(n, out)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.errorf(n, "expected a list, got %s", kindName(n))
			return
		}
		s := reflect.MakeSlice(out.Type(), len(n.Content), len(n.Content))
		for i, c := range n.Content {
			d.decode(c, s.Index(i))
		}
		out.Set(s)
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			d.errorf(n, "expected a mapping, got %s", kindName(n))
			return
		}
		if out.Type().Key().Kind() != reflect.String {
			panic("runbook: only string-keyed maps are supported")
		}
		m := reflect.MakeMapWithSize(out.Type(), len(n.Content)/2)
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if seen[k.Value] {
				d.errorf(k, "duplicate key %q", k.Value)
				continue
			}
			seen[k.Value] = true
			ev := reflect.New(out.Type().Elem()).Elem()
			d.decode(v, ev)
			m.SetMapIndex(reflect.ValueOf(k.Value).Convert(out.Type().Key()), ev)
		}
		out.Set(m)
	case reflect.Interface:
		var v any
		if err := n.Decode(&v); err != nil {
			d.errorf(n, "%s", cleanYAMLError(err))
			return
		}
		if v != nil {
			out.Set(reflect.ValueOf(v))
		}
	default:
		if n.Kind != yaml.ScalarNode {
			d.errorf(n, "expected %s, got %s", typeName(out.Type()), kindName(n))
			return
		}
		if n.Tag == "!expr" {
			d.errorf(n, "!expr is not allowed here (only in step parameters)")
			return
		}
		if err := n.Decode(out.Addr().Interface()); err != nil {
			d.errorf(n, "expected %s, got %q", typeName(out.Type()), n.Value)
		}
	}
}

// fieldInfo describes one struct field as it appears in YAML.
type fieldInfo struct {
	name     string
	index    int
	required bool
}

func structFields(t reflect.Type) []fieldInfo {
	var fs []fieldInfo
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		if tag == "-" || !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		fs = append(fs, fieldInfo{name: name, index: i, required: f.Tag.Get("nks") == "required"})
	}
	return fs
}

func (d *decoder) decodeStruct(n *yaml.Node, out reflect.Value) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, "expected a mapping, got %s", kindName(n))
		return
	}
	fields := structFields(out.Type())
	byName := map[string]fieldInfo{}
	names := make([]string, 0, len(fields))
	for _, f := range fields {
		byName[f.name] = f
		names = append(names, f.name)
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		f, ok := byName[k.Value]
		if !ok {
			d.errorf(k, "unknown key %q%s (allowed: %s)", k.Value, suggest(k.Value, names), strings.Join(names, ", "))
			continue
		}
		if seen[k.Value] {
			d.errorf(k, "duplicate key %q", k.Value)
			continue
		}
		seen[k.Value] = true
		d.decode(v, out.Field(f.index))
	}
	for _, f := range fields {
		if f.required && !seen[f.name] {
			d.errorf(n, "missing required key %q", f.name)
		}
	}
}

// suggest returns ", did you mean X?" for a near miss of a known key.
func suggest(got string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if dd := editDistance(got, k); dd < bestD {
			best, bestD = k, dd
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "null"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "something else"
}

func typeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int32, reflect.Int64, reflect.Uint, reflect.Uint32, reflect.Uint64:
		if t.String() == "time.Duration" {
			return "a duration (e.g. 30s, 5m)"
		}
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	}
	return t.String()
}

// cleanYAMLError strips yaml.v3's "yaml: line N:" prefix; positions are added
// by the caller.
func cleanYAMLError(err error) string {
	s := err.Error()
	s = strings.TrimPrefix(s, "yaml: ")
	if strings.HasPrefix(s, "line ") {
		if _, rest, ok := strings.Cut(s, ": "); ok {
			s = rest
		}
	}
	return s
}

// DecodeStrict decodes n into out (a pointer) with the same strict rules as
// runbooks: unknown keys, wrong types and missing required keys (`nks:"required"`)
// are positioned errors. Modules' parameter structs are decoded with it.
func DecodeStrict(file string, n *yaml.Node, out any) error {
	d := &decoder{file: file}
	d.decode(n, reflect.ValueOf(out).Elem())
	if len(d.errs) > 0 {
		return d.errs.sorted()
	}
	return nil
}

func reflectValue(ptr any) reflect.Value { return reflect.ValueOf(ptr).Elem() }
