package engine

import (
	"encoding/json"
	"strings"
	"testing"

	"nksrun/engine/module"
	"nksrun/engine/plans"
)

func TestCompareTarget(t *testing.T) {
	base := func() plans.TargetPlan {
		return plans.TargetPlan{Kind: plans.TargetNode, Name: "n1", Status: plans.StatusChanges, Steps: []plans.StepPlan{
			{ID: "skip", Module: "report", Planned: module.Planned{Action: module.Finding, Summary: "3 pods"}},
			{ID: "config", Module: "file_sync", Params: json.RawMessage(`{"dest":"/etc/x","mode":"0644"}`), Planned: module.Planned{
				Action: module.Change, Summary: "update /etc/x", Diff: "-a\n+b\n",
				Fingerprint: map[string]string{"sha256": "aa"}, Data: json.RawMessage(`{"sha256":"bb"}`),
			}},
		}}
	}
	for _, tc := range []struct {
		name          string
		edit          func(saved, fresh *plans.TargetPlan)
		stale, forged string
	}{
		{"same", func(_, _ *plans.TargetPlan) {}, "", ""},
		{"same params, other key order and spacing", func(s, _ *plans.TargetPlan) {
			s.Steps[1].Params = json.RawMessage(`{ "mode": "0644", "dest": "/etc/x" }`)
		}, "", ""},
		{"non-pending step differs: ignored", func(_, f *plans.TargetPlan) { f.Steps[0].Summary = "4 pods" }, "", ""},
		{"facts moved on", func(_, f *plans.TargetPlan) { f.Steps[1].Fingerprint["sha256"] = "cc" }, "sha256 was aa at plan time, now cc", ""},
		{"fingerprint forged", func(s, _ *plans.TargetPlan) { s.Steps[1].Fingerprint["sha256"] = "$(id)" }, "sha256 was $(id)", ""},
		{"params edited", func(s, _ *plans.TargetPlan) {
			s.Steps[1].Params = json.RawMessage(`{"dest":"/etc/evil","mode":"0644"}`)
		}, "", "params differs"},
		{"payload edited", func(s, _ *plans.TargetPlan) { s.Steps[1].Data = json.RawMessage(`{"sha256":"ee"}`) }, "", "payload differs"},
		{"summary edited", func(s, _ *plans.TargetPlan) { s.Steps[1].Summary = "nothing to see" }, "", "summary differs"},
		{"diff edited", func(s, _ *plans.TargetPlan) { s.Steps[1].Diff = "" }, "", "diff differs"},
		{"action promoted", func(s, f *plans.TargetPlan) { f.Steps[1].Action = module.NoOp }, "", "action differs"},
		{"fresh plan failed", func(_, f *plans.TargetPlan) { f.Status, f.Reason = plans.StatusUnreachable, "no route" }, "could not re-check", ""},
		{"step gone from the fresh plan", func(_, f *plans.TargetPlan) { f.Steps = f.Steps[:1] }, "not planned any more", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			saved, fresh := base(), base()
			tc.edit(&saved, &fresh)
			stale, forged, _ := compareTarget(&saved, &fresh)
			if (tc.stale == "") != (stale == "") || !strings.Contains(stale, tc.stale) {
				t.Errorf("stale = %q, want %q", stale, tc.stale)
			}
			if (tc.forged == "") != (forged == "") || !strings.Contains(forged, tc.forged) {
				t.Errorf("forged = %q, want %q", forged, tc.forged)
			}
		})
	}
}
