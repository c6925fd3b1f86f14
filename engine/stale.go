package engine

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"nksrun/engine/gather"
	"nksrun/engine/module"
	"nksrun/engine/plans"
	"nksrun/engine/runbook"
	"nksrun/inventory"
)

// StaleTarget is a target whose saved plan no longer holds: what the plan
// saw (a fingerprint: file hash, resourceVersion, boot id) has changed.
type StaleTarget struct {
	Runbook string
	Kind    plans.Kind
	Name    string
	Address string
	Reason  string
	// AlreadyApplied: the facts moved on because the plan's changes are in
	// place already (the plan was applied before): nothing to do, not an
	// error. Apply reports the target ok, "already applied".
	AlreadyApplied bool
}

// Stale counts the targets that are stale (not already applied).
func Stale(ts []StaleTarget) int {
	n := 0
	for _, t := range ts {
		if !t.AlreadyApplied {
			n++
		}
	}
	return n
}

// ErrPlanTampered is returned (wrapped) by Rederive when a saved plan says
// something its own embedded runbook does not: a step's parameters,
// payload, summary or diff differ from what planning the same runbook over
// the same facts gives, a step sits on a target of the wrong kind, or the
// runbook's hash does not match its text. The whole plan is refused.
var ErrPlanTampered = errors.New("saved plan does not match its own runbook")

