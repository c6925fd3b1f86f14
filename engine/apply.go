package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"

	"nksrun/engine/gather"
	"nksrun/engine/module"
	"nksrun/engine/plans"
	"nksrun/engine/runbook"
	"nksrun/inventory"
)

// Apply performs exactly what p says. Runbooks are re-read from the plan
// itself (not from disk), so a saved plan applies what was reviewed; a saved
// plan must have passed Rederive first, and the targets it found stale are
// passed here and not applied.
func (e *Engine) Apply(ctx context.Context, p *plans.Plan, stale []StaleTarget) (*plans.Report, error) {
	type key struct{ rb, name string }
	staleReason, appliedReason := map[key]string{}, map[key]string{}
	for _, s := range stale {
		if s.AlreadyApplied {
			appliedReason[key{s.Runbook, s.Name}] = s.Reason
		} else {
			staleReason[key{s.Runbook, s.Name}] = s.Reason
		}
	}
	// A node's connection goes once its last runbook is done with it: the
	// close (a root shell's exit, sshd's teardown) then overlaps the other
	// nodes' work instead of piling up at the end of the run.
	lastUse := map[string]int{}
	for i := range p.Runbooks {
		for _, tp := range p.Runbooks[i].Targets {
			if tp.Kind == plans.TargetNode {
				lastUse[tp.Name] = i
			}
		}
	}
	rep := &plans.Report{Started: e.o.Now().UTC()}
	e.emit(Event{Type: EventPhaseStart, Phase: "apply", Message: fmt.Sprintf("apply: %d runbook(s)", len(p.Runbooks))})
	for i := range p.Runbooks {
		rp := &p.Runbooks[i]
		rb, err := e.runbookOf(rp)
		if err != nil {
			return nil, err
		}
		ra := e.newRunbookApply(ctx, rp, rb, len(rp.Targets))
		// A target a re-check of a saved plan decided is not applied.
		decided := func(tp *plans.TargetPlan) (plans.TargetResult, bool) {
			if why, ok := appliedReason[key{rp.Name, tp.Name}]; ok {
				return plans.TargetResult{Runbook: rp.Name, Kind: tp.Kind, Name: tp.Name, Address: tp.Address, Status: plans.StatusOK, Reason: why}, true
			}
			if why, ok := staleReason[key{rp.Name, tp.Name}]; ok {
				return plans.TargetResult{Runbook: rp.Name, Kind: tp.Kind, Name: tp.Name, Address: tp.Address, Status: plans.StatusStale, Reason: why}, true
			}
			return plans.TargetResult{}, false
		}
		forEach(ctx, len(rp.Targets), e.slots(), func(j int) {
			tp := &rp.Targets[j]
			if tp.Kind == plans.TargetNode && lastUse[tp.Name] == i {
				defer e.release(tp.Name)
			}
			e.applyOne(ctx, ra, j, tp, decided)
		}, func(j int, v any) { ra.panicked(j, &rp.Targets[j], v) })
		rep.Targets = append(rep.Targets, ra.results...)
	}
	rep.Finished = e.o.Now().UTC()
	return rep, nil
}

// runbookApply is one runbook's apply: its results by target index and its
// failures, which --max-failures counts per runbook.
type runbookApply struct {
	rp      *plans.RunbookPlan
	rb      *runbook.Runbook
	results []plans.TargetResult
	fails   *failures
	// Kubernetes facts for verify are listed once per runbook (by the
	// first target to verify), never once per node.
	k8sFacts func() (map[string]any, error)
}

func (e *Engine) newRunbookApply(ctx context.Context, rp *plans.RunbookPlan, rb *runbook.Runbook, targets int) *runbookApply {
	return &runbookApply{
		rp: rp, rb: rb,
		results:  make([]plans.TargetResult, targets),
		fails:    &failures{limit: e.o.MaxFailures},
		k8sFacts: sync.OnceValues(func() (map[string]any, error) { return gather.Kubernetes(ctx, e.o.Cluster, rb) }),
	}
}

