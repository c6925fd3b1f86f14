package engine

import (
	"context"
	"errors"
	"fmt"

	"nksrun/engine/module"
	"nksrun/engine/plans"
	"nksrun/engine/runbook"
)

// Streams reports whether PlanAndApply may run rbs: every runbook works on
// nodes only (a cluster step's change is ordered before its runbook's node
// changes, which one pass over the nodes would not keep), and there are more
// nodes than --forks. With no more nodes than that, every connection is
// open at once during the plan anyway, so planning all, then applying, costs
// no more memory; with more, keeping each node's connection from its plan to
// its change held all of them at once (1,000 nodes: 138–150 MB against
// about 80 MB for the plan alone).
func (e *Engine) Streams(rbs []*runbook.Runbook) bool {
	if len(rbs) == 0 {
		return false
	}
	for _, rb := range rbs {
		if rb.HasScope(module.ScopeCluster) || !rb.HasScope(module.ScopeNode) {
			return false
		}
	}
	forks := e.o.Forks
	if e.o.Gate != nil {
		forks = cap(e.o.Gate)
	}
	return len(e.o.Hosts) > forks
}

// PlanAndApply plans rbs and applies that plan in one pass over the nodes:
// each node is applied, verified and let go right after it is planned,
// within its --forks slot, so at most --forks connections are open at once
// however many nodes there are. It is for runs with no review between plan
// and apply (apply --auto-approve of runbooks, not of a saved plan): a node
// is changed exactly as its plan says, but before later nodes are planned.
// On each node the runbooks apply in their order, as Apply does; across
// nodes, runbook B may reach one node before runbook A has reached another.
// --max-failures counts as in Plan and Apply (per runbook, planning and
// applying apart). Only for runbooks Streams accepts.
func (e *Engine) PlanAndApply(ctx context.Context, rbs []*runbook.Runbook, set map[string]string) (*plans.Plan, *plans.Report, error) {
	if !e.Streams(rbs) {
		return nil, nil, errors.New("internal error: PlanAndApply on runbooks with cluster steps or on no more nodes than --forks")
	}
	if err := checkSets(rbs, set); err != nil {
		return nil, nil, err
	}
	p := &plans.Plan{FormatVersion: plans.FormatVersion, Tool: e.o.Version, CreatedAt: e.o.Now().UTC()}
	var rep *plans.Report
	var err error
	e.emit(Event{Type: EventPhaseStart, Phase: "plan", Message: fmt.Sprintf("plan: %d runbook(s), %d node(s); each node is applied once planned", len(rbs), len(e.o.Hosts))})
	e.withPlanTime(p.CreatedAt, func() { p.Runbooks, rep, err = e.planAndApply(ctx, rbs, set) })
	if err != nil {
		return nil, nil, err
	}
	return p, rep, nil
}

func (e *Engine) planAndApply(ctx context.Context, rbs []*runbook.Runbook, set map[string]string) ([]plans.RunbookPlan, *plans.Report, error) {
	runs, onNodes, err := e.startRunbooks(ctx, rbs, set)
	if err != nil {
		return nil, nil, err
	}
	applies := make([]*runbookApply, len(onNodes))
	for k, r := range onNodes {
		applies[k] = e.newRunbookApply(ctx, r.rp, r.rb, len(e.o.Hosts))
	}
	rep := &plans.Report{Started: e.o.Now().UTC()}
	e.emit(Event{Type: EventPhaseStart, Phase: "apply", Message: fmt.Sprintf("apply: %d runbook(s), each node once planned", len(rbs))})
	applyHost := func(i int) {
		defer e.release(e.o.Hosts[i].Name)
		for k, r := range onNodes {
			tp := &r.targets[i]
			func() {
				// A panic here must not reach planNodes, which would take
				// it for the plan's.
				defer func() {
					if v := recover(); v != nil {
						applies[k].panicked(i, tp, v)
					}
				}()
				e.applyOne(ctx, applies[k], i, tp, nil)
			}()
		}
	}
	// A node whose planning panicked reaches applyHost too: its targets
	// failed at plan time, and apply reports that (without connecting).
	e.planNodes(ctx, onNodes, applyHost)
	for _, ra := range applies {
		rep.Targets = append(rep.Targets, ra.results...)
	}
	rep.Finished = e.o.Now().UTC()
	return collectRuns(runs), rep, nil
}
