package module

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"nksrun/engine/strictyaml"
)

// Evaluated step parameters travel in a plan file as JSON, and apply decodes
// them back into the module's parameter struct. Runbooks are YAML, so the
// yaml tags are the one contract for parameter names: both directions go by
// them (the field rules of engine/strictyaml, which reads runbooks), and
// parameter structs carry no json tags.

// ParamsToJSON encodes evaluated parameters (a parameter struct, or a pointer
// to one) as plain JSON under their yaml names: struct fields in declaration
// order, `omitempty` as the yaml tag says (and as yaml.v3 reads it), map keys
// sorted, so the same params give the same bytes on every run. Nil pointers,
// slices and maps are null and empty ones [] and {}, so ParamsFromJSON gives
// back exactly what was encoded, nil or empty. A time.Duration is its
// string, as in YAML ("1m30s").
//
// The values are not written by yaml.v3's encoder: its emitter writes some
// strings it cannot read back (a string that starts with a newline and an
// indented line, as a file's content may, is an encode error; "<<" comes
// back as a merge key), and text that travels in a plan file must come back
// byte for byte. The JSON is written here, with only the escapes that both
// JSON and YAML read the same way.
//
// What JSON cannot carry is refused rather than altered: text that is not
// valid UTF-8 (json.Marshal would replace the bytes), infinite and NaN
// floats, maps whose keys are not strings, channels and functions.
// Free-form values (an `any` field such as k8s_patch's patch) come back as
// the types yaml.v3 decodes a runbook into (int, uint64 beyond int64,
// float64, string, bool, nil, map[string]any, []any): a value decoded from a
// runbook round-trips unchanged, an int64 or float32 put there by other code
// comes back as int or float64.
func ParamsToJSON(p any) (json.RawMessage, error) {
	var b bytes.Buffer
	if err := writeValue(&b, reflect.ValueOf(p), "params"); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// ParamsFromJSON decodes what ParamsToJSON wrote into into (a pointer to a
// parameter struct) strictly, as a runbook's `with:` is decoded: JSON is
// YAML, so it is parsed into a yaml.Node and decoded by engine/strictyaml,
// which refuses unknown keys (a plan written with other parameter names),
// wrong types, duplicate keys and missing required keys, positioned in the
// JSON text. null is a nil pointer, slice or map. A document that is not
// JSON is refused too: a plan file holds JSON only.
func ParamsFromJSON(raw json.RawMessage, into any) error {
	if len(bytes.TrimSpace(raw)) == 0 {
		return errors.New("params: empty")
	}
	if !json.Valid(raw) {
		return errors.New("params: not a JSON document")
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		// JSON that YAML cannot read, such as a key longer than the 1024
		// characters YAML allows for a key on one line.
		return fmt.Errorf("params: %s", strictyaml.CleanYAMLError(err))
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return errors.New("params: not one JSON document")
	}
	out := reflect.ValueOf(into)
	if out.Kind() != reflect.Pointer || out.IsNil() {
		return fmt.Errorf("params: decode into %T, want a non-nil pointer", into)
	}
	d := &strictyaml.Decoder{File: "params", Special: nullIsNil}
	d.Decode(doc.Content[0], out.Elem())
	if len(d.Errs) > 0 {
		return d.Errs.Sorted()
	}
	return nil
}

// nullIsNil decodes null into a pointer, slice, map or interface as nil: that
// is how ParamsToJSON writes a nil one (runbooks never meet this: a null
// there is an error, or an absent key).
func nullIsNil(n *yaml.Node, out reflect.Value) bool {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!null" {
		return false
	}
	switch out.Kind() {
	case reflect.Pointer, reflect.Slice, reflect.Map, reflect.Interface:
		out.SetZero()
		return true
	}
	return false
}

var (
	durationType      = reflect.TypeOf(time.Duration(0))
	yamlMarshalerType = reflect.TypeOf((*yaml.Marshaler)(nil)).Elem()
	jsonMarshalerType = reflect.TypeOf((*json.Marshaler)(nil)).Elem()
	textMarshalerType = reflect.TypeOf((*encoding.TextMarshaler)(nil)).Elem()
)

// ownEncoding reports whether t (or *t) says how it is encoded.
func ownEncoding(t reflect.Type) bool {
	for _, i := range []reflect.Type{yamlMarshalerType, jsonMarshalerType, textMarshalerType} {
		if t.Implements(i) || (t.Kind() != reflect.Pointer && t.Kind() != reflect.Interface && reflect.PointerTo(t).Implements(i)) {
			return true
		}
	}
	return false
}

