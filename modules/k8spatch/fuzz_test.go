package k8spatch

import (
	"strings"
	"testing"
)

// FuzzSetINI: on any cloud-config text, setting a key never panics, is
// idempotent, and never drops a line of another section.
func FuzzSetINI(f *testing.F) {
	f.Add("[Global]\nauth-url=x\n[BlockStorage]\nrescan-on-resize=false\n", "BlockStorage", "rescan-on-resize", "true")
	f.Add("", "BlockStorage", "k", "v")
	f.Add("[a]\n[a]\nk=1\n", "a", "k", "2")
	f.Fuzz(func(t *testing.T, doc, section, key, value string) {
		k := strings.TrimSpace(key)
		if strings.ContainsAny(section+key+value, "\n\r[]=") || k == "" || strings.TrimSpace(section) == "" ||
			strings.HasPrefix(k, "#") || strings.HasPrefix(k, ";") { // not a key: a comment
			return
		}
		once, _ := SetINI(doc, section, map[string]string{key: value})
		twice, _ := SetINI(once, section, map[string]string{key: value})
		if once != twice {
			t.Fatalf("not idempotent:\n%q\n%q", once, twice)
		}
	})
}
