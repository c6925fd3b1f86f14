package engine

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"

	"nksrun/engine/gather"
	"nksrun/engine/module"
	"nksrun/engine/plans"
	"nksrun/engine/runbook"
	"nksrun/inventory"
)

// Plan reads facts for real and computes, for every runbook, target and
// step, what apply would do. It changes nothing anywhere.
func (e *Engine) Plan(ctx context.Context, rbs []*runbook.Runbook, set map[string]string) (*plans.Plan, error) {
	if err := checkSets(rbs, set); err != nil {
		return nil, err
	}
	p := &plans.Plan{FormatVersion: plans.FormatVersion, Tool: e.o.Version, CreatedAt: e.o.Now().UTC()}
	e.emit(Event{Type: EventPhaseStart, Phase: "plan", Message: fmt.Sprintf("plan: %d runbook(s), %d node(s)", len(rbs), len(e.o.Hosts))})
	for _, rb := range rbs {
		rp, err := e.planRunbook(ctx, rb, set)
		if err != nil {
			return nil, err
		}
		p.Runbooks = append(p.Runbooks, *rp)
	}
	return p, nil
}

// checkSets refuses --set names no runbook declares (a typo would otherwise
// silently plan with the default).
func checkSets(rbs []*runbook.Runbook, set map[string]string) error {
	for name := range set {
		found := false
		for _, rb := range rbs {
			if _, ok := rb.Params[name]; ok {
				found = true
			}
		}
		if !found {
			return fmt.Errorf("--set %s: no runbook given declares a param %q", name, name)
		}
	}
	return nil
}

func paramsFor(rb *runbook.Runbook, set map[string]string) (map[string]any, error) {
	own := map[string]string{}
	for k, v := range set {
		if _, ok := rb.Params[k]; ok {
			own[k] = v
		}
	}
	return rb.ResolveParams(own)
}

func (e *Engine) planRunbook(ctx context.Context, rb *runbook.Runbook, set map[string]string) (*plans.RunbookPlan, error) {
	params, err := paramsFor(rb, set)
	if err != nil {
		return nil, err
	}
	if err := e.registerSecrets(rb, params); err != nil {
		return nil, err
	}
	rp := &plans.RunbookPlan{
		Name: rb.Name, Title: rb.Title, Section: rb.Section, Path: rb.Path,
		Source: string(rb.Source), SourceHash: rb.Hash, Params: params,
	}
	clusterEnv := e.clusterEnv(ctx)
	k8sFacts, err := gather.Kubernetes(ctx, e.o.Cluster, rb)
	if err != nil {
		return nil, fmt.Errorf("runbook %s: %w", rb.Name, err)
	}
	if rb.HasScope(module.ScopeCluster) {
		rp.Targets = append(rp.Targets, e.planCluster(ctx, rb, params, clusterEnv, k8sFacts))
	}
	if rb.HasScope(module.ScopeNode) {
		hosts := e.o.Hosts
		targets := make([]plans.TargetPlan, len(hosts))
		fails := &failures{limit: e.o.MaxFailures}
		forEach(ctx, len(hosts), e.o.Forks, func(i int) {
			if fails.exceeded() {
				targets[i] = nodeTarget(hosts[i], plans.StatusNotRun, "not planned: failure limit (--max-failures) reached")
				return
			}
			targets[i] = e.planNode(ctx, rb, params, clusterEnv, k8sFacts, hosts[i])
			if targets[i].Status == plans.StatusFailed || targets[i].Status == plans.StatusUnreachable {
				fails.add()
			}
			e.emit(Event{Type: EventTarget, Runbook: rb.Name, Target: hosts[i].Name, Status: string(targets[i].Status), Message: targets[i].Reason})
		})
		rp.Targets = append(rp.Targets, targets...)
	}
	return rp, nil
}

func nodeTarget(h inventory.Host, status plans.Status, reason string) plans.TargetPlan {
	return plans.TargetPlan{Kind: plans.TargetNode, Name: h.Name, Address: h.Address, User: h.User, Port: h.Port, Labels: h.Labels, Status: status, Reason: reason}
}

// skipReason evaluates the skip rules (before connecting).
func skipReason(rb *runbook.Runbook, env map[string]any, h inventory.Host, includeNotReady bool) (string, error) {
	if !includeNotReady && !h.Ready() {
		return "node is NotReady (use --include-not-ready to plan it anyway)", nil
	}
	for i := range rb.Nodes.Skip {
		r := &rb.Nodes.Skip[i]
		skip, err := r.If.EvalBool(env)
		if err != nil {
			return "", err
		}
		if skip {
			return r.Reason, nil
		}
	}
	return "", nil
}

