package module_test

import (
	"context"
	"strings"
	"testing"

	"nksrun/engine/module"
)

type params struct{ N int }

// plain has neither probes nor RBAC nor outputs.
type plain struct{}

func (plain) Scope() module.Scope { return module.ScopeAny }
func (plain) Validate(p *params) error {
	if p.N < 0 {
		return errNegative
	}
	return nil
}
func (plain) Plan(_ context.Context, _ module.Target, id string, p *params, _ map[string]module.ProbeResult) (module.Planned, error) {
	return module.Planned{Action: module.NoOp, Summary: id + strings.Repeat("x", p.N)}, nil
}
func (plain) Apply(_ context.Context, _ module.Target, id string, p *params, _ module.Planned) (module.Applied, error) {
	return module.Applied{Summary: id + strings.Repeat("y", p.N)}, nil
}

type errString string

func (e errString) Error() string { return string(e) }

const errNegative = errString("negative")

type withProbes struct{ plain }

func (withProbes) Probes(_ module.Target, id string, p *params) ([]module.Probe, error) {
	return []module.Probe{{Key: id, Command: strings.Repeat("p", p.N)}}, nil
}

type withAll struct{ withProbes }

func (withAll) RBAC(p *params) ([]module.Rule, error) {
	return []module.Rule{{Verbs: []string{"get"}, Why: strings.Repeat("r", p.N)}}, nil
}
func (withAll) Outputs() []string { return []string{"out"} }

type withRBAC struct{ plain }

func (withRBAC) RBAC(*params) ([]module.Rule, error) { return nil, nil }

// The adapter exposes an optional interface exactly when the typed module
// has it: the CLI emits RBAC for every module that is an APIUser.
func TestAdaptOptionalInterfaces(t *testing.T) {
	type outputDeclarer interface{ Outputs() []string }
	for _, tc := range []struct {
		name                 string
		m                    module.Module
		prober, api, outputs bool
	}{
		{"plain", module.Adapt[params](plain{}), false, false, false},
		{"probes", module.Adapt[params](withProbes{}), true, false, false},
		{"rbac", module.Adapt[params](withRBAC{}), false, true, false},
		{"all", module.Adapt[params](withAll{}), true, true, true},
	} {
		_, p := tc.m.(module.Prober)
		_, a := tc.m.(module.APIUser)
		_, o := tc.m.(outputDeclarer)
		if p != tc.prober || a != tc.api || o != tc.outputs {
			t.Errorf("%s: Prober %v APIUser %v Outputs %v, want %v %v %v", tc.name, p, a, o, tc.prober, tc.api, tc.outputs)
		}
	}
}

func TestAdaptPassesTypedParams(t *testing.T) {
	m := module.Adapt[params](withAll{})
	if _, ok := m.NewParams().(*params); !ok {
		t.Fatalf("NewParams() = %T, want *params", m.NewParams())
	}
	p := &params{N: 2}
	s := module.Step{ID: "s", Params: p}
	if err := m.Validate(&params{N: -1}); err != errNegative {
		t.Errorf("Validate: %v, want the typed module's error", err)
	}
	pl, err := m.Plan(context.Background(), module.Target{}, s, nil)
	if err != nil || pl.Summary != "sxx" {
		t.Errorf("Plan = %q, %v", pl.Summary, err)
	}
	ap, err := m.Apply(context.Background(), module.Target{}, s, pl)
	if err != nil || ap.Summary != "syy" {
		t.Errorf("Apply = %q, %v", ap.Summary, err)
	}
	pr, err := m.(module.Prober).Probes(module.Target{}, s)
	if err != nil || len(pr) != 1 || pr[0].Key != "s" || pr[0].Command != "pp" {
		t.Errorf("Probes = %+v, %v", pr, err)
	}
	rules, err := m.(module.APIUser).RBAC(p)
	if err != nil || len(rules) != 1 || rules[0].Why != "rr" {
		t.Errorf("RBAC = %+v, %v", rules, err)
	}
	if got := m.(interface{ Outputs() []string }).Outputs(); len(got) != 1 || got[0] != "out" {
		t.Errorf("Outputs = %q", got)
	}
}

// Parameters of the wrong type are an engine bug: an error naming both
// types, never a panic.
func TestAdaptWrongParams(t *testing.T) {
	m := module.Adapt[params](withAll{})
	type other struct{}
	var nilParams *params
	for _, bad := range []any{nil, other{}, &other{}, params{}, nilParams} {
		s := module.Step{ID: "s", Params: bad}
		errs := map[string]error{"Validate": m.Validate(bad)}
		_, errs["Plan"] = m.Plan(context.Background(), module.Target{}, s, nil)
		_, errs["Apply"] = m.Apply(context.Background(), module.Target{}, s, module.Planned{})
		_, errs["Probes"] = m.(module.Prober).Probes(module.Target{}, s)
		_, errs["RBAC"] = m.(module.APIUser).RBAC(bad)
		for name, err := range errs {
			if err == nil || !strings.Contains(err.Error(), "want *module_test.params") {
				t.Errorf("%s(%T): err = %v, want a type error", name, bad, err)
			}
		}
	}
}