// applyOne applies target tp, result j of ra, unless the failure limit is
// reached or decided (may be nil) already has its result.
func (e *Engine) applyOne(ctx context.Context, ra *runbookApply, j int, tp *plans.TargetPlan, decided func(*plans.TargetPlan) (plans.TargetResult, bool)) {
	rp := ra.rp
	if ra.fails.exceeded() {
		ra.results[j] = plans.TargetResult{Runbook: rp.Name, Kind: tp.Kind, Name: tp.Name, Address: tp.Address, Status: plans.StatusNotRun, Reason: "not applied: failure limit (--max-failures) reached"}
		return
	}
	if decided != nil {
		if r, ok := decided(tp); ok {
			ra.results[j] = r
			if r.Status == plans.StatusStale {
				ra.fails.add()
			}
			return
		}
	}
	r := e.applyTarget(ctx, ra.rb, rp, tp, ra.k8sFacts)
	ra.results[j] = r
	switch r.Status {
	case plans.StatusFailed, plans.StatusUnreachable, plans.StatusStale:
		ra.fails.add()
	}
	e.emit(Event{Type: EventTarget, Phase: "apply", Runbook: rp.Name, Target: tp.Name, Status: string(r.Status), Message: r.Reason})
}

// panicked fails target j of ra after a panic while applying it: that
// target only, never the run or the other targets.
func (ra *runbookApply) panicked(j int, tp *plans.TargetPlan, v any) {
	ra.results[j] = plans.TargetResult{Runbook: ra.rp.Name, Kind: tp.Kind, Name: tp.Name, Address: tp.Address, Status: plans.StatusFailed, Reason: fmt.Sprintf("internal error (nothing further done on this target): %v", v)}
	ra.fails.add()
}

func hostOf(tp *plans.TargetPlan, facts map[string]any) inventory.Host {
	return inventory.Host{Name: tp.Name, Address: tp.Address, User: tp.User, Port: tp.Port, Labels: tp.Labels, Facts: facts}
}

// nodeFacts finds the inventory facts of a planned node (a saved plan may be
// applied with a fresh inventory; the planned address/user still win).
func (e *Engine) nodeFacts(name string) map[string]any {
	for _, h := range e.o.Hosts {
		if h.Name == name {
			return h.Facts
		}
	}
	return map[string]any{"name": name}
}

func (e *Engine) applyTarget(ctx context.Context, rb *runbook.Runbook, rp *plans.RunbookPlan, tp *plans.TargetPlan, k8sFacts func() (map[string]any, error)) plans.TargetResult {
	res := plans.TargetResult{Runbook: rp.Name, Kind: tp.Kind, Name: tp.Name, Address: tp.Address, Status: plans.StatusOK}
	switch tp.Status {
	case plans.StatusSkipped, plans.StatusNotRun:
		res.Status, res.Reason = tp.Status, tp.Reason
		return res
	case plans.StatusFailed, plans.StatusUnreachable:
		res.Status, res.Reason = tp.Status, "at plan time: "+tp.Reason
		return res
	}
	var node *module.Node
	if tp.Kind == plans.TargetNode {
		h := hostOf(tp, e.nodeFacts(tp.Name))
		runner, err := e.connect(ctx, h)
		if err != nil {
			res.Status, res.Reason = plans.StatusUnreachable, err.Error()
			return res
		}
		node = &module.Node{Name: tp.Name, Address: tp.Address, Facts: h.Facts, Runner: runner}
	} else if e.o.Cluster == nil {
		res.Status, res.Reason = plans.StatusFailed, "no cluster configured (--kubeconfig)"
		return res
	}
	t := e.target(rb, node)
	var nodeFacts map[string]any
	if node != nil {
		nodeFacts = node.Facts
	}
	checks, vprobes := verifyPlan(rb, tp, (&runbook.Env{Params: rp.Params, Node: nodeFacts, Cluster: e.clusterEnv(ctx)}).Map())
	lastChange := -1
	for i, sp := range tp.Steps {
		if sp.Action == module.Change || sp.Action == module.Unknown {
			lastChange = i
		}
	}
	var rider *verifyRider
	if node != nil && len(vprobes) > 0 && lastChange >= 0 {
		rider = &verifyRider{Runner: node.Runner, probes: vprobes}
	}
	stepsEnv := map[string]any{}
	for i, sp := range tp.Steps {
		sr := plans.StepResult{ID: sp.ID, Module: sp.Module, Action: sp.Action, Summary: sp.Summary, Findings: sp.Findings}
		if sp.Action != module.Change && sp.Action != module.Unknown {
			res.Steps = append(res.Steps, sr)
			stepsEnv[sp.ID] = registered(sp.Planned, false)
			continue
		}
		st := t
		if rider != nil && i == lastChange {
			n := *t.Node
			n.Runner = rider
			st.Node = &n
		}
		applied, err := e.applyStep(ctx, st, sp)
		if err != nil {
			sr.Error = e.o.Secrets.Redact(err.Error())
			res.Steps = append(res.Steps, sr)
			res.Status = plans.StatusFailed
			switch {
			case errors.Is(err, module.ErrStale), errors.Is(err, module.ErrConflict):
				res.Status = plans.StatusStale
			case isTransport(err):
				res.Status = plans.StatusUnreachable
			}
			res.Reason = fmt.Sprintf("step %s (%s): %s", sp.ID, sp.Module, sr.Error)
			return res
		}
		sr.Changed = applied.Changed
		if applied.Summary != "" {
			sr.Summary = applied.Summary
		}
		if applied.Changed {
			res.Status = plans.StatusChanged
			e.emit(Event{Type: EventChange, Phase: "apply", Runbook: rp.Name, Target: tp.Name, Step: sp.ID, Module: sp.Module, Message: sr.Summary})
		}
		res.Steps = append(res.Steps, sr)
		r := registered(sp.Planned, applied.Changed)
		maps.Copy(r, applied.Outputs)
		stepsEnv[sp.ID] = r
	}
	var rode map[string]module.ProbeResult
	if rider != nil {
		rode = rider.taken()
	}
	e.verify(ctx, rb, rp, checks, vprobes, rode, t, stepsEnv, k8sFacts, &res)
	return res
}

