package module

import (
	"context"
	"fmt"
)

// Typed is a module written against its own parameter struct P: the adapter
// (Adapt) decodes into a fresh *P and checks the type once, so module code
// never asserts `params.(*Params)` itself. id is the runbook step's id.
type Typed[P any] interface {
	Scope() Scope
	// Validate checks decoded parameters (required fields, enums).
	Validate(p *P) error
	// Plan computes the change without changing anything.
	Plan(ctx context.Context, t Target, id string, p *P, probes map[string]ProbeResult) (Planned, error)
	// Apply performs exactly pl (a Change), re-checking pl.Fingerprint first.
	Apply(ctx context.Context, t Target, id string, p *P, pl Planned) (Applied, error)
}

// TypedProber is the typed form of Prober.
type TypedProber[P any] interface {
	Probes(t Target, id string, p *P) ([]Probe, error)
}

// TypedAPIUser is the typed form of APIUser.
type TypedAPIUser[P any] interface {
	RBAC(p *P) ([]Rule, error)
}

// outputDeclarer mirrors runbook.OutputDeclarer (this package cannot import
// runbook): the outputs a module's steps register for later steps.
type outputDeclarer interface {
	Outputs() []string
}

// Adapt turns a typed module into a Module. The result implements Prober,
// APIUser and runbook.OutputDeclarer only when m has the typed counterpart:
// the engine and the CLI test for those optional interfaces (a module that
// does not use the API must declare no RBAC), so the adapter must not
// pretend to have them.
func Adapt[P any](m Typed[P]) Module {
	b := base[P]{m: m}
	pr, isProber := m.(TypedProber[P])
	au, isAPI := m.(TypedAPIUser[P])
	od, hasOutputs := m.(outputDeclarer)
	p := prober[P]{pr}
	a := apiUser[P]{au}
	o := outputs{od}
	switch {
	case isProber && isAPI && hasOutputs:
		return struct {
			base[P]
			prober[P]
			apiUser[P]
			outputs
		}{b, p, a, o}
	case isProber && isAPI:
		return struct {
			base[P]
			prober[P]
			apiUser[P]
		}{b, p, a}
	case isProber && hasOutputs:
		return struct {
			base[P]
			prober[P]
			outputs
		}{b, p, o}
	case isAPI && hasOutputs:
		return struct {
			base[P]
			apiUser[P]
			outputs
		}{b, a, o}
	case isProber:
		return struct {
			base[P]
			prober[P]
		}{b, p}
	case isAPI:
		return struct {
			base[P]
			apiUser[P]
		}{b, a}
	case hasOutputs:
		return struct {
			base[P]
			outputs
		}{b, o}
	}
	return b
}

// typedParams is the one type assertion of every module's parameters. A
// wrong type is an engine bug, reported as an error rather than a panic.
func typedParams[P any](params any) (*P, error) {
	p, ok := params.(*P)
	if !ok || p == nil {
		var want *P
		return nil, fmt.Errorf("module parameters: got %T, want %T (engine bug)", params, want)
	}
	return p, nil
}

type base[P any] struct{ m Typed[P] }

func (b base[P]) Scope() Scope   { return b.m.Scope() }
func (b base[P]) NewParams() any { return new(P) }

func (b base[P]) Validate(params any) error {
	p, err := typedParams[P](params)
	if err != nil {
		return err
	}
	return b.m.Validate(p)
}

func (b base[P]) Plan(ctx context.Context, t Target, s Step, probes map[string]ProbeResult) (Planned, error) {
	p, err := typedParams[P](s.Params)
	if err != nil {
		return Planned{}, err
	}
	return b.m.Plan(ctx, t, s.ID, p, probes)
}

func (b base[P]) Apply(ctx context.Context, t Target, s Step, pl Planned) (Applied, error) {
	p, err := typedParams[P](s.Params)
	if err != nil {
		return Applied{}, err
	}
	return b.m.Apply(ctx, t, s.ID, p, pl)
}

type prober[P any] struct{ m TypedProber[P] }

func (a prober[P]) Probes(t Target, s Step) ([]Probe, error) {
	p, err := typedParams[P](s.Params)
	if err != nil {
		return nil, err
	}
	return a.m.Probes(t, s.ID, p)
}

type apiUser[P any] struct{ m TypedAPIUser[P] }

func (a apiUser[P]) RBAC(params any) ([]Rule, error) {
	p, err := typedParams[P](params)
	if err != nil {
		return nil, err
	}
	return a.m.RBAC(p)
}

type outputs struct{ m outputDeclarer }

func (o outputs) Outputs() []string { return o.m.Outputs() }