// writeValue writes v as JSON; at names it in errors (params.patch.spec[0]).
func writeValue(b *bytes.Buffer, v reflect.Value, at string) error {
	if !v.IsValid() {
		b.WriteString("null")
		return nil
	}
	if v.Type() == durationType {
		return writeString(b, time.Duration(v.Int()).String(), at)
	}
	if ownEncoding(v.Type()) {
		// Written field by field it would lose what its own encoding
		// keeps (a time.Time has no exported fields: "{}"), and the
		// strict decoder reads it field by field: parameters are plain
		// data.
		return fmt.Errorf("%s: a %s has an encoding of its own and cannot be a parameter", at, v.Type())
	}
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			b.WriteString("null")
			return nil
		}
		return writeValue(b, v.Elem(), at)
	case reflect.Struct:
		b.WriteByte('{')
		first := true
		for _, f := range strictyaml.Fields(v.Type()) {
			fv := v.Field(f.Index)
			if f.OmitEmpty && isZero(fv) {
				continue
			}
			if !first {
				b.WriteByte(',')
			}
			first = false
			if err := writeString(b, f.Name, at); err != nil {
				return err
			}
			b.WriteByte(':')
			if err := writeValue(b, fv, at+"."+f.Name); err != nil {
				return err
			}
		}
		b.WriteByte('}')
		return nil
	case reflect.Map:
		if v.Type().Key().Kind() != reflect.String {
			// JSON keys are strings, and the strict decoder reads
			// string-keyed maps only.
			return fmt.Errorf("%s: a map with %s keys cannot be written to a plan file", at, v.Type().Key())
		}
		if v.IsNil() {
			b.WriteString("null")
			return nil
		}
		keys := make([]string, 0, v.Len())
		for _, k := range v.MapKeys() {
			keys = append(keys, k.String())
		}
		sort.Strings(keys)
		b.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				b.WriteByte(',')
			}
			if err := writeString(b, k, at); err != nil {
				return err
			}
			b.WriteByte(':')
			if err := writeValue(b, v.MapIndex(reflect.ValueOf(k).Convert(v.Type().Key())), at+"."+k); err != nil {
				return err
			}
		}
		b.WriteByte('}')
		return nil
	case reflect.Slice:
		if v.IsNil() {
			b.WriteString("null")
			return nil
		}
		// A []byte too is a list of numbers, as yaml.v3 writes it and as
		// the strict decoder reads it (not JSON's base64).
		b.WriteByte('[')
		for i := 0; i < v.Len(); i++ {
			if i > 0 {
				b.WriteByte(',')
			}
			if err := writeValue(b, v.Index(i), at+"["+strconv.Itoa(i)+"]"); err != nil {
				return err
			}
		}
		b.WriteByte(']')
		return nil
	case reflect.String:
		return writeString(b, v.String(), at)
	case reflect.Bool:
		b.WriteString(strconv.FormatBool(v.Bool()))
		return nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		b.WriteString(strconv.FormatInt(v.Int(), 10))
		return nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		b.WriteString(strconv.FormatUint(v.Uint(), 10))
		return nil
	case reflect.Float32, reflect.Float64:
		f := v.Float()
		if math.IsInf(f, 0) || math.IsNaN(f) {
			return fmt.Errorf("%s: %v cannot be written to a plan file (JSON has no such number)", at, f)
		}
		bits := 64
		if v.Kind() == reflect.Float32 {
			bits = 32
		}
		s := strconv.FormatFloat(f, 'g', -1, bits)
		if !strings.ContainsAny(s, ".eE") {
			// 3.0, not 3: YAML reads 3 as an int, and a float in a
			// free-form value must come back a float.
			s += ".0"
		}
		b.WriteString(s)
		return nil
	}
	return fmt.Errorf("%s: a %s cannot be written to a plan file", at, v.Type())
}

// writeString writes s as a JSON string that YAML reads back as the same
// text: printable characters as they are, the rest as escapes. YAML takes
// more than JSON for line breaks (U+0085, U+2028, U+2029) and refuses raw
// C1 controls and a BOM inside a string, so those are escaped too.
func writeString(b *bytes.Buffer, s, at string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("%s: text that is not valid UTF-8 cannot be written to a plan file", at)
	}
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x20, r >= 0x7f && r < 0xa0, r == 0x2028, r == 0x2029, r == 0xfeff, r == 0xfffe, r == 0xffff:
			fmt.Fprintf(b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return nil
}

// isZero is yaml.v3's `omitempty` test, so a field is left out exactly when
// yaml.Marshal would leave it out.
func isZero(v reflect.Value) bool {
	if z, ok := v.Interface().(yaml.IsZeroer); ok {
		if (v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface) && v.IsNil() {
			return true
		}
		return z.IsZero()
	}
	switch v.Kind() {
	case reflect.String:
		return v.Len() == 0
	case reflect.Interface, reflect.Pointer:
		return v.IsNil()
	case reflect.Slice, reflect.Map:
		return v.Len() == 0
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return v.Int() == 0
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return v.Uint() == 0
	case reflect.Float32, reflect.Float64:
		return v.Float() == 0
	case reflect.Bool:
		return !v.Bool()
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() && !isZero(v.Field(i)) {
				return false
			}
		}
		return true
	}
	return false
}
