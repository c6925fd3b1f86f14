package runbook

import "testing"

// An expression whose result is an empty list (expr's concat returns a nil
// slice) is an empty list for a module, never a missing value.
func TestNormalizeEmptyList(t *testing.T) {
	got := normalize([]any(nil))
	if l, ok := got.([]any); !ok || l == nil || len(l) != 0 {
		t.Errorf("normalize(nil slice) = %#v, want []any{}", got)
	}
}