func (e *Engine) applyStep(ctx context.Context, t module.Target, sp plans.StepPlan) (module.Applied, error) {
	mod, err := e.instance(sp.Module)
	if err != nil {
		return module.Applied{}, err
	}
	params := mod.NewParams()
	if len(sp.Params) > 0 {
		// Strict: a key this module does not have (a plan from an
		// nksrun whose parameter names differ) is refused, not dropped.
		if err := module.ParamsFromJSON(sp.Params, params); err != nil {
			return module.Applied{}, fmt.Errorf("params in plan: %w", err)
		}
	}
	return mod.Apply(ctx, t, module.Step{ID: sp.ID, Params: params}, sp.Planned)
}

// verifyPlan selects the verify checks of a target's scope and the node
// probes they need: host.* only if a check names host, command facts only if
// a check names facts; none at all for checks on params and steps.
func verifyPlan(rb *runbook.Runbook, tp *plans.TargetPlan, env map[string]any) ([]*runbook.Check, []module.Probe) {
	var checks []*runbook.Check
	uses := map[string]bool{}
	for i := range rb.Verify {
		c := &rb.Verify[i]
		on := plans.Kind(c.On)
		if on == "" {
			on = plans.TargetNode
			if !rb.HasScope(module.ScopeNode) {
				on = plans.TargetCluster
			}
		}
		if on == tp.Kind {
			checks = append(checks, c)
			maps.Copy(uses, c.That.Uses)
		}
	}
	if uses[runbook.EnvVars] {
		for _, v := range rb.Vars {
			maps.Copy(uses, v.Expr.Uses)
		}
	}
	var probes []module.Probe
	if tp.Kind == plans.TargetNode && len(checks) > 0 {
		// A follow-up read's condition may read host.*: the first read
		// then carries it (shell builtins only, no process on the node).
		if uses[runbook.EnvHost] || (uses[runbook.EnvFacts] && rb.FollowUpVars() != nil) {
			probes = append(probes, gather.BuiltinProbes...)
		}
		if uses[runbook.EnvFacts] {
			probes = append(probes, gather.FactProbes(rb, env, nil)...)
		}
	}
	return checks, probes
}

// readFollowUps reads, in one more exec, the follow-up facts whose
// condition holds on env's first read (none: no exec).
func readFollowUps(ctx context.Context, r module.Runner, rb *runbook.Runbook, env *runbook.Env) error {
	probes, err := followUpProbes(rb, env, nil)
	if err != nil || len(probes) == 0 {
		return err
	}
	more, err := gather.Run(ctx, r, probes)
	if err != nil {
		return err
	}
	return gather.ParseFacts(rb, more, env.Facts)
}

