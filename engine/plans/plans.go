// Package plans holds a plan and an apply report as plain data: what a run
// saw and intends to do per target, and what it did. Views render them,
// planfile saves and reads them; nothing here talks to a node or the API.
package plans

import (
	"encoding/json"
	"sort"
	"time"

	"nksrun/engine/module"
)

// FormatVersion is the version of the saved-plan JSON schema. It changes
// whenever a field changes meaning; readers refuse versions they don't know.
const FormatVersion = 1

// Kind is what a target is.
type Kind string

// Target kinds.
const (
	TargetNode    Kind = "node"
	TargetCluster Kind = "cluster"
)

// Status is a target's outcome, in a plan and in an apply report.
type Status string

// Target statuses, in plan and in apply recaps.
const (
	StatusOK          Status = "ok"          // nothing to do / done, nothing changed
	StatusChanges     Status = "changes"     // plan: changes pending
	StatusChanged     Status = "changed"     // apply: changed
	StatusSkipped     Status = "skipped"     // skip rule or nothing applicable
	StatusUnreachable Status = "unreachable" // could not connect
	StatusFailed      Status = "failed"      // a step or verify check failed
	StatusStale       Status = "stale"       // apply of a saved plan: the node changed since
	StatusNotRun      Status = "not-run"     // apply: halted before this target
)

// Plan is the result of planning: plain data, rendered by several views and
// saved by planfile for `nksrun apply plan.json`.
type Plan struct {
	FormatVersion int           `json:"format_version"`
	Tool          string        `json:"nksrun_version"`
	CreatedAt     time.Time     `json:"created_at"`
	Runbooks      []RunbookPlan `json:"runbooks"`
	// Checksum is set by planfile when the plan is saved: the sha256 of the
	// document without this field. An edited plan file is refused.
	Checksum string `json:"checksum,omitempty"`
}

// RunbookPlan is one runbook's part of a plan.
type RunbookPlan struct {
	Name    string `json:"name"`
	Title   string `json:"title"`
	Section string `json:"section"`
	Path    string `json:"path"`
	// Source is the runbook YAML as planned; apply of a saved plan uses it
	// (steps, verify) instead of whatever the file says now.
	Source     string         `json:"source"`
	SourceHash string         `json:"source_hash"`
	Params     map[string]any `json:"params"`
	Targets    []TargetPlan   `json:"targets"`
}

// TargetPlan is the plan for one node or for the cluster.
type TargetPlan struct {
	Kind    Kind              `json:"kind"`
	Name    string            `json:"name"`
	Address string            `json:"address,omitempty"`
	User    string            `json:"user,omitempty"`
	Port    int               `json:"port,omitempty"`
	Labels  map[string]string `json:"labels,omitempty"`
	Status  Status            `json:"status"`
	Reason  string            `json:"reason,omitempty"`
	Steps   []StepPlan        `json:"steps,omitempty"`
}

// StepPlan is one step's plan on one target.
type StepPlan struct {
	ID     string          `json:"id"`
	Module string          `json:"module"`
	Params json.RawMessage `json:"params,omitempty"`
	module.Planned
}

// Counts summarises a plan.
type Counts struct {
	Change, NoOp, Skip, Unknown, Findings, Unreachable, Failed int
	// SkippedTargets are nodes skipped as a whole (skip rules, NotReady).
	SkippedTargets int
}

// Counts adds up actions and target failures.
func (p *Plan) Counts() Counts {
	var c Counts
	for _, rb := range p.Runbooks {
		for _, t := range rb.Targets {
			switch t.Status {
			case StatusUnreachable:
				c.Unreachable++
			case StatusFailed:
				c.Failed++
			case StatusSkipped:
				c.SkippedTargets++
			}
			for _, s := range t.Steps {
				switch s.Action {
				case module.Change:
					c.Change++
				case module.NoOp:
					c.NoOp++
				case module.Skip:
					c.Skip++
				case module.Unknown:
					c.Unknown++
				}
				c.Findings += len(s.Findings)
			}
		}
	}
	return c
}

// HasChanges reports whether applying would change anything.
func (p *Plan) HasChanges() bool {
	c := p.Counts()
	return c.Change > 0 || c.Unknown > 0
}

// HasErrors reports whether any target failed or was unreachable while planning.
func (p *Plan) HasErrors() bool {
	c := p.Counts()
	return c.Failed > 0 || c.Unreachable > 0
}

// Report is the outcome of an apply.
type Report struct {
	Started  time.Time      `json:"started"`
	Finished time.Time      `json:"finished"`
	Targets  []TargetResult `json:"targets"`
}

// TargetResult is what apply did on one target.
type TargetResult struct {
	Runbook string        `json:"runbook"`
	Kind    Kind          `json:"kind"`
	Name    string        `json:"name"`
	Address string        `json:"address,omitempty"`
	Status  Status        `json:"status"`
	Reason  string        `json:"reason,omitempty"`
	Steps   []StepResult  `json:"steps,omitempty"`
	Verify  []CheckResult `json:"verify,omitempty"`
}

// StepResult is one applied step.
type StepResult struct {
	ID       string               `json:"id"`
	Module   string               `json:"module"`
	Action   module.Action        `json:"action"`
	Changed  bool                 `json:"changed"`
	Summary  string               `json:"summary,omitempty"`
	Error    string               `json:"error,omitempty"`
	Findings []module.FindingInfo `json:"findings,omitempty"`
}

// CheckResult is one verify condition after apply.
type CheckResult struct {
	Message string `json:"message"`
	OK      bool   `json:"ok"`
	Error   string `json:"error,omitempty"`
}

// Failed reports whether any target failed, was unreachable, stale or not run.
func (r *Report) Failed() bool {
	for _, t := range r.Targets {
		switch t.Status {
		case StatusFailed, StatusUnreachable, StatusStale, StatusNotRun:
			return true
		}
	}
	return false
}

// SortTargets orders targets: cluster first, then nodes by name.
func SortTargets(ts []TargetPlan) {
	sort.SliceStable(ts, func(i, j int) bool {
		if ts[i].Kind != ts[j].Kind {
			return ts[i].Kind == TargetCluster
		}
		return ts[i].Name < ts[j].Name
	})
}
