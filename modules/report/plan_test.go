package report

import (
	"context"
	"testing"

	"nksrun/engine/module"
)

// TestPlanActions: found → finding; not found → no-op; not found but
// unknown → unknown with the reason (unknown is not healthy).
func TestPlanActions(t *testing.T) {
	for _, tc := range []struct {
		name   string
		p      Params
		action module.Action
		reason string
	}{
		{"found", Params{Found: true, Title: "t", Unknown: "ignored when found"}, module.Finding, ""},
		{"not found", Params{Title: "t"}, module.NoOp, ""},
		{"unknown", Params{Title: "t", Unknown: "image pinned by digest"}, module.Unknown, "image pinned by digest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := New().Plan(context.Background(), module.Target{}, module.Step{Params: &tc.p}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got.Action != tc.action || got.Reason != tc.reason {
				t.Errorf("got %s %q, want %s %q", got.Action, got.Reason, tc.action, tc.reason)
			}
			if a, err := New().Apply(context.Background(), module.Target{}, module.Step{Params: &tc.p}, got); err != nil || a.Changed {
				t.Errorf("apply changed something: %+v %v", a, err)
			}
		})
	}
}
