package views

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"nksrun/engine/plans"
	"nksrun/engine/plans/planstest"
	"nksrun/testdata/golden"
)

// clusterFixture is three clusters: the golden plan (changes, an
// unreachable node, a secret param), one in sync, one whose API server did
// not answer (its error names a secret, which must be redacted).
func clusterFixture() []ClusterPlan {
	p, _ := planstest.Golden()
	p.Checksum = "" // a many-cluster plan is never saved, so never sealed
	ok := &plans.Plan{FormatVersion: p.FormatVersion, Tool: p.Tool, CreatedAt: p.CreatedAt, Runbooks: []plans.RunbookPlan{{
		Name: "logrotate", Title: p.Runbooks[0].Title, Section: "1", SourceHash: p.Runbooks[0].SourceHash,
		Targets: []plans.TargetPlan{{Kind: plans.TargetNode, Name: "b-node-0", Address: "10.0.0.10", User: "centos", Port: 22, Status: plans.StatusOK,
			Steps: []plans.StepPlan{{ID: "config", Module: "file_sync"}}}},
	}}}
	ok.Runbooks[0].Targets[0].Steps[0].Action = "no-op"
	ok.Runbooks[0].Targets[0].Steps[0].Summary = "/etc/logrotate.d/docker in sync"
	return []ClusterPlan{
		{Context: "prod-a", Server: "https://10.1.0.1:6443", Plan: p, Notes: "\nLeft by earlier runs:\n  ! warning: a slot\n"},
		{Context: "prod-b", Server: "https://10.2.0.1:6443", Plan: ok},
		{Context: "prod-c", Server: "https://10.3.0.1:6443", Error: "Get \"https://10.3.0.1:6443/api/v1/nodes\": dial tcp: connection refused (token " + planstest.Secret + ")"},
	}
}

func TestRenderClusterPlansGolden(t *testing.T) {
	_, secrets := planstest.Golden()
	for _, tc := range []struct{ format, file string }{
		{FormatText, "clusters.txt"},
		{FormatMarkdown, "clusters.md"},
		{FormatJSON, "clusters.json"},
		{FormatYAML, "clusters.yaml"},
	} {
		t.Run(tc.format, func(t *testing.T) {
			var buf bytes.Buffer
			if err := RenderClusterPlans(&buf, clusterFixture(), tc.format, secrets, Options{}); err != nil {
				t.Fatal(err)
			}
			got := buf.Bytes()
			assertNoSecret(t, got)
			golden.Assert(t, filepath.Join("plan", tc.file), got)
		})
	}
}

// Each cluster's section is byte for byte the single-cluster view of its
// plan, under a heading that names the context and the API server host.
func TestRenderClusterPlansSections(t *testing.T) {
	_, secrets := planstest.Golden()
	cs := clusterFixture()
	var all bytes.Buffer
	if err := RenderClusterPlans(&all, cs, FormatText, secrets, Options{}); err != nil {
		t.Fatal(err)
	}
	out := all.String()
	for _, c := range cs[:2] {
		var one bytes.Buffer
		if err := RenderPlan(&one, c.Plan, FormatText, secrets); err != nil {
			t.Fatal(err)
		}
		head := "=== cluster " + c.Context + " (" + ServerHost(c.Server) + ") ===\n\n"
		if !strings.Contains(out, head+one.String()) {
			t.Errorf("section of %s is not its single-cluster plan under %q:\n%s", c.Context, head, out)
		}
	}
	if !strings.Contains(out, "=== cluster prod-c (10.3.0.1:6443) ===\n\nerror: ") {
		t.Errorf("the unreachable cluster's error is not in its section:\n%s", out)
	}
	if !strings.Contains(out, "Clusters: 0 with changes, 1 in sync, 2 with errors (of 3).") {
		t.Errorf("summary over all clusters missing or wrong:\n%s", out)
	}
}

// The data views keep each cluster's plan in the plan's own schema.
func TestRenderClusterPlansJSONShape(t *testing.T) {
	_, secrets := planstest.Golden()
	var buf bytes.Buffer
	if err := RenderClusterPlans(&buf, clusterFixture(), FormatJSON, secrets, Options{}); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Clusters []struct {
			Context string       `json:"context"`
			Server  string       `json:"server"`
			Error   string       `json:"error"`
			Plan    *plans.Plan  `json:"plan"`
			Notes   *json.Number `json:"notes"`
		} `json:"clusters"`
		Totals ClusterTotals `json:"totals"`
	}
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Clusters) != 3 || got.Clusters[0].Plan == nil || got.Clusters[2].Plan != nil || got.Clusters[2].Error == "" || got.Clusters[0].Notes != nil {
		t.Fatalf("clusters: %+v", got.Clusters)
	}
	want := ClusterTotals{Clusters: 3, Errors: 2, WithChanges: 0, InSync: 1}
	// prod-a has an unreachable node: it counts as an error, not as changes.
	if got.Totals.Clusters != want.Clusters || got.Totals.Errors != want.Errors || got.Totals.InSync != want.InSync || got.Totals.WithChanges != want.WithChanges {
		t.Errorf("totals %+v, want %+v", got.Totals, want)
	}
	if got.Totals.Targets["unreachable"] != 1 || got.Totals.Targets["ok"] != 2 {
		t.Errorf("targets by status: %v", got.Totals.Targets)
	}
}
