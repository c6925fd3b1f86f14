package views

import (
	"encoding/json"
	"strings"
	"testing"

	"nksrun/engine/redact"
)

// FuzzRedactJSON: for any JSON document and secret, the redacted document
// is still valid JSON, keeps every key, and no string value contains the
// secret.
func FuzzRedactJSON(f *testing.F) {
	f.Add([]byte(`{"a":"hunter2-secret","b":["x hunter2-secret y"],"hunter2-secret":1}`), "hunter2-secret")
	f.Add([]byte(`{"k":"v \"q\" \\ \u00e9 <&>"}`), `"q" \ é`)
	f.Fuzz(func(t *testing.T, doc []byte, secret string) {
		var v any
		if json.Unmarshal(doc, &v) != nil || len(secret) < redact.MinLen {
			return
		}
		s := &redact.Secrets{}
		s.AddSecret(secret)
		out := RedactJSON(doc, s)
		var w any
		if err := json.Unmarshal(out, &w); err != nil {
			t.Fatalf("redacted JSON is invalid: %v\n%s", err, out)
		}
		var walk func(x any, key bool)
		walk = func(x any, _ bool) {
			switch x := x.(type) {
			case string:
				if strings.Contains(x, secret) {
					t.Fatalf("value %q still contains the secret", x)
				}
			case []any:
				for _, e := range x {
					walk(e, false)
				}
			case map[string]any:
				for _, e := range x {
					walk(e, false)
				}
			}
		}
		walk(w, false)
	})
}
