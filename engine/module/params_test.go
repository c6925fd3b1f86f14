package module_test

import (
	"bytes"
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"nksrun/engine/module"
)

type inner struct {
	Key  string            `yaml:"key" nks:"required"`
	Set  map[string]string `yaml:"set,omitempty"`
	Flag bool              `yaml:"flag,omitempty"`
}

// kitchen has a field of every kind module parameters use, and a few they
// might.
type kitchen struct {
	Name     string            `yaml:"name" nks:"required"`
	Mode     string            `yaml:"mode,omitempty"`
	Count    int               `yaml:"count,omitempty"`
	Big      int64             `yaml:"big,omitempty"`
	Huge     uint64            `yaml:"huge,omitempty"`
	Ratio    float64           `yaml:"ratio,omitempty"`
	On       bool              `yaml:"on"`
	Content  *string           `yaml:"content,omitempty"`
	Names    *[]string         `yaml:"names,omitempty"`
	List     []string          `yaml:"list"`
	Map      map[string]string `yaml:"map"`
	Ptr      *inner            `yaml:"ptr"`
	Inners   []inner           `yaml:"inners,omitempty"`
	Free     any               `yaml:"free,omitempty"`
	Bytes    []byte            `yaml:"bytes,omitempty"`
	Wait     time.Duration     `yaml:"wait,omitempty"`
	NoTag    string
	Skipped  string `yaml:"-"`
	internal string
}

func ptr[T any](v T) *T { return &v }

