package cli

import (
	"testing"

	"nksrun/engine/module"
	"nksrun/engine/plans"
)

// TestDiagnoseRowStatus: one doctor row per runbook plan; a diagnose step
// that cannot tell is "unknown", never "not found".
func TestDiagnoseRowStatus(t *testing.T) {
	step := func(mod string, a module.Action) plans.StepPlan {
		sp := plans.StepPlan{ID: "s", Module: mod}
		sp.Action, sp.Summary, sp.Reason = a, "summary", "why"
		if a == module.Finding {
			sp.Findings = []module.FindingInfo{{Title: "problem", Recommendation: "do this"}}
		}
		return sp
	}
	for _, tc := range []struct {
		name  string
		steps []plans.StepPlan
		want  string
	}{
		{"healthy", []plans.StepPlan{step("report", module.NoOp)}, "not found"},
		{"finding", []plans.StepPlan{step("report", module.Finding)}, "found"},
		{"change", []plans.StepPlan{step("k8s_patch", module.Change)}, "found"},
		{"unknown", []plans.StepPlan{step("report", module.Unknown), step("k8s_patch", module.Skip)}, "unknown"},
		{"finding wins over unknown", []plans.StepPlan{step("report", module.Unknown), step("report", module.Finding)}, "found"},
		{"all skipped", []plans.StepPlan{step("k8s_patch", module.Skip)}, "not applicable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rp := plans.RunbookPlan{Name: "rb", Targets: []plans.TargetPlan{{Kind: plans.TargetCluster, Name: "cluster", Status: plans.StatusOK, Steps: tc.steps}}}
			if got := diagnose(rp, "rb.yaml"); got.Status != tc.want {
				t.Errorf("status %q, want %q (%+v)", got.Status, tc.want, got)
			}
		})
	}
}
