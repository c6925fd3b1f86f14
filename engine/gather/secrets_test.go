package gather

import (
	"encoding/base64"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// TestSecretMetadata: a Secret fact keeps what is not secret (metadata,
// type, key names, registry hosts) and nothing of its values.
func TestSecretMetadata(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	for _, tc := range []struct {
		name, typ  string
		data       map[string]any
		keys, regs []any
	}{
		{"docker config json", "kubernetes.io/dockerconfigjson",
			map[string]any{".dockerconfigjson": b64(`{"auths":{"https://index.docker.io/v1/":{"auth":"c2VjcmV0LXZhbHVl"},"docker.pkg.github.com":{"auth":"c2VjcmV0LXZhbHVl"}}}`)},
			[]any{".dockerconfigjson"}, []any{"docker.io", "docker.pkg.github.com"}},
		{"legacy dockercfg", "kubernetes.io/dockercfg",
			map[string]any{".dockercfg": b64(`{"ghcr.io":{"auth":"c2VjcmV0LXZhbHVl"}}`)},
			[]any{".dockercfg"}, []any{"ghcr.io"}},
		{"opaque", "Opaque", map[string]any{"password": b64("secret-value"), "cloud-config": b64("[Global]\npassword=secret-value\n")},
			[]any{"cloud-config", "password"}, []any{}},
		{"unparsable docker config", "kubernetes.io/dockerconfigjson", map[string]any{".dockerconfigjson": b64("secret-value")},
			[]any{".dockerconfigjson"}, []any{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": "v1", "kind": "Secret", "type": tc.typ, "data": tc.data,
				"stringData": map[string]any{"token": "secret-value"},
				"metadata": map[string]any{"name": "s", "namespace": "n", "labels": map[string]any{"a": "b"},
					"annotations": map[string]any{"kubectl.kubernetes.io/last-applied-configuration": `{"data":{"password":"secret-value"}}`, "keep": "me"}},
			}}
			secretMetadata(u)
			out, _ := json.Marshal(u.Object)
			if strings.Contains(string(out), "secret-value") || strings.Contains(string(out), b64("secret-value")) || strings.Contains(string(out), "c2VjcmV0LXZhbHVl") {
				t.Errorf("a value survived: %s", out)
			}
			wantKeys := append(tc.keys, "token")
			sortAny(wantKeys)
			if !reflect.DeepEqual(u.Object["_keys"], wantKeys) {
				t.Errorf("_keys %v, want %v", u.Object["_keys"], wantKeys)
			}
			if !reflect.DeepEqual(u.Object["_registries"], tc.regs) {
				t.Errorf("_registries %v, want %v", u.Object["_registries"], tc.regs)
			}
			if u.GetAnnotations()["keep"] != "me" || u.GetLabels()["a"] != "b" || u.Object["type"] != tc.typ {
				t.Errorf("metadata lost: %s", out)
			}
		})
	}
}

func sortAny(v []any) {
	for i := range v {
		for j := i + 1; j < len(v); j++ {
			if v[j].(string) < v[i].(string) {
				v[i], v[j] = v[j], v[i]
			}
		}
	}
}