func TestParamsRoundTrip(t *testing.T) {
	cases := []struct {
		name string
		in   kitchen
		want string         // the JSON, exactly
		back func(*kitchen) // what comes back, when not in itself
	}{
		{
			name: "zero: omitempty fields out, nil list, map and pointer null",
			in:   kitchen{},
			want: `{"name":"","on":false,"list":null,"map":null,"ptr":null,"notag":""}`,
		},
		{
			name: "empty, not nil: [] and {} and a pointer to nothing",
			in:   kitchen{Content: ptr(""), Names: &[]string{}, List: []string{}, Map: map[string]string{}, Ptr: &inner{}},
			want: `{"name":"","on":false,"content":"","names":[],"list":[],"map":{},"ptr":{"key":""},"notag":""}`,
		},
		{
			name: "strings YAML would read as something else stay strings",
			in:   kitchen{Name: "yes", Mode: "0644", List: []string{"on", "off", "no", "y", "n", "true", "null", "~", "", "1e3", "0x10", "0o17", "1_000", ".inf", "-", "<<", "=", "!tag", "&a", "*a", "# c", "a: b", "[x]", "{x}", "'", `"`, `\`}},
			want: `{"name":"yes","mode":"0644","on":false,"list":["on","off","no","y","n","true","null","~","","1e3","0x10","0o17","1_000",".inf","-","<<","=","!tag","&a","*a","# c","a: b","[x]","{x}","'","\"","\\"],"map":null,"ptr":null,"notag":""}`,
		},
		{
			name: "file contents: leading newline and indent, trailing spaces, CRLF, tabs",
			in:   kitchen{Content: ptr("\n  indented\n\ttab \r\nend  \n\n"), Map: map[string]string{"\n x": " \n"}},
			want: `{"name":"","on":false,"content":"\n  indented\n\ttab \r\nend  \n\n","list":null,"map":{"\n x":" \n"},"ptr":null,"notag":""}`,
		},
		{
			name: "characters YAML reads differently from JSON are escaped, other text is kept",
			in:   kitchen{Name: "a\u0085b\u2028c\u2029d\ufeffe\x00f\x7fg\u009fh", Mode: "재부팅 🙂 é"},
			want: `{"name":"a\u0085b\u2028c\u2029d\ufeffe\u0000f\u007fg\u009fh","mode":"재부팅 🙂 é","on":false,"list":null,"map":null,"ptr":null,"notag":""}`,
		},
		{
			name: "large and negative numbers keep every digit",
			in:   kitchen{Count: -7, Big: math.MaxInt64, Huge: math.MaxUint64, Ratio: 1e300},
			want: `{"name":"","count":-7,"big":9223372036854775807,"huge":18446744073709551615,"ratio":1e+300,"on":false,"list":null,"map":null,"ptr":null,"notag":""}`,
		},
		{
			name: "binary-looking bytes are a list of numbers, a duration its string",
			in:   kitchen{Bytes: []byte{0, 0xff, '\n'}, Wait: 90 * time.Second},
			want: `{"name":"","on":false,"list":null,"map":null,"ptr":null,"bytes":[0,255,10],"wait":"1m30s","notag":""}`,
		},
		{
			name: "nested structs, maps in struct order and sorted keys",
			in:   kitchen{Name: "n", On: true, Ptr: &inner{Key: "k", Set: map[string]string{"b": "2", "a": "1", "true": "yes"}, Flag: true}, Inners: []inner{{Key: "x"}, {Key: "y", Set: map[string]string{"c": "3"}}}},
			want: `{"name":"n","on":true,"list":null,"map":null,"ptr":{"key":"k","set":{"a":"1","b":"2","true":"yes"},"flag":true},"inners":[{"key":"x"},{"key":"y","set":{"c":"3"}}],"notag":""}`,
		},
		{
			name: "omitempty leaves an empty list or map out, as YAML does: it comes back nil",
			in:   kitchen{Inners: []inner{}, Ptr: &inner{Set: map[string]string{}}, Free: []any{}},
			want: `{"name":"","on":false,"list":null,"map":null,"ptr":{"key":""},"free":[],"notag":""}`,
			back: func(k *kitchen) { k.Inners, k.Ptr.Set = nil, nil },
		},
		{
			// What the runbook decoder puts in an `any` (k8s_patch's
			// patch): yaml.v3's types, nulls and whole floats included.
			name: "free-form value: numbers, nulls, nested maps and lists unchanged",
			in: kitchen{Free: map[string]any{
				"int": 3, "neg": -1, "float": 1.5, "whole": 2.0, "big": uint64(math.MaxUint64), "tiny": 1e-9,
				"null": nil, "bool": false, "octal": "0644", "yes": "yes",
				"list":  []any{1, "on", nil, map[string]any{"op": "remove", "path": "/metadata/finalizers/0"}},
				"empty": map[string]any{}, "none": []any{},
				"<<": "merge?",
			}},
			want: `{"name":"","on":false,"list":null,"map":null,"ptr":null,"free":{"<<":"merge?","big":18446744073709551615,"bool":false,"empty":{},"float":1.5,"int":3,"list":[1,"on",null,{"op":"remove","path":"/metadata/finalizers/0"}],"neg":-1,"none":[],"null":null,"octal":"0644","tiny":1e-09,"whole":2.0,"yes":"yes"},"notag":""}`,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			raw, err := module.ParamsToJSON(&c.in)
			if err != nil {
				t.Fatal(err)
			}
			if string(raw) != c.want {
				t.Errorf("JSON\n got %s\nwant %s", raw, c.want)
			}
			if !json.Valid(raw) {
				t.Fatalf("not JSON: %s", raw)
			}
			again, _ := module.ParamsToJSON(c.in) // a value, not a pointer: the same
			if !bytes.Equal(again, raw) {
				t.Errorf("second encoding differs:\n%s\n%s", again, raw)
			}
			var back kitchen
			if err := module.ParamsFromJSON(raw, &back); err != nil {
				t.Fatalf("%s: %v", raw, err)
			}
			want := c.in
			want.Skipped, want.internal = "", "" // never written
			if c.back != nil {
				c.back(&want)
			}
			if !reflect.DeepEqual(back, want) {
				t.Errorf("round trip\n got %#v\nwant %#v", back, want)
			}
			// A plan file is indented around the params; still the same.
			var ind bytes.Buffer
			if err := json.Indent(&ind, raw, "        ", "  "); err != nil {
				t.Fatal(err)
			}
			var back2 kitchen
			if err := module.ParamsFromJSON(ind.Bytes(), &back2); err != nil {
				t.Fatalf("indented %s: %v", ind.Bytes(), err)
			}
			if !reflect.DeepEqual(back2, back) {
				t.Errorf("indented round trip\n got %#v\nwant %#v", back2, back)
			}
		})
	}
}

func TestParamsToJSONRefuses(t *testing.T) {
	cases := []struct {
		name string
		in   any
		want string
	}{
		{"invalid UTF-8 text", kitchen{Content: ptr("a\xffb")}, "params.content: text that is not valid UTF-8"},
		{"invalid UTF-8 in a free-form key", kitchen{Free: map[string]any{"\xfe": 1}}, "params.free: text that is not valid UTF-8"},
		{"NaN", kitchen{Ratio: math.NaN()}, "params.ratio: NaN cannot be written"},
		{"infinity deep down", kitchen{Free: map[string]any{"a": []any{math.Inf(1)}}}, "params.free.a[0]: +Inf cannot be written"},
		{"non-string map keys", kitchen{Free: map[int]string{1: "x"}}, "params.free: a map with int keys"},
		{"a type with its own encoding", struct {
			T time.Time `yaml:"t"`
		}{time.Now()}, "params.t: a time.Time has an encoding of its own"},
		{"a channel", struct {
			C chan int `yaml:"c"`
		}{make(chan int)}, "params.c: a chan int cannot be written"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			raw, err := module.ParamsToJSON(c.in)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %s, %v; want an error containing %q", raw, err, c.want)
			}
		})
	}
}

func TestParamsFromJSONRefuses(t *testing.T) {
	cases := []struct {
		name, raw, want string
	}{
		{"unknown key, with a suggestion", `{"name":"x","mdoe":"0644"}`, `params:1:13: unknown key "mdoe" (did you mean "mode"?) (allowed: name, mode,`},
		{"a key under its Go name (an older plan's json name)", `{"name":"x","Content":"c"}`, `params:1:13: unknown key "Content" (did you mean "content"?)`},
		{"unknown nested key", `{"name":"x","ptr":{"key":"k","sett":{}}}`, `params:1:30: unknown key "sett"`},
		{"missing required key", `{"mode":"0644"}`, `params:1:1: missing required key "name"`},
		{"wrong type", `{"name":"x","count":"many"}`, `params:1:21: expected an integer, got "many"`},
		{"a number where a string list is", `{"name":"x","list":5}`, `expected a list`},
		{"duplicate key", `{"name":"x","name":"y"}`, `duplicate key "name"`},
		{"YAML, not JSON", "name: x\n", "params: not a JSON document"},
		{"two documents", `{"name":"x"} {"name":"y"}`, "params: not a JSON document"},
		{"empty", "  ", "params: empty"},
		{"null for a struct", `null`, "expected a mapping, got null"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var k kitchen
			err := module.ParamsFromJSON(json.RawMessage(c.raw), &k)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v; want an error containing %q", err, c.want)
			}
		})
	}
	var k kitchen
	if err := module.ParamsFromJSON(json.RawMessage(`{"name":"x"}`), k); err == nil {
		t.Error("decoding into a non-pointer: no error")
	}
}

// A key YAML cannot hold on one line is an error, never a wrong value.
func TestParamsLongKey(t *testing.T) {
	long := strings.Repeat("k", 2000)
	raw, err := module.ParamsToJSON(kitchen{Map: map[string]string{long: "v"}})
	if err != nil {
		t.Fatal(err)
	}
	var back kitchen
	err = module.ParamsFromJSON(raw, &back)
	if err == nil && back.Map[long] != "v" {
		t.Fatalf("long key decoded as %v", back.Map)
	}
}

// FuzzParamsString: any valid UTF-8 text, as a value and as a map key,
// comes back byte for byte, and encoding/json reads the same text.
func FuzzParamsString(f *testing.F) {
	for _, s := range []string{"", "0644", "yes", "\n x", "<<", "a\u2028b", "\u0085", "\ufeff", "\x00", "\"\\", "🙂", "\r\n", "\t\n\t", "- a\n- b", "key: value", "{[,]}"} {
		f.Add(s)
	}
	type p struct {
		S string            `yaml:"s"`
		M map[string]string `yaml:"m"`
		A any               `yaml:"a"`
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) {
			if _, err := module.ParamsToJSON(p{S: s}); err == nil {
				t.Fatalf("%q: invalid UTF-8 accepted", s)
			}
			return
		}
		in := p{S: s, M: map[string]string{s: s}, A: []any{s}}
		raw, err := module.ParamsToJSON(in)
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		var viaJSON struct{ S string }
		if err := json.Unmarshal(raw, &viaJSON); err != nil || viaJSON.S != s {
			t.Fatalf("%q: encoding/json reads %q, %v", s, viaJSON.S, err)
		}
		var back p
		if err := module.ParamsFromJSON(raw, &back); err != nil {
			t.Fatalf("%q: %s: %v", s, raw, err)
		}
		if !reflect.DeepEqual(back, in) {
			t.Fatalf("%q: got %#v from %s", s, back, raw)
		}
	})
}