func (e *Engine) planNode(ctx context.Context, rb *runbook.Runbook, params, clusterEnv, k8sFacts map[string]any, h inventory.Host) plans.TargetPlan {
	tp := nodeTarget(h, plans.StatusOK, "")
	env := map[string]any{
		runbook.EnvParams: params, runbook.EnvNode: h.Facts, runbook.EnvCluster: clusterEnv,
		runbook.EnvHost: map[string]any{}, runbook.EnvFacts: maps.Clone(k8sFacts), runbook.EnvVars: map[string]any{}, runbook.EnvSteps: map[string]any{},
	}
	if reason, err := skipReason(rb, env, h, e.o.IncludeNotReady); err != nil {
		tp.Status, tp.Reason = plans.StatusFailed, err.Error()
		return tp
	} else if reason != "" {
		tp.Status, tp.Reason = plans.StatusSkipped, reason
		return tp
	}
	runner, err := e.connect(ctx, h)
	if err != nil {
		tp.Status, tp.Reason = plans.StatusUnreachable, err.Error()
		return tp
	}
	node := &module.Node{Name: h.Name, Address: h.Address, Facts: h.Facts, Runner: runner}
	t := e.target(rb, node)

	// Steps whose condition and parameters read only params, node and
	// cluster can be prepared before any fact is read; their probes join the
	// built-in and declared facts in one round trip.
	steps := rb.Steps
	prepared := make([]*preparedStep, len(steps))
	var probes []module.Probe
	for i := range steps {
		s := &steps[i]
		if s.Scope() != module.ScopeNode || !static(s) {
			continue
		}
		ps, err := e.prepare(t, s, env)
		if err != nil {
			return failTarget(tp, s, err)
		}
		prepared[i] = ps
		probes = append(probes, ps.probes...)
	}
	host, results, err := gather.Node(ctx, runner, rb, probes, env[runbook.EnvFacts].(map[string]any))
	if err != nil {
		// gather's own errors already say "gathering facts"; one prefix.
		tp.Status, tp.Reason = plans.StatusFailed, err.Error()
		if !strings.HasPrefix(tp.Reason, "gathering facts") {
			tp.Reason = "gathering facts: " + tp.Reason
		}
		if isTransport(err) {
			tp.Status = plans.StatusUnreachable
		}
		return tp
	}
	env[runbook.EnvHost] = host
	if err := rb.EvalVars(env); err != nil {
		tp.Status, tp.Reason = plans.StatusFailed, err.Error()
		return tp
	}
	node.Facts = withHostFacts(h.Facts, env[runbook.EnvHost].(map[string]any))
	t.Node = node

	stepsEnv := env[runbook.EnvSteps].(map[string]any)
	for i := range steps {
		s := &steps[i]
		if s.Scope() != module.ScopeNode {
			continue
		}
		ps := prepared[i]
		if ps == nil {
			ps, err = e.prepare(t, s, env)
			if err != nil {
				return failTarget(tp, s, err)
			}
			if len(ps.probes) > 0 {
				more, err := gather.Run(ctx, runner, ps.probes)
				if err != nil {
					return failTarget(tp, s, err)
				}
				maps.Copy(results, more)
			}
		}
		sp, err := e.planStep(ctx, rb.Name, t, s, ps, results)
		if err != nil {
			return failTarget(tp, s, err)
		}
		tp.Steps = append(tp.Steps, sp)
		stepsEnv[s.ID] = registered(sp.Planned, sp.Action == module.Change)
	}
	tp.Status = targetStatus(tp.Steps)
	return tp
}

// withHostFacts gives modules one facts map: node.* plus host.* under "host".
func withHostFacts(nodeFacts, host map[string]any) map[string]any {
	f := maps.Clone(nodeFacts)
	f["host"] = host
	return f
}

func static(s *runbook.Step) bool {
	for name := range s.Uses() {
		switch name {
		case runbook.EnvParams, runbook.EnvNode, runbook.EnvCluster:
		default:
			return false
		}
	}
	return true
}

// preparedStep is a step whose condition is evaluated and, if it runs, whose
// parameters are decoded and probes known.
type preparedStep struct {
	skip   string
	mod    module.Module
	params any
	probes []module.Probe
}

func (e *Engine) prepare(t module.Target, s *runbook.Step, env map[string]any) (*preparedStep, error) {
	ok, err := s.When.EvalBool(env)
	if err != nil {
		return nil, err
	}
	if !ok {
		return &preparedStep{skip: fmt.Sprintf("when: %s is false", s.When.Source)}, nil
	}
	mod, err := e.instance(s.Module)
	if err != nil {
		return nil, err
	}
	params, err := s.Params(mod, env)
	if err != nil {
		return nil, err
	}
	ps := &preparedStep{mod: mod, params: params}
	if s.Scope() == module.ScopeNode {
		probes, err := mod.Probes(t, module.Step{ID: s.ID, Params: params})
		if err != nil {
			return nil, err
		}
		// Probe keys are namespaced by step so two steps of one module never collide.
		for _, p := range probes {
			p.Key = "step." + s.ID + "." + p.Key
			ps.probes = append(ps.probes, p)
		}
	}
	return ps, nil
}

