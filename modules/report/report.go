// Package report implements the report module: a diagnose-only step that
// records a finding (severity, evidence, recommendation) and changes nothing.
// Findings appear in plan, apply and doctor output.
package report

import (
	"context"
	"errors"
	"fmt"

	"nksrun/engine/module"
)

// Params are report's parameters. Found, Evidence and Title are usually
// expressions over facts.
type Params struct {
	// Found says whether the problem is present; false plans a no-op "not found".
	Found          bool     `yaml:"found"`
	Severity       string   `yaml:"severity"` // info | warning | critical (default warning)
	Title          string   `yaml:"title" nks:"required"`
	Evidence       []string `yaml:"evidence,omitempty"`
	Recommendation string   `yaml:"recommendation,omitempty"`
	// Unknown, when not empty and the problem is not found, says why it
	// cannot be told either way (an image pinned by digest, an object it
	// may not read, a version it cannot parse): the step plans `unknown`
	// with that reason instead of "not found". Unknown is not healthy.
	Unknown string `yaml:"unknown,omitempty"`
}

// Module is report.
type Module struct{}

// New is the registry factory.
func New() module.Module { return module.Adapt[Params](Module{}) }

var _ module.Typed[Params] = Module{}

func (Module) Scope() module.Scope { return module.ScopeAny }

// Outputs are the keys later steps read as steps.<id>.<key>: whether the finding holds.
func (Module) Outputs() []string { return []string{"found"} }

func (Module) Validate(ps *Params) error {
	switch ps.Severity {
	case "", "info", "warning", "critical":
	default:
		return fmt.Errorf("severity %q: want info, warning or critical", ps.Severity)
	}
	if ps.Title == "" {
		return errors.New("title is required")
	}
	return nil
}

func (Module) Plan(_ context.Context, _ module.Target, _ string, p *Params, _ map[string]module.ProbeResult) (module.Planned, error) {
	if !p.Found && p.Unknown != "" {
		return module.Planned{Action: module.Unknown, Summary: "unknown: " + p.Title, Reason: p.Unknown, Outputs: map[string]any{"found": false, "unknown": true}}, nil
	}
	if !p.Found {
		return module.Planned{Action: module.NoOp, Summary: "not found: " + p.Title, Outputs: map[string]any{"found": false}}, nil
	}
	sev := p.Severity
	if sev == "" {
		sev = "warning"
	}
	return module.Planned{
		Action:   module.Finding,
		Summary:  "found: " + p.Title,
		Outputs:  map[string]any{"found": true},
		Findings: []module.FindingInfo{{Severity: sev, Title: p.Title, Evidence: p.Evidence, Recommendation: p.Recommendation}},
	}, nil
}

// Apply is never called for findings (they are not changes) and is a no-op
// for unknowns: a report changes nothing.
func (Module) Apply(context.Context, module.Target, string, *Params, module.Planned) (module.Applied, error) {
	return module.Applied{}, nil
}
