package setimage

import (
	"fmt"
	"nksrun/testdata/golden"
	"strings"
	"testing"
)

// GHCRRule is the §4 rewrite, as the ghcr-migration runbook writes it.
var ghcrRule = Rule{From: `docker\.pkg\.github\.com/([^/]+)/[^/]+/(.+)`, To: "ghcr.io/$1/$2", Regex: true}

func TestRewrite(t *testing.T) {
	calico := []Rule{{From: "harbor.example.com/nks/calico/", To: "calico/"}}
	var b strings.Builder
	for _, tc := range []struct {
		image string
		rules []Rule
		want  string
	}{
		{"docker.pkg.github.com/acme/shop/api:1.4.2", []Rule{ghcrRule}, "ghcr.io/acme/api:1.4.2"},
		{"docker.pkg.github.com/acme/shop/tools/cli:latest", []Rule{ghcrRule}, "ghcr.io/acme/tools/cli:latest"},
		{"docker.pkg.github.com/acme/shop/api@sha256:0123abcd", []Rule{ghcrRule}, "ghcr.io/acme/api@sha256:0123abcd"},
		{"docker.pkg.github.com/acme/shop/api:1.0@sha256:0123abcd", []Rule{ghcrRule}, "ghcr.io/acme/api:1.0@sha256:0123abcd"},
		{"docker.pkg.github.com/acme/shop/api", []Rule{ghcrRule}, "ghcr.io/acme/api"},
		{"ghcr.io/acme/api:1.4.2", []Rule{ghcrRule}, "ghcr.io/acme/api:1.4.2"},
		{"nginx:1.25", []Rule{ghcrRule}, "nginx:1.25"},
		{"registry:5000/docker.pkg.github.com/a/b/c:1", []Rule{ghcrRule}, "registry:5000/docker.pkg.github.com/a/b/c:1"},
		{"harbor.example.com/nks/calico/node:v3.28.0", calico, "calico/node:v3.28.0"},
		{"harbor.example.com/nks/calico/cni:v3.28.0", append([]Rule{ghcrRule}, calico...), "calico/cni:v3.28.0"},
	} {
		got := Rewrite(tc.image, tc.rules)
		if got != tc.want {
			t.Errorf("Rewrite(%q) = %q, want %q", tc.image, got, tc.want)
		}
		fmt.Fprintf(&b, "%s -> %s\n", tc.image, got)
	}
	golden.Assert(t, "ghcr-migration-rewrite.golden", []byte(b.String()))
}

func TestValidate(t *testing.T) {
	m := Module{}
	for _, tc := range []struct {
		p  Params
		ok bool
	}{
		{Params{Rules: []Rule{ghcrRule}}, true},
		{Params{Kind: "DaemonSet", Name: "calico-node", Containers: map[string]string{"calico-node": "calico/node:v1"}}, true},
		{Params{}, false},
		{Params{Rules: []Rule{ghcrRule}, Containers: map[string]string{"a": "b"}}, false},
		{Params{Kind: "Pod", Rules: []Rule{ghcrRule}}, false},
		{Params{Name: "x", Rules: []Rule{ghcrRule}}, false},
		{Params{Rules: []Rule{{From: "(", To: "x", Regex: true}}}, false},
	} {
		if err := m.Validate(&tc.p); (err == nil) != tc.ok {
			t.Errorf("%+v: err %v", tc.p, err)
		}
	}
}
