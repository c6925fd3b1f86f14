package strictyaml

import (
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

type host struct {
	Name  string            `yaml:"name" nks:"required"`
	Port  int               `yaml:"port"`
	Tags  []string          `yaml:"tags"`
	Attrs map[string]string `yaml:"attrs"`
}

func TestDecodeStrict(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{"name: a\nport: 22\ntags: [x]\n", ""},
		{"name: a\nprot: 22\n", `f.yaml:2:1: unknown key "prot" (did you mean "port"?) (allowed: name, port, tags, attrs)`},
		{"port: 22\n", `f.yaml:1:1: missing required key "name"`},
		{"name: a\nname: b\n", `f.yaml:2:1: duplicate key "name"`},
		{"name: a\nport: many\n", `f.yaml:2:7: expected an integer, got "many"`},
		{"name: a\ntags: x\n", `f.yaml:2:7: expected a list, got "x"`},
		{"name: !custom a\n", `f.yaml:1:7: !custom is not allowed here`},
	} {
		var doc yaml.Node
		if err := yaml.Unmarshal([]byte(tc.src), &doc); err != nil {
			t.Fatal(err)
		}
		var h host
		err := DecodeStrict("f.yaml", doc.Content[0], &h)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tc.want {
			t.Errorf("%q:\n got %q\nwant %q", tc.src, got, tc.want)
		}
	}
}

func TestSuggest(t *testing.T) {
	if got := Suggest("modul", []string{"module", "when"}); !strings.Contains(got, `"module"`) {
		t.Errorf("Suggest = %q", got)
	}
	if got := Suggest("zzzzzz", []string{"module"}); got != "" {
		t.Errorf("Suggest far miss = %q", got)
	}
}
