package engine

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"nksrun/engine/module"
)

// PlanFormatVersion is the version of the saved-plan JSON schema. It changes
// whenever a field changes meaning; readers refuse versions they don't know.
const PlanFormatVersion = 1

// Target kinds.
const (
	TargetNode    = "node"
	TargetCluster = "cluster"
)

// Target statuses, in plan and in apply recaps.
const (
	StatusOK          = "ok"          // nothing to do / done, nothing changed
	StatusChanges     = "changes"     // plan: changes pending
	StatusChanged     = "changed"     // apply: changed
	StatusSkipped     = "skipped"     // skip rule or nothing applicable
	StatusUnreachable = "unreachable" // could not connect
	StatusFailed      = "failed"      // a step or verify check failed
	StatusStale       = "stale"       // apply of a saved plan: the node changed since
	StatusNotRun      = "not-run"     // apply: halted before this target
)

// Plan is the result of planning: plain data, rendered by several views and
// saved with -o for `nksrun apply plan.json`.
type Plan struct {
	FormatVersion int           `json:"format_version"`
	Tool          string        `json:"nksrun_version"`
	CreatedAt     time.Time     `json:"created_at"`
	Runbooks      []RunbookPlan `json:"runbooks"`
	// Checksum is the sha256 of the plan with this field empty: an edited
	// plan file is refused.
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
	Kind    string            `json:"kind"` // node | cluster
	Name    string            `json:"name"`
	Address string            `json:"address,omitempty"`
	User    string            `json:"user,omitempty"`
	Port    int               `json:"port,omitempty"`
	Labels  map[string]string `json:"labels,omitempty"`
	Status  string            `json:"status"`
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

func (p *Plan) computeChecksum() (string, error) {
	c := *p
	c.Checksum = ""
	b, err := json.Marshal(&c)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// Seal sets the checksum; call it last, before saving.
func (p *Plan) Seal() error {
	sum, err := p.computeChecksum()
	p.Checksum = sum
	return err
}

// Errors returned by ReadPlan.
var (
	ErrPlanEdited  = errors.New("plan file was edited after it was written (checksum mismatch)")
	ErrPlanExpired = errors.New("plan is too old")
)

// ReadPlan decodes a saved plan and checks its version, checksum and age
// (maxAge 0 = no limit).
func ReadPlan(data []byte, maxAge time.Duration, now time.Time) (*Plan, error) {
	var p Plan
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("reading plan: %w", err)
	}
	if p.FormatVersion != PlanFormatVersion {
		return nil, fmt.Errorf("plan format version %d is not supported (this nksrun reads %d)", p.FormatVersion, PlanFormatVersion)
	}
	sum, err := p.computeChecksum()
	if err != nil {
		return nil, err
	}
	if sum != p.Checksum {
		return nil, ErrPlanEdited
	}
	if maxAge > 0 && now.Sub(p.CreatedAt) > maxAge {
		return nil, fmt.Errorf("%w: created %s ago (limit %s, --max-plan-age)", ErrPlanExpired, now.Sub(p.CreatedAt).Round(time.Second), maxAge)
	}
	return &p, nil
}
