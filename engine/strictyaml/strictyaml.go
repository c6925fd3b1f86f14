// Package strictyaml decodes YAML nodes into Go structs strictly: unknown
// keys (with a "did you mean"), wrong types, duplicate and missing required
// keys (`nks:"required"`) are errors at file:line:col. Runbooks, module
// parameters and static inventories are all read with it.
package strictyaml

import (
	"fmt"
	"reflect"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Pos is a position in a YAML file.
type Pos struct {
	File string `json:"file"`
	Line int    `json:"line"`
	Col  int    `json:"col"`
}

func (p Pos) String() string { return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Col) }

// Error is one positioned problem.
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

// Sorted orders errors by position.
func (es Errors) Sorted() Errors {
	sort.SliceStable(es, func(i, j int) bool {
		if es[i].Pos.Line != es[j].Pos.Line {
			return es[i].Pos.Line < es[j].Pos.Line
		}
		return es[i].Pos.Col < es[j].Pos.Col
	})
	return es
}

// Decoder decodes yaml.Nodes into Go structs strictly. yaml.v3's own
// KnownFields only exists on a stream Decoder and reports lines without
// columns; every mistake needs file:line:col, so the walk over struct fields
// is done here and yaml.v3 only converts scalars.
type Decoder struct {
	File string
	Errs Errors
	// Special, when set, is asked first for every value: it decodes the
	// types and tags its caller owns (runbook expressions) and reports
	// whether it did.
	Special func(n *yaml.Node, out reflect.Value) bool
}

// Position is where n is in the file.
func (d *Decoder) Position(n *yaml.Node) Pos { return Pos{File: d.File, Line: n.Line, Col: n.Column} }

// Errorf records an error at n.
func (d *Decoder) Errorf(n *yaml.Node, format string, args ...any) {
	d.Errs = append(d.Errs, &Error{Pos: d.Position(n), Msg: fmt.Sprintf(format, args...)})
}

var yamlNodeType = reflect.TypeOf(yaml.Node{})

// Decode fills out (a settable value) from n.
func (d *Decoder) Decode(n *yaml.Node, out reflect.Value) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if d.Special != nil && d.Special(n, out) {
		return
	}
	if out.Type() == yamlNodeType {
		out.Set(reflect.ValueOf(*n))
		return
	}
	switch out.Kind() {
	case reflect.Pointer:
		if out.IsNil() {
			out.Set(reflect.New(out.Type().Elem()))
		}
		d.Decode(n, out.Elem())
	case reflect.Struct:
		d.decodeStruct(n, out)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.Errorf(n, "expected a list, got %s", KindName(n))
			return
		}
		s := reflect.MakeSlice(out.Type(), len(n.Content), len(n.Content))
		for i, c := range n.Content {
			d.Decode(c, s.Index(i))
		}
		out.Set(s)
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			d.Errorf(n, "expected a mapping, got %s", KindName(n))
			return
		}
		if out.Type().Key().Kind() != reflect.String {
			panic("strictyaml: only string-keyed maps are supported")
		}
		m := reflect.MakeMapWithSize(out.Type(), len(n.Content)/2)
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if seen[k.Value] {
				d.Errorf(k, "duplicate key %q", k.Value)
				continue
			}
			seen[k.Value] = true
			ev := reflect.New(out.Type().Elem()).Elem()
			d.Decode(v, ev)
			m.SetMapIndex(reflect.ValueOf(k.Value).Convert(out.Type().Key()), ev)
		}
		out.Set(m)
	case reflect.Interface:
		var v any
		if err := n.Decode(&v); err != nil {
			d.Errorf(n, "%s", CleanYAMLError(err))
			return
		}
		if v != nil {
			out.Set(reflect.ValueOf(v))
		}
	default:
		if n.Kind != yaml.ScalarNode {
			d.Errorf(n, "expected %s, got %s", typeName(out.Type()), KindName(n))
			return
		}
		if strings.HasPrefix(n.Tag, "!") && !strings.HasPrefix(n.Tag, "!!") {
			d.Errorf(n, "%s is not allowed here", n.Tag)
			return
		}
		if err := n.Decode(out.Addr().Interface()); err != nil {
			d.Errorf(n, "expected %s, got %q", typeName(out.Type()), n.Value)
		}
	}
}

// Field is one struct field as it appears in YAML: the decoder reads and
// engine/module's plan-file encoder writes parameters by these same rules,
// so the two cannot disagree on a name.
type Field struct {
	Name     string // the yaml tag's name, else the field name in lower case
	Index    int    // in the struct
	Required bool   // `nks:"required"`
	// OmitEmpty: the yaml tag says `,omitempty` (the decoder does not care;
	// encoders leave an empty value out).
	OmitEmpty bool
}

// Fields lists the fields of struct type t that YAML sees: exported ones
// not tagged `yaml:"-"`, in declaration order.
func Fields(t reflect.Type) []Field {
	var fs []Field
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		if tag == "-" || !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		omit := false
		for _, o := range strings.Split(opts, ",") {
			omit = omit || o == "omitempty"
		}
		fs = append(fs, Field{Name: name, Index: i, Required: f.Tag.Get("nks") == "required", OmitEmpty: omit})
	}
	return fs
}

func (d *Decoder) decodeStruct(n *yaml.Node, out reflect.Value) {
	if n.Kind != yaml.MappingNode {
		d.Errorf(n, "expected a mapping, got %s", KindName(n))
		return
	}
	fields := Fields(out.Type())
	byName := map[string]Field{}
	names := make([]string, 0, len(fields))
	for _, f := range fields {
		byName[f.Name] = f
		names = append(names, f.Name)
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		f, ok := byName[k.Value]
		if !ok {
			d.Errorf(k, "unknown key %q%s (allowed: %s)", k.Value, Suggest(k.Value, names), strings.Join(names, ", "))
			continue
		}
		if seen[k.Value] {
			d.Errorf(k, "duplicate key %q", k.Value)
			continue
		}
		seen[k.Value] = true
		d.Decode(v, out.Field(f.Index))
	}
	for _, f := range fields {
		if f.Required && !seen[f.Name] {
			d.Errorf(n, "missing required key %q", f.Name)
		}
	}
}

// Suggest returns ", did you mean X?" for a near miss of a known key.
func Suggest(got string, known []string) string {
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

// KindName names a node's kind for an error.
func KindName(n *yaml.Node) string {
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

// CleanYAMLError strips yaml.v3's "yaml: line N:" prefix; positions are added
// by the caller.
func CleanYAMLError(err error) string {
	s := err.Error()
	s = strings.TrimPrefix(s, "yaml: ")
	if strings.HasPrefix(s, "line ") {
		if _, rest, ok := strings.Cut(s, ": "); ok {
			s = rest
		}
	}
	return s
}

// DecodeStrict decodes n into out (a pointer) strictly: unknown keys, wrong
// types and missing required keys (`nks:"required"`) are positioned errors.
func DecodeStrict(file string, n *yaml.Node, out any) error {
	d := &Decoder{File: file}
	d.Decode(n, reflect.ValueOf(out).Elem())
	if len(d.Errs) > 0 {
		return d.Errs.Sorted()
	}
	return nil
}