// verify evaluates the runbook's verify conditions for this target on freshly
// read facts: those that rode on the last change's command (rode), or one
// read of its own.
func (e *Engine) verify(ctx context.Context, rb *runbook.Runbook, rp *plans.RunbookPlan, checks []*runbook.Check, probes []module.Probe, rode map[string]module.ProbeResult, t module.Target, stepsEnv map[string]any, k8sFacts func() (map[string]any, error), res *plans.TargetResult) {
	if len(checks) == 0 {
		return
	}
	shared, err := k8sFacts()
	if err != nil {
		res.Status, res.Reason = plans.StatusFailed, "verify: "+err.Error()
		return
	}
	facts := maps.Clone(shared)
	env := &runbook.Env{Params: rp.Params, Cluster: e.clusterEnv(ctx), Facts: facts, Steps: stepsEnv}
	if t.Node != nil {
		env.Node = t.Node.Facts
		results, err := rode, error(nil)
		if results == nil {
			results, err = gather.Run(ctx, t.Node.Runner, probes)
		}
		if err == nil {
			err = gather.ParseFacts(rb, results, facts)
		}
		if err == nil {
			if _, ok := results[gather.BuiltinProbes[0].Key]; ok {
				env.Host = gather.HostFacts(results)
			}
			err = readFollowUps(ctx, t.Node.Runner, rb, env)
		}
		if err != nil {
			res.Status, res.Reason = plans.StatusFailed, "verify: gathering facts: "+strings.TrimPrefix(err.Error(), "gathering facts: ")
			return
		}
	}
	// Vars are derived from facts: computed again from the fresh ones.
	if err := env.EvalVars(rb); err != nil {
		res.Status, res.Reason = plans.StatusFailed, "verify: "+err.Error()
		return
	}
	m := env.Map()
	for _, c := range checks {
		ok, err := c.That.EvalBool(m)
		cr := plans.CheckResult{Message: c.Message, OK: ok && err == nil}
		if err != nil {
			cr.Error = e.o.Secrets.Redact(err.Error())
		}
		res.Verify = append(res.Verify, cr)
		if !cr.OK {
			res.Status = plans.StatusFailed
			res.Reason = "verify failed: " + c.Message
		}
	}
}

// verifyRider lets a node's verify reads ride on the last changing step's
// commands instead of costing an exec of their own (at 200 nodes that exec
// was a third of apply's time on the nodes). Each sudo command of that step
// runs in a subshell followed by the verify probes; the module sees its own
// output and exit code unchanged, and the probe output is what verify uses
// if that command was the step's last. When it is missing (the step's last
// command did not use sudo, it failed, the connection dropped, the node was
// reconnected), verify reads on its own.
type verifyRider struct {
	module.Runner
	probes  []module.Probe
	mu      sync.Mutex
	results map[string]module.ProbeResult
}

func (v *verifyRider) Run(ctx context.Context, command string, opts module.RunOpts) (module.RunResult, error) {
	if !opts.Sudo {
		// Probes need root; a command that cannot carry them makes any
		// earlier reading stale (it may have changed the node).
		v.forget()
		return v.Runner.Run(ctx, command, opts)
	}
	script, boundary := gather.Script(v.probes)
	res, err := v.Runner.Run(ctx, "(\n"+command+"\n)\nnksrun_rc=$?\n"+script+"exit $nksrun_rc\n", opts)
	v.mu.Lock()
	defer v.mu.Unlock()
	v.results = nil
	if err != nil {
		return res, err
	}
	if i := bytes.Index(res.Stdout, []byte(boundary+" 0\n")); i >= 0 {
		if results, perr := gather.ParseOutput(res.Stdout[i:], boundary, v.probes); perr == nil {
			v.results = results
		}
		res.Stdout = res.Stdout[:i]
	}
	return res, nil
}

func (v *verifyRider) forget() {
	v.mu.Lock()
	v.results = nil
	v.mu.Unlock()
}

// Reconnect passes through, so modules that wait for a node (reboot) keep
// working with the rider in between. Readings from before are stale.
func (v *verifyRider) Reconnect(ctx context.Context) error {
	v.forget()
	r, ok := v.Runner.(module.Reconnector)
	if !ok {
		return errors.New("this connection cannot reconnect")
	}
	return r.Reconnect(ctx)
}

func (v *verifyRider) taken() map[string]module.ProbeResult {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.results
}