func (e *Engine) planStep(ctx context.Context, rbName string, t module.Target, s *runbook.Step, ps *preparedStep, results map[string]module.ProbeResult) (plans.StepPlan, error) {
	sp := plans.StepPlan{ID: s.ID, Module: s.Module}
	if ps.skip != "" {
		sp.Action, sp.Summary, sp.Reason = module.Skip, "skipped", ps.skip
		return sp, nil
	}
	own := map[string]module.ProbeResult{}
	prefix := "step." + s.ID + "."
	for k, v := range results {
		if len(k) > len(prefix) && k[:len(prefix)] == prefix {
			own[k[len(prefix):]] = v
		}
	}
	planned, err := ps.mod.Plan(ctx, t, module.Step{ID: s.ID, Params: ps.params}, own)
	if err != nil {
		return sp, err
	}
	raw, err := stepParamsJSON(ps.params)
	if err != nil {
		return sp, err
	}
	sp.Params = raw
	sp.Planned = planned
	for _, f := range planned.Findings {
		e.emit(Event{Type: EventFinding, Phase: "plan", Runbook: rbName, Target: targetName(t), Step: s.ID, Module: s.Module, Status: f.Severity, Message: f.Title})
	}
	return sp, nil
}

func targetName(t module.Target) string {
	if t.Node != nil {
		return t.Node.Name
	}
	return "cluster"
}

// registered is what later steps see as steps.<id>.
func registered(p module.Planned, changed bool) map[string]any {
	r := map[string]any{"action": string(p.Action), "changed": changed, "findings": len(p.Findings)}
	for k, v := range p.Outputs {
		r[k] = v
	}
	return r
}

func failTarget(tp plans.TargetPlan, s *runbook.Step, err error) plans.TargetPlan {
	tp.Status = plans.StatusFailed
	tp.Reason = fmt.Sprintf("step %s (%s): %v", s.ID, s.Module, err)
	if isTransport(err) {
		tp.Status = plans.StatusUnreachable
	}
	return tp
}

// isTransport reports errors that mean the node itself could not be reached
// (as opposed to a step failing on it). Transports mark such errors by
// implementing Unreachable() bool.
func isTransport(err error) bool {
	var u interface{ Unreachable() bool }
	return errors.As(err, &u) && u.Unreachable()
}

func targetStatus(steps []plans.StepPlan) plans.Status {
	for _, s := range steps {
		if s.Action == module.Change || s.Action == module.Unknown {
			return plans.StatusChanges
		}
	}
	return plans.StatusOK
}

func (e *Engine) planCluster(ctx context.Context, rb *runbook.Runbook, params, clusterEnv, k8sFacts map[string]any) plans.TargetPlan {
	tp := plans.TargetPlan{Kind: plans.TargetCluster, Name: "cluster", Status: plans.StatusOK}
	if e.o.Cluster == nil {
		tp.Status, tp.Reason = plans.StatusFailed, "runbook has cluster steps but no cluster is configured (--kubeconfig)"
		return tp
	}
	env := map[string]any{
		runbook.EnvParams: params, runbook.EnvNode: map[string]any{}, runbook.EnvCluster: clusterEnv,
		runbook.EnvHost: map[string]any{}, runbook.EnvFacts: maps.Clone(k8sFacts), runbook.EnvVars: map[string]any{}, runbook.EnvSteps: map[string]any{},
	}
	if err := rb.EvalVars(env); err != nil {
		tp.Status, tp.Reason = plans.StatusFailed, err.Error()
		return tp
	}
	t := e.target(rb, nil)
	stepsEnv := env[runbook.EnvSteps].(map[string]any)
	for i := range rb.Steps {
		s := &rb.Steps[i]
		if s.Scope() != module.ScopeCluster {
			continue
		}
		ps, err := e.prepare(t, s, env)
		if err != nil {
			return failTarget(tp, s, err)
		}
		sp, err := e.planStep(ctx, rb.Name, t, s, ps, nil)
		if err != nil {
			return failTarget(tp, s, err)
		}
		tp.Steps = append(tp.Steps, sp)
		stepsEnv[s.ID] = registered(sp.Planned, sp.Action == module.Change)
	}
	tp.Status = targetStatus(tp.Steps)
	e.emit(Event{Type: EventTarget, Runbook: rb.Name, Target: "cluster", Status: string(tp.Status), Message: tp.Reason})
	return tp
}
