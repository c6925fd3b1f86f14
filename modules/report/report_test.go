package report

import (
	"context"
	"strings"
	"testing"

	"nksrun/engine/module"
	"nksrun/engine/module/optest"
)

// The plan cases (finding, not found, default severity) are data:
// testdata/modules/report, run here and by modules.TestModuleCases.
func TestCases(t *testing.T) { optest.Run(t, New(), "report") }

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		p   Params
		err string
	}{
		{Params{Title: "x"}, ""},
		{Params{Title: "x", Severity: "info"}, ""},
		{Params{Title: "x", Severity: "critical"}, ""},
		{Params{Title: "x", Severity: "error"}, `severity "error"`},
		{Params{Title: "x", Severity: "Warning"}, `severity "Warning"`},
		{Params{Severity: "info"}, "title is required"},
	} {
		err := Module{}.Validate(&tc.p)
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("Validate(%+v) = %v, want %q", tc.p, err, tc.err)
		}
	}
}

// A finding is not a change: Apply, if it is ever called, does nothing and
// says so, and the plan carries no data for it.
func TestFindingChangesNothing(t *testing.T) {
	p := &Params{Found: true, Title: "x"}
	pl, err := New().Plan(context.Background(), module.Target{}, module.Step{Params: p}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if pl.Action != module.Finding || len(pl.Data) != 0 || pl.Fingerprint != nil || len(pl.Findings) != 1 {
		t.Fatalf("plan = %+v", pl)
	}
	ap, err := New().Apply(context.Background(), module.Target{}, module.Step{Params: p}, pl)
	if err != nil || ap.Changed {
		t.Fatalf("apply = %+v, %v; want unchanged", ap, err)
	}
	if _, ok := New().(module.Prober); ok {
		t.Fatal("report reads nothing from nodes: it must not probe")
	}
}
