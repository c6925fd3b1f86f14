package cli

import (
	"testing"

	"nksrun/engine"
	"nksrun/engine/module"
)

// TestDiagnoseRowStatus: one doctor row per runbook plan; a diagnose step
// that cannot tell is "unknown", never "not found".
func TestDiagnoseRowStatus(t *testing.T) {
	step := func(mod string, a module.Action) engine.StepPlan {
		sp := engine.StepPlan{ID: "s", Module: mod}
		sp.Action, sp.Summary, sp.Reason = a, "summary", "why"
		if a == module.Finding {
			sp.Findings = []module.FindingInfo{{Title: "problem", Recommendation: "do this"}}
		}
		return sp
	}
	for _, tc := range []struct {
		name  string
		steps []engine.StepPlan
		want  string
	}{
		{"healthy", []engine.StepPlan{step("report", module.NoOp)}, "not found"},
		{"finding", []engine.StepPlan{step("report", module.Finding)}, "found"},
		{"change", []engine.StepPlan{step("k8s_patch", module.Change)}, "found"},
		{"unknown", []engine.StepPlan{step("report", module.Unknown), step("k8s_patch", module.Skip)}, "unknown"},
		{"finding wins over unknown", []engine.StepPlan{step("report", module.Unknown), step("report", module.Finding)}, "found"},
		{"all skipped", []engine.StepPlan{step("k8s_patch", module.Skip)}, "not applicable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rp := engine.RunbookPlan{Name: "rb", Targets: []engine.TargetPlan{{Kind: engine.TargetCluster, Name: "cluster", Status: engine.StatusOK, Steps: tc.steps}}}
			if got := diagnose(rp, "rb.yaml"); got.Status != tc.want {
				t.Errorf("status %q, want %q (%+v)", got.Status, tc.want, got)
			}
		})
	}
}
