package runbook

import (
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"

	"nksrun/engine/strictyaml"
)

// Positions and positioned errors are strictyaml's.
type (
	Pos    = strictyaml.Pos
	Error  = strictyaml.Error
	Errors = strictyaml.Errors
)

// decoder is the strict YAML decoder plus what runbooks add to it: `!expr`
// expressions (decoded into Expr, positioned inside their scalar) and, when
// decoding step parameters at load time, `!expr` values taken as present
// but not yet known.
type decoder struct {
	strictyaml.Decoder
	// exprPlaceholders makes !expr values count as present but undecoded:
	// at load time their value is not known yet.
	exprPlaceholders bool
	// lines of the source, to position errors inside block scalars.
	lines []string
}

var exprType = reflect.TypeOf(Expr{})

func newDecoder(file string, lines []string) *decoder {
	d := &decoder{lines: lines}
	d.File = file
	d.Special = d.special
	return d
}

// special decodes what strictyaml does not know: expressions.
func (d *decoder) special(n *yaml.Node, out reflect.Value) bool {
	if n.Tag == "!expr" && d.exprPlaceholders {
		return true
	}
	if out.Type() != exprType {
		return false
	}
	if n.Kind != yaml.ScalarNode {
		d.Errorf(n, "expected an expression (a string), got %s", strictyaml.KindName(n))
		return true
	}
	out.Set(reflect.ValueOf(d.newExpr(n)))
	return true
}

// newExpr records an expression written at n.
func (d *decoder) newExpr(n *yaml.Node) Expr {
	e := Expr{Source: n.Value, Pos: d.Position(n), node: n}
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

// DecodeStrict decodes n into out (a pointer) with the same strict rules as
// runbooks, expressions included. Modules' parameter structs are decoded
// with it.
func DecodeStrict(file string, n *yaml.Node, out any) error {
	d := newDecoder(file, nil)
	d.Decode(n, reflect.ValueOf(out).Elem())
	if len(d.Errs) > 0 {
		return d.Errs.Sorted()
	}
	return nil
}

func reflectValue(ptr any) reflect.Value { return reflect.ValueOf(ptr).Elem() }

func suggest(got string, known []string) string { return strictyaml.Suggest(got, known) }

func kindName(n *yaml.Node) string { return strictyaml.KindName(n) }