// Rederive checks a saved plan before anything of it is applied. Nothing in
// a plan file is trusted as an instruction: for every target that has
// something to apply, the runbook embedded in the plan is planned again
// (facts read for real, the same probes, nothing changed) and
//
//   - where the facts a step was computed from (its fingerprint: file hash,
//     resourceVersion, boot id) changed, the target is stale: it is
//     returned and must not be applied;
//   - where they did not, the fresh step must equal the saved one (module,
//     action, parameters, payload, summary, diff): any difference means the
//     file was edited, and the whole plan is refused with ErrPlanTampered
//     before anything is touched.
//
// A node is taken from the current inventory: a node that is gone, whose
// address changed, or whose host reports another identity is stale.
func (e *Engine) Rederive(ctx context.Context, p *plans.Plan) ([]StaleTarget, error) {
	var mu sync.Mutex
	var out []StaleTarget
	var tampered []string
	e.emit(Event{Type: EventPhaseStart, Phase: "recheck", Message: "re-deriving the saved plan from its runbooks"})
	for i := range p.Runbooks {
		rp := &p.Runbooks[i]
		rb, err := e.runbookOf(rp)
		if err != nil {
			return nil, err
		}
		var todo []*plans.TargetPlan
		for j := range rp.Targets {
			tp := &rp.Targets[j]
			if pendingSteps(tp) {
				todo = append(todo, tp)
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
		e.withPlanTime(p.CreatedAt, func() {
			forEach(ctx, len(todo), e.slots(), func(j int) {
				tp := todo[j]
				var fresh plans.TargetPlan
				reason := ""
				if tp.Kind == plans.TargetCluster {
					fresh = e.planCluster(ctx, rb, rp.Params, clusterEnv, k8sFacts)
				} else if h, why := e.currentHost(tp); why != "" {
					reason = why
				} else {
					fresh = e.planNode(ctx, rb, rp.Params, clusterEnv, k8sFacts, h)
				}
				var forged string
				applied := false
				if reason == "" {
					reason, forged, applied = compareTarget(tp, &fresh)
				}
				mu.Lock()
				defer mu.Unlock()
				if forged != "" {
					tampered = append(tampered, fmt.Sprintf("runbook %s, target %s: %s", rp.Name, tp.Name, forged))
					return
				}
				if reason == "" {
					return
				}
				reason = e.o.Secrets.Redact(reason)
				out = append(out, StaleTarget{Runbook: rp.Name, Kind: tp.Kind, Name: tp.Name, Address: tp.Address, Reason: reason, AlreadyApplied: applied})
				if !applied {
					e.emit(Event{Type: EventTarget, Phase: "recheck", Runbook: rp.Name, Target: tp.Name, Status: string(plans.StatusStale), Message: reason})
				}
			}, func(j int, v any) {
				mu.Lock()
				defer mu.Unlock()
				out = append(out, StaleTarget{Runbook: rp.Name, Kind: todo[j].Kind, Name: todo[j].Name, Address: todo[j].Address, Reason: fmt.Sprintf("could not re-check what the plan saw: internal error: %v", v)})
			})
		})
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("re-checking the plan: %w", context.Cause(ctx))
	}
	if len(tampered) > 0 {
		sort.Strings(tampered)
		return nil, fmt.Errorf("%w (nothing was applied): %s", ErrPlanTampered, e.o.Secrets.Redact(strings.Join(tampered, "; ")))
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Runbook != out[j].Runbook {
			return out[i].Runbook < out[j].Runbook
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

// ParsePlanRunbook parses the runbook a saved plan embeds, after checking
// that its text matches its hash, that it is the runbook the plan names, and
// that the plan's params are the runbook's params with values of their
// declared types. It is the one way a saved plan's runbooks are read.
func ParsePlanRunbook(rp *plans.RunbookPlan, reg module.Registry) (*runbook.Runbook, error) {
	sum := sha256.Sum256([]byte(rp.Source))
	if hex.EncodeToString(sum[:]) != rp.SourceHash {
		return nil, fmt.Errorf("%w: runbook %s: its text does not match its sha256", ErrPlanTampered, rp.Name)
	}
	rb, err := runbook.Parse(rp.Path, []byte(rp.Source), reg)
	if err != nil {
		return nil, fmt.Errorf("runbook %s in plan: %w", rp.Name, err)
	}
	if rb.Name != rp.Name {
		return nil, fmt.Errorf("%w: runbook named %s in the plan is %s in its text", ErrPlanTampered, rp.Name, rb.Name)
	}
	for name, v := range rp.Params {
		decl, ok := rb.Params[name]
		if !ok {
			return nil, fmt.Errorf("%w: runbook %s has no param %q", ErrPlanTampered, rp.Name, name)
		}
		if _, err := runbook.ConvertParam(decl.Type, v); err != nil {
			return nil, fmt.Errorf("%w: runbook %s, param %s: %v", ErrPlanTampered, rp.Name, name, err)
		}
	}
	for j := range rp.Targets {
		if err := checkShape(rb, &rp.Targets[j]); err != nil {
			return nil, fmt.Errorf("%w: runbook %s, target %s: %v", ErrPlanTampered, rp.Name, rp.Targets[j].Name, err)
		}
	}
	return rb, nil
}

// runbookOf is ParsePlanRunbook plus the runbook's secret params registered
// with the redactor.
func (e *Engine) runbookOf(rp *plans.RunbookPlan) (*runbook.Runbook, error) {
	rb, err := ParsePlanRunbook(rp, e.o.Registry)
	if err != nil {
		return nil, err
	}
	if err := e.registerSecrets(rb, rp.Params); err != nil {
		return nil, fmt.Errorf("runbook %s in plan: %w", rp.Name, err)
	}
	return rb, nil
}

// checkShape refuses a saved target whose steps the runbook cannot have
// produced there: an unknown kind, a step id the runbook does not have, a
// module other than the step's, a step on a target of the other scope.
func checkShape(rb *runbook.Runbook, tp *plans.TargetPlan) error {
	var scope module.Scope
	switch tp.Kind {
	case plans.TargetNode:
		scope = module.ScopeNode
	case plans.TargetCluster:
		scope = module.ScopeCluster
	default:
		return fmt.Errorf("unknown target kind %q", tp.Kind)
	}
	seen := map[string]bool{}
	for _, sp := range tp.Steps {
		s := rb.Step(sp.ID)
		switch {
		case s == nil:
			return fmt.Errorf("step %s is not in the runbook", sp.ID)
		case s.Module != sp.Module:
			return fmt.Errorf("step %s is a %s step in the runbook, %s in the plan", sp.ID, s.Module, sp.Module)
		case s.Scope() != scope:
			return fmt.Errorf("step %s (%s) runs on the %s, not on a %s", sp.ID, sp.Module, s.Scope(), tp.Kind)
		case seen[sp.ID]:
			return fmt.Errorf("step %s appears twice", sp.ID)
		}
		seen[sp.ID] = true
	}
	return nil
}

// currentHost is the inventory's host for a planned node. A saved plan is
// applied to the node as it is now: one that left the inventory or whose
// address changed is not applied to.
func (e *Engine) currentHost(tp *plans.TargetPlan) (inventory.Host, string) {
	for _, h := range e.o.Hosts {
		if h.Name != tp.Name {
			continue
		}
		if h.Address != tp.Address || h.Port != tp.Port {
			return h, fmt.Sprintf("address changed since the plan: was %s:%d, now %s:%d", tp.Address, tp.Port, h.Address, h.Port)
		}
		if h.User != tp.User {
			return h, fmt.Sprintf("login user changed since the plan: was %s, now %s", tp.User, h.User)
		}
		return h, ""
	}
	return inventory.Host{}, "node is not in the inventory any more (or not selected by --limit)"
}

// compareTarget compares a saved target's pending steps with a fresh plan
// of the same target. stale says why the facts moved on; forged says what
// the saved plan claims that its runbook does not produce over unchanged
// facts.
//
// applied reports that every pending step's facts moved on because its
// change is in place already (a fresh plan of it is a no-op): the plan was
// applied before, and applying it again does nothing.
func compareTarget(saved, fresh *plans.TargetPlan) (stale, forged string, applied bool) {
	switch fresh.Status {
	case plans.StatusFailed, plans.StatusUnreachable, plans.StatusSkipped, plans.StatusNotRun:
		return fmt.Sprintf("could not re-check what the plan saw: %s: %s", fresh.Status, fresh.Reason), "", false
	}
	byID := map[string]*plans.StepPlan{}
	for i := range fresh.Steps {
		byID[fresh.Steps[i].ID] = &fresh.Steps[i]
	}
	var why, lies []string
	pending, inPlace := 0, 0
	for _, s := range saved.Steps {
		if s.Action != module.Change && s.Action != module.Unknown {
			continue
		}
		pending++
		f := byID[s.ID]
		if f == nil {
			why = append(why, fmt.Sprintf("step %s: not planned any more", s.ID))
			continue
		}
		if moved := fingerprintDiff(s.Fingerprint, f.Fingerprint); moved != "" {
			if f.Action == module.NoOp {
				inPlace++
			}
			why = append(why, fmt.Sprintf("step %s: %s", s.ID, moved))
			continue
		}
		if field := stepDiff(&s, f); field != "" {
			lies = append(lies, fmt.Sprintf("step %s (%s): %s differs from what its runbook plans", s.ID, s.Module, field))
		}
	}
	if len(lies) > 0 {
		return "", strings.Join(lies, "; "), false
	}
	if len(why) == 0 {
		return "", "", false
	}
	if pending > 0 && inPlace == pending {
		return "already applied: the planned changes are in place", "", true
	}
	return "changed since the plan: " + strings.Join(why, "; "), "", false
}

func fingerprintDiff(saved, fresh map[string]string) string {
	keys := map[string]bool{}
	for k := range saved {
		keys[k] = true
	}
	for k := range fresh {
		keys[k] = true
	}
	sorted := make([]string, 0, len(keys))
	for k := range keys {
		sorted = append(sorted, k)
	}
	sort.Strings(sorted)
	var why []string
	for _, k := range sorted {
		if saved[k] != fresh[k] {
			why = append(why, fmt.Sprintf("%s was %s at plan time, now %s", k, shortFP(saved[k]), shortFP(fresh[k])))
		}
	}
	return strings.Join(why, ", ")
}

// stepDiff names the first field in which a saved step differs from the
// fresh one ("" when they are the same).
func stepDiff(saved, fresh *plans.StepPlan) string {
	switch {
	case saved.Module != fresh.Module:
		return "module"
	case saved.Action != fresh.Action:
		return "action"
	case !sameJSON(saved.Params, fresh.Params):
		return "params"
	case !sameJSON(saved.Data, fresh.Data):
		return "payload"
	case saved.Summary != fresh.Summary:
		return "summary"
	case saved.Diff != fresh.Diff:
		return "diff"
	case saved.Reason != fresh.Reason:
		return "reason"
	}
	return ""
}

// sameJSON compares two JSON documents by value (key order and spacing
// aside; numbers as written).
func sameJSON(a, b json.RawMessage) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(bytes.TrimSpace(a)) == len(bytes.TrimSpace(b))
	}
	norm := func(m json.RawMessage) ([]byte, bool) {
		dec := json.NewDecoder(bytes.NewReader(m))
		dec.UseNumber()
		var v any
		if dec.Decode(&v) != nil {
			return nil, false
		}
		out, err := json.Marshal(v)
		return out, err == nil
	}
	na, ok1 := norm(a)
	nb, ok2 := norm(b)
	return ok1 && ok2 && bytes.Equal(na, nb)
}

func pendingSteps(tp *plans.TargetPlan) bool {
	for _, s := range tp.Steps {
		if s.Action == module.Change || s.Action == module.Unknown {
			return true
		}
	}
	return false
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
			case ok && strings.HasPrefix(reason, "already applied"):
				r.Status, r.Reason = plans.StatusOK, reason
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
