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
	var err error
	e.withPlanTime(p.CreatedAt, func() { p.Runbooks, err = e.planRunbooks(ctx, rbs, set) })
	if err != nil {
		return nil, err
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

// runbookRun is one runbook being planned: its params, its Kubernetes
// facts (listed once) and, per host, its node target.
type runbookRun struct {
	rb       *runbook.Runbook
	params   map[string]any
	k8sFacts map[string]any
	rp       *plans.RunbookPlan
	targets  []plans.TargetPlan
	fails    *failures
}

// planRunbooks plans every runbook. Cluster targets are planned per
// runbook; node targets in one pass over the nodes, so a node gets one
// connection and one exec for the facts of all runbooks together (doctor
// plans all 13 with the round trips of one).
func (e *Engine) planRunbooks(ctx context.Context, rbs []*runbook.Runbook, set map[string]string) ([]plans.RunbookPlan, error) {
	runs, onNodes, err := e.startRunbooks(ctx, rbs, set)
	if err != nil {
		return nil, err
	}
	e.planNodes(ctx, onNodes, nil)
	return collectRuns(runs), nil
}

// startRunbooks resolves each runbook's params, lists its Kubernetes facts
// and plans its cluster target; onNodes are the runs with node steps, for
// planNodes.
func (e *Engine) startRunbooks(ctx context.Context, rbs []*runbook.Runbook, set map[string]string) (runs, onNodes []*runbookRun, err error) {
	cluster := e.clusterEnv(ctx)
	runs = make([]*runbookRun, 0, len(rbs))
	for _, rb := range rbs {
		params, err := paramsFor(rb, set)
		if err != nil {
			return nil, nil, err
		}
		if err := e.registerSecrets(rb, params); err != nil {
			return nil, nil, err
		}
		k8sFacts, err := gather.Kubernetes(ctx, e.o.Cluster, rb)
		if err != nil {
			return nil, nil, fmt.Errorf("runbook %s: %w", rb.Name, err)
		}
		r := &runbookRun{rb: rb, params: params, k8sFacts: k8sFacts, fails: &failures{limit: e.o.MaxFailures}, rp: &plans.RunbookPlan{
			Name: rb.Name, Title: rb.Title, Section: rb.Section, Path: rb.Path,
			Source: string(rb.Source), SourceHash: rb.Hash, Params: params,
		}}
		if rb.HasScope(module.ScopeCluster) {
			r.rp.Targets = append(r.rp.Targets, e.planCluster(ctx, rb, params, cluster, k8sFacts))
		}
		if rb.HasScope(module.ScopeNode) {
			r.targets = make([]plans.TargetPlan, len(e.o.Hosts))
			onNodes = append(onNodes, r)
		}
		runs = append(runs, r)
	}
	return runs, onNodes, nil
}

// planNodes plans every node for the runs with node steps, at most --forks
// at once. then (may be nil) is called on each node once it is planned,
// still within its slot; also on a node whose planning panicked (its
// targets failed then).
func (e *Engine) planNodes(ctx context.Context, onNodes []*runbookRun, then func(i int)) {
	if len(onNodes) == 0 {
		return
	}
	cluster := e.clusterEnv(ctx)
	hosts := e.o.Hosts
	forEach(ctx, len(hosts), e.slots(), func(i int) {
		e.planHost(ctx, onNodes, cluster, hosts[i], i)
		if then != nil {
			then(i)
		}
	}, func(i int, v any) {
		for _, r := range onNodes {
			r.targets[i] = nodeTarget(hosts[i], plans.StatusFailed, fmt.Sprintf("internal error while planning: %v", v))
			r.fails.add()
		}
		if then != nil {
			then(i)
		}
	})
}

// collectRuns is the plan of each run: its cluster target, then its nodes.
func collectRuns(runs []*runbookRun) []plans.RunbookPlan {
	out := make([]plans.RunbookPlan, 0, len(runs))
	for _, r := range runs {
		r.rp.Targets = append(r.rp.Targets, r.targets...)
		out = append(out, *r.rp)
	}
	return out
}

// planHost plans one node for every runbook that has node steps: all their
// first-round probes (built-in facts once, each runbook's command facts and
// prepared steps' probes) go in one exec.
func (e *Engine) planHost(ctx context.Context, runs []*runbookRun, cluster *runbook.Cluster, h inventory.Host, i int) {
	works := make([]*nodeWork, len(runs))
	var pending []int
	for j, r := range runs {
		if ctx.Err() != nil {
			// Interrupted before this node was started: nothing was
			// read or run here (a dial would fail as "canceled").
			r.targets[i] = nodeTarget(h, plans.StatusNotRun, "not planned: interrupted")
			continue
		}
		if r.fails.exceeded() {
			r.targets[i] = nodeTarget(h, plans.StatusNotRun, "not planned: failure limit (--max-failures) reached")
			continue
		}
		works[j] = e.startNode(ctx, r.rb, r.params, cluster, r.k8sFacts, h)
		if !works[j].done {
			pending = append(pending, j)
		}
	}
	if len(pending) > 0 {
		ws := make([]*nodeWork, len(pending))
		for k, j := range pending {
			ws[k] = works[j]
		}
		e.gatherAndFinish(ctx, ws)
	}
	if e.o.ClosePlanned {
		e.release(h.Name)
	}
	for j, r := range runs {
		if works[j] == nil {
			continue
		}
		tp := works[j].tp
		r.targets[i] = tp
		if tp.Status == plans.StatusFailed || tp.Status == plans.StatusUnreachable {
			r.fails.add()
		}
		e.emit(Event{Type: EventTarget, Phase: "plan", Runbook: r.rb.Name, Target: h.Name, Status: string(tp.Status), Message: tp.Reason})
	}
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

// planNode plans one runbook on one node (a saved plan's target, re-derived).
func (e *Engine) planNode(ctx context.Context, rb *runbook.Runbook, params map[string]any, cluster *runbook.Cluster, k8sFacts map[string]any, h inventory.Host) plans.TargetPlan {
	w := e.startNode(ctx, rb, params, cluster, k8sFacts, h)
	if !w.done {
		e.gatherAndFinish(ctx, []*nodeWork{w})
	}
	return w.tp
}

// nodeWork is one runbook's planning on one node between its two halves:
// before the node's facts are read, and after.
type nodeWork struct {
	rb       *runbook.Runbook
	tp       plans.TargetPlan
	done     bool // tp is final (skipped, failed, unreachable)
	h        inventory.Host
	env      *runbook.Env
	t        module.Target
	node     *module.Node
	runner   module.Runner
	prepared []*preparedStep
	probes   []module.Probe // command facts and prepared steps' probes
}

func (w *nodeWork) finish(status plans.Status, reason string) *nodeWork {
	w.tp.Status, w.tp.Reason, w.done = status, reason, true
	return w
}

// startNode does everything before the node's facts are read: skip rules,
// connecting, and preparing the steps whose condition and parameters read
// only params, node and cluster (their probes join the facts' exec).
func (e *Engine) startNode(ctx context.Context, rb *runbook.Runbook, params map[string]any, cluster *runbook.Cluster, k8sFacts map[string]any, h inventory.Host) *nodeWork {
	w := &nodeWork{rb: rb, h: h, tp: nodeTarget(h, plans.StatusOK, "")}
	w.env = &runbook.Env{Params: params, Node: h.Facts, Cluster: cluster, Facts: maps.Clone(k8sFacts), Steps: map[string]any{}}
	if h.Problem != "" {
		return w.finish(plans.StatusFailed, h.Problem)
	}
	if reason, err := skipReason(rb, w.env.Map(), h, e.o.IncludeNotReady); err != nil {
		return w.finish(plans.StatusFailed, err.Error())
	} else if reason != "" {
		return w.finish(plans.StatusSkipped, reason)
	}
	runner, err := e.connect(ctx, h)
	if err != nil {
		return w.finish(plans.StatusUnreachable, err.Error())
	}
	w.runner = runner
	w.node = &module.Node{Name: h.Name, Address: h.Address, Facts: h.Facts, Runner: runner}
	w.t = e.target(rb, w.node)
	w.prepared = make([]*preparedStep, len(rb.Steps))
	planFacts, _ := rb.PlanReads()
	w.probes = gather.FactProbes(rb, w.env.Map(), planFacts)
	for i := range rb.Steps {
		s := &rb.Steps[i]
		if s.Scope() != module.ScopeNode || !static(s) {
			continue
		}
		ps, err := e.prepare(w.t, s, w.env.Map())
		if err != nil {
			w.tp = failTarget(w.tp, s, err)
			w.done = true
			return w
		}
		w.prepared[i] = ps
		w.probes = append(w.probes, ps.probes...)
	}
	return w
}

// gatherAndFinish reads the facts of every work (all on one node) in one
// exec, then plans each.
func (e *Engine) gatherAndFinish(ctx context.Context, ws []*nodeWork) {
	probes := append([]module.Probe{}, gather.BuiltinProbes...)
	for k, w := range ws {
		for _, p := range w.probes {
			p.Key = fmt.Sprintf("rb%d/%s", k, p.Key)
			probes = append(probes, p)
		}
	}
	all, err := gather.Run(ctx, ws[0].runner, probes)
	if err != nil {
		status := plans.StatusFailed
		if isTransport(err) {
			status = plans.StatusUnreachable
		}
		// gather's own errors already say "gathering facts"; one prefix.
		reason := err.Error()
		if !strings.HasPrefix(reason, "gathering facts") {
			reason = "gathering facts: " + reason
		}
		for _, w := range ws {
			w.finish(status, reason)
		}
		return
	}
	host := gather.HostFacts(all)
	results := make([]map[string]module.ProbeResult, len(ws))
	var followUps []module.Probe
	for k, w := range ws {
		results[k] = unprefixed(all, k)
		for _, p := range readNode(w, host, results[k]) {
			p.Key = fmt.Sprintf("rb%d/%s", k, p.Key)
			followUps = append(followUps, p)
		}
	}
	// Follow-up reads (facts whose condition is decided on the first read)
	// of every runbook, in one more exec; a node that needs none makes none.
	if len(followUps) > 0 {
		more, runErr := gather.Run(ctx, ws[0].runner, followUps)
		for k, w := range ws {
			if w.done {
				continue
			}
			err := runErr
			if err == nil {
				err = gather.ParseFacts(w.rb, unprefixed(more, k), w.env.Facts)
			}
			if err != nil {
				status := plans.StatusFailed
				if isTransport(err) {
					status = plans.StatusUnreachable
				}
				w.finish(status, fmt.Sprintf("gathering facts (follow-up read): %v", strings.TrimPrefix(err.Error(), "gathering facts: ")))
			}
		}
	}
	for k, w := range ws {
		if !w.done {
			e.finishNode(ctx, w, results[k])
		}
	}
}

// unprefixed is the results of the k-th runbook of a node's exec.
func unprefixed(all map[string]module.ProbeResult, k int) map[string]module.ProbeResult {
	prefix := fmt.Sprintf("rb%d/", k)
	results := map[string]module.ProbeResult{}
	for key, r := range all {
		if rest, ok := strings.CutPrefix(key, prefix); ok {
			results[rest] = r
		}
	}
	return results
}

// readNode takes in a node's first read: it checks the host's identity,
// parses the facts and returns the follow-up reads their conditions ask
// for. A failure finishes w.
func readNode(w *nodeWork, host map[string]any, results map[string]module.ProbeResult) []module.Probe {
	if why := gather.IdentityMismatch(w.h.Facts, host); why != "" {
		w.finish(plans.StatusFailed, why)
		return nil
	}
	if err := gather.ParseFacts(w.rb, results, w.env.Facts); err != nil {
		w.finish(plans.StatusFailed, fmt.Sprintf("gathering facts: %v", err))
		return nil
	}
	w.env.Host = host
	planFacts, _ := w.rb.PlanReads()
	probes, err := followUpProbes(w.rb, w.env, planFacts)
	if err != nil {
		w.finish(plans.StatusFailed, fmt.Sprintf("gathering facts: deciding the follow-up reads: %v", err))
		return nil
	}
	return probes
}

// followUpProbes are rb's follow-up reads (runbook.FollowUp) that env, the
// first read's facts and host, asks for; only narrows them as in
// gather.FactProbes.
func followUpProbes(rb *runbook.Runbook, env *runbook.Env, only map[string]bool) ([]module.Probe, error) {
	if rb.FollowUpVars() == nil {
		return nil, nil
	}
	if err := env.EvalVarsOnly(rb, rb.FollowUpVars()); err != nil {
		return nil, err
	}
	return gather.FollowUpProbes(rb, env.Map(), only), nil
}

// finishNode plans a node's steps once its facts are read.
func (e *Engine) finishNode(ctx context.Context, w *nodeWork, results map[string]module.ProbeResult) {
	rb, env, t := w.rb, w.env, w.t
	_, planVars := rb.PlanReads()
	if err := env.EvalVarsOnly(rb, planVars); err != nil {
		w.finish(plans.StatusFailed, err.Error())
		return
	}
	w.node.Facts = withHostFacts(w.h.Facts, env.Host)
	t.Node = w.node
	for i := range rb.Steps {
		s := &rb.Steps[i]
		if s.Scope() != module.ScopeNode {
			continue
		}
		ps := w.prepared[i]
		if ps == nil {
			var err error
			if ps, err = e.prepare(t, s, env.Map()); err != nil {
				w.tp = failTarget(w.tp, s, err)
				return
			}
			if len(ps.probes) > 0 {
				more, err := gather.Run(ctx, w.runner, ps.probes)
				if err != nil {
					w.tp = failTarget(w.tp, s, err)
					return
				}
				maps.Copy(results, more)
			}
		}
		sp, err := e.planStep(ctx, rb.Name, t, s, ps, results)
		if err != nil {
			w.tp = failTarget(w.tp, s, err)
			return
		}
		w.tp.Steps = append(w.tp.Steps, sp)
		env.Steps[s.ID] = registered(sp.Planned, sp.Action == module.Change)
	}
	w.tp.Status = targetStatus(w.tp.Steps)
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
		prober, ok := mod.(module.Prober)
		if !ok {
			return ps, nil
		}
		probes, err := prober.Probes(t, module.Step{ID: s.ID, Params: params})
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
	// Params travel in the plan under their yaml names (the runbook's).
	raw, err := module.ParamsToJSON(ps.params)
	if err != nil {
		return sp, fmt.Errorf("%s: %w", s.Module, err)
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

func (e *Engine) planCluster(ctx context.Context, rb *runbook.Runbook, params map[string]any, cluster *runbook.Cluster, k8sFacts map[string]any) plans.TargetPlan {
	tp := plans.TargetPlan{Kind: plans.TargetCluster, Name: "cluster", Status: plans.StatusOK}
	if e.o.Cluster == nil {
		tp.Status, tp.Reason = plans.StatusFailed, "runbook has cluster steps but no cluster is configured (--kubeconfig)"
		return tp
	}
	env := &runbook.Env{Params: params, Cluster: cluster, Facts: maps.Clone(k8sFacts), Steps: map[string]any{}}
	if err := env.EvalVars(rb); err != nil {
		tp.Status, tp.Reason = plans.StatusFailed, err.Error()
		return tp
	}
	t := e.target(rb, nil)
	stepsEnv := env.Steps
	for i := range rb.Steps {
		s := &rb.Steps[i]
		if s.Scope() != module.ScopeCluster {
			continue
		}
		ps, err := e.prepare(t, s, env.Map())
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
