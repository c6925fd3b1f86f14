package engine

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"nksrun/engine/gather"
	"nksrun/engine/module"
	"nksrun/engine/plans"
	"nksrun/engine/runbook"
)

// StaleTarget is a target whose saved plan no longer holds: what the plan
// saw (a fingerprint: file hash, resourceVersion, boot id) has changed.
type StaleTarget struct {
	Runbook string
	Kind    plans.Kind
	Name    string
	Address string
	Reason  string
}

// Recheck re-reads, for every target of a saved plan that has something to
// apply, the facts its changes were computed from (the same probes as
// planning, nothing is changed) and returns the targets whose fingerprints
// differ from the plan's, or that could not be re-checked.
//
// `apply --on-stale stop` calls it first and applies nothing when any target
// is stale. Modules still re-check their own fingerprint right before they
// change anything (file_sync just before its atomic rename, Kubernetes
// modules with a resourceVersion precondition), which is what refuses a stale
// change with `--on-stale continue` and what covers a change made between
// Recheck and Apply.
func (e *Engine) Recheck(ctx context.Context, p *plans.Plan) ([]StaleTarget, error) {
	var mu sync.Mutex
	var out []StaleTarget
	e.emit(Event{Type: EventPhaseStart, Phase: "recheck", Message: "re-checking what the saved plan saw"})
	for i := range p.Runbooks {
		rp := &p.Runbooks[i]
		rb, err := runbook.Parse(rp.Path, []byte(rp.Source), e.o.Registry)
		if err != nil {
			return nil, fmt.Errorf("runbook %s in plan: %w", rp.Name, err)
		}
		if err := e.registerSecrets(rb, rp.Params); err != nil {
			return nil, fmt.Errorf("runbook %s in plan: %w", rp.Name, err)
		}
		var todo []*plans.TargetPlan
		for j := range rp.Targets {
			if pendingSteps(&rp.Targets[j]) {
				todo = append(todo, &rp.Targets[j])
			}
		}
		if len(todo) == 0 {
			continue
		}
		clusterEnv := e.clusterEnv(ctx)
		k8sFacts, err := gather.Kubernetes(ctx, e.o.Cluster, rb)
		if err != nil {
			return nil, fmt.Errorf("runbook %s: re-checking the plan: %w", rp.Name, err)
		}
		forEach(ctx, len(todo), e.o.Forks, func(j int) {
			tp := todo[j]
			var fresh plans.TargetPlan
			if tp.Kind == plans.TargetCluster {
				fresh = e.planCluster(ctx, rb, rp.Params, clusterEnv, k8sFacts)
			} else {
				fresh = e.planNode(ctx, rb, rp.Params, clusterEnv, k8sFacts, hostOf(tp, e.nodeFacts(tp.Name)))
			}
			reason := staleReason(tp, &fresh)
			if reason == "" {
				return
			}
			reason = e.o.Secrets.Redact(reason)
			mu.Lock()
			out = append(out, StaleTarget{Runbook: rp.Name, Kind: tp.Kind, Name: tp.Name, Address: tp.Address, Reason: reason})
			mu.Unlock()
			e.emit(Event{Type: EventTarget, Phase: "recheck", Runbook: rp.Name, Target: tp.Name, Status: string(plans.StatusStale), Message: reason})
		})
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("re-checking the plan: %w", context.Cause(ctx))
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Runbook != out[j].Runbook {
			return out[i].Runbook < out[j].Runbook
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

func pendingSteps(tp *plans.TargetPlan) bool {
	for _, s := range tp.Steps {
		if s.Action == module.Change || s.Action == module.Unknown {
			return true
		}
	}
	return false
}

// staleReason compares the fingerprints of a planned target's pending steps
// with a fresh plan of the same target; "" means the plan still holds.
func staleReason(saved, fresh *plans.TargetPlan) string {
	switch fresh.Status {
	case plans.StatusFailed, plans.StatusUnreachable, plans.StatusSkipped, plans.StatusNotRun:
		return fmt.Sprintf("could not re-check what the plan saw: %s: %s", fresh.Status, fresh.Reason)
	}
	byID := map[string]*plans.StepPlan{}
	for i := range fresh.Steps {
		byID[fresh.Steps[i].ID] = &fresh.Steps[i]
	}
	var why []string
	for _, s := range saved.Steps {
		if s.Action != module.Change && s.Action != module.Unknown {
			continue
		}
		f := byID[s.ID]
		if f == nil {
			why = append(why, fmt.Sprintf("step %s: not planned any more", s.ID))
			continue
		}
		keys := make([]string, 0, len(s.Fingerprint))
		for k := range s.Fingerprint {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if now := f.Fingerprint[k]; now != s.Fingerprint[k] {
				why = append(why, fmt.Sprintf("step %s: %s was %s at plan time, now %s", s.ID, k, shortFP(s.Fingerprint[k]), shortFP(now)))
			}
		}
	}
	if len(why) == 0 {
		return ""
	}
	return "changed since the plan: " + strings.Join(why, "; ")
}

func shortFP(v string) string {
	if v == "" {
		return "(none)"
	}
	if len(v) == 64 { // a sha256
		return v[:12]
	}
	return v
}

// StoppedReport is the report of an apply that changed nothing because some
// targets were stale (--on-stale stop): those are stale, the rest not run.
func StoppedReport(p *plans.Plan, stale []StaleTarget, now time.Time) *plans.Report {
	type key struct{ rb, name string }
	st := map[key]string{}
	for _, s := range stale {
		st[key{s.Runbook, s.Name}] = s.Reason
	}
	rep := &plans.Report{Started: now.UTC(), Finished: now.UTC()}
	for _, rp := range p.Runbooks {
		for _, tp := range rp.Targets {
			r := plans.TargetResult{Runbook: rp.Name, Kind: tp.Kind, Name: tp.Name, Address: tp.Address}
			switch reason, ok := st[key{rp.Name, tp.Name}]; {
			case ok:
				r.Status, r.Reason = plans.StatusStale, reason
			case !pendingSteps(&tp):
				r.Status, r.Reason = tp.Status, tp.Reason
				if r.Status == plans.StatusChanges {
					r.Status = plans.StatusOK
				}
			default:
				r.Status, r.Reason = plans.StatusNotRun, "not applied: another target is stale (--on-stale stop)"
			}
			rep.Targets = append(rep.Targets, r)
		}
	}
	return rep
}
