package views

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"nksrun/engine/module"
	"nksrun/engine/plans"
)

// A group is the targets of one runbook whose plan is the same once their
// own name and address are taken out: one diff for 187 nodes, one line for
// 800 nodes in sync, one error with the nodes that hit it.
type group struct {
	Status  plans.Status
	Reason  string
	Steps   []plans.StepPlan
	Targets []plans.TargetPlan
}

// Placeholders for a member's own name and address in a group's text.
const (
	nodePlaceholder    = "{node}"
	addressPlaceholder = "{address}"
)

// normalize replaces a node's own name and address in s, so that "dial tcp
// 10.0.0.13:22: no route" on three nodes is one error.
func normalize(t plans.TargetPlan, s string) string {
	if t.Kind != plans.TargetNode || s == "" {
		return s
	}
	if t.Address != "" {
		s = strings.ReplaceAll(s, t.Address, addressPlaceholder)
	}
	if t.Name != "" {
		s = strings.ReplaceAll(s, t.Name, nodePlaceholder)
	}
	return s
}

func normalizedSteps(t plans.TargetPlan) []plans.StepPlan {
	out := make([]plans.StepPlan, len(t.Steps))
	for i, s := range t.Steps {
		n := plans.StepPlan{ID: s.ID, Module: s.Module}
		n.Action = s.Action
		n.Summary, n.Reason, n.Diff = normalize(t, s.Summary), normalize(t, s.Reason), normalize(t, s.Diff)
		for _, f := range s.Findings {
			f.Title, f.Recommendation = normalize(t, f.Title), normalize(t, f.Recommendation)
			ev := make([]string, len(f.Evidence))
			for k, e := range f.Evidence {
				ev[k] = normalize(t, e)
			}
			f.Evidence = ev
			n.Findings = append(n.Findings, f)
		}
		out[i] = n
	}
	return out
}

// statusOrder puts what needs attention first.
var statusOrder = map[plans.Status]int{
	plans.StatusFailed: 0, plans.StatusUnreachable: 1, plans.StatusStale: 2, plans.StatusChanges: 3, plans.StatusChanged: 4,
	plans.StatusOK: 5, plans.StatusSkipped: 6, plans.StatusNotRun: 7,
}

// groupTargets groups rp's targets. A single member keeps its own text; a
// larger group shows the normalized text (with {node} and {address}).
func groupTargets(rp plans.RunbookPlan) []*group {
	byKey := map[string]*group{}
	var groups []*group
	for _, t := range sortedRunbookTargets(rp) {
		steps := normalizedSteps(t)
		reason := normalize(t, t.Reason)
		k, _ := json.Marshal(struct {
			K plans.Kind
			S plans.Status
			R string
			P []plans.StepPlan
		}{t.Kind, t.Status, reason, steps})
		g := byKey[string(k)]
		if g == nil || t.Kind == plans.TargetCluster {
			g = &group{Status: t.Status, Reason: reason, Steps: steps}
			byKey[string(k)] = g
			groups = append(groups, g)
		}
		g.Targets = append(g.Targets, t)
	}
	for _, g := range groups {
		if len(g.Targets) == 1 {
			t := g.Targets[0]
			g.Reason, g.Steps = trimRedundant(t.Reason, "node "+t.Name+" (", t.Status), t.Steps
		} else {
			g.Reason = trimRedundant(g.Reason, "node "+nodePlaceholder+" (", g.Status)
		}
	}
	sort.SliceStable(groups, func(i, j int) bool {
		a, b := groups[i], groups[j]
		ac, bc := a.Targets[0].Kind == plans.TargetCluster, b.Targets[0].Kind == plans.TargetCluster
		if ac != bc {
			return ac
		}
		if statusOrder[a.Status] != statusOrder[b.Status] {
			return statusOrder[a.Status] < statusOrder[b.Status]
		}
		return len(a.Targets) > len(b.Targets)
	})
	return groups
}

// names lists a group's targets, folded after limit names (0: all).
func names(ts []plans.TargetPlan, limit int) string {
	var b strings.Builder
	for i, t := range ts {
		if limit > 0 && i == limit && len(ts) > limit+1 {
			fmt.Fprintf(&b, " and %d more", len(ts)-limit)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(t.Name)
	}
	return b.String()
}

func plural(n int, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, one)
	}
	return fmt.Sprintf("%d %s", n, many)
}

// targetCounts counts a plan's targets by status.
func targetCounts(p *plans.Plan) (map[plans.Status]int, int) {
	by := map[plans.Status]int{}
	n := 0
	for _, rp := range p.Runbooks {
		for _, t := range rp.Targets {
			by[t.Status]++
			n++
		}
	}
	return by, n
}

// summary is the plan's last two lines: steps, then targets, so that a node
// count is never read as a step count.
func summary(p *plans.Plan) string {
	by, n := targetCounts(p)
	c := p.Counts()
	return fmt.Sprintf("Plan: %d to change, %d unknown until apply, %d unchanged, %d skipped, %s (steps on %s in %s).\nTargets: %d with changes, %d in sync, %d skipped, %d unreachable, %d failed.",
		c.Change, c.Unknown, c.NoOp, c.Skip, plural(c.Findings, "finding", "findings"),
		plural(n, "target", "targets"), plural(len(p.Runbooks), "runbook", "runbooks"),
		by[plans.StatusChanges], by[plans.StatusOK], by[plans.StatusSkipped]+by[plans.StatusNotRun], by[plans.StatusUnreachable], by[plans.StatusFailed])
}

// trimRedundant drops what the group's header already says from the front
// of an error: "node NAME (ADDR:PORT): " and the status ("unreachable: "),
// so a reason reads "unreachable: dial tcp …", not "unreachable: node x
// (…): unreachable: dial tcp …".
func trimRedundant(reason, nodePrefix string, status plans.Status) string {
	if strings.HasPrefix(reason, nodePrefix) {
		if i := strings.Index(reason, "): "); i > 0 {
			reason = reason[i+3:]
		}
	}
	return strings.TrimPrefix(reason, string(status)+": ")
}

// quiet reports whether a group is one line: node targets in sync or
// skipped whose steps are all no-ops or skips without findings. A finding
// or an unknown on an in-sync node is always shown.
func (g *group) quiet() bool {
	if g.Targets[0].Kind != plans.TargetNode || (g.Status != plans.StatusOK && g.Status != plans.StatusSkipped) {
		return false
	}
	for _, s := range g.Steps {
		if (s.Action != module.NoOp && s.Action != module.Skip) || len(s.Findings) > 0 {
			return false
		}
	}
	return true
}
