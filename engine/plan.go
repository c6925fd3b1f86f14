package engine

import (
	"bytes"
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

// computeChecksum hashes the plan as it is (or will be) written: the JSON
// document with the "checksum" member removed, normalised (objects with
// sorted keys, numbers as written, no insignificant whitespace). It works on
// the generic document rather than on the Go struct, so a field the struct
// does not know (added by hand) or a number that would not survive a
// round trip through Go types still changes the sum.
func (p *Plan) computeChecksum() (string, error) {
	c := *p
	c.Checksum = ""
	b, err := json.Marshal(&c)
	if err != nil {
		return "", err
	}
	return documentChecksum(b)
}

// documentChecksum is the checksum of a plan document given as JSON bytes.
func documentChecksum(doc []byte) (string, error) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var v map[string]any
	if err := dec.Decode(&v); err != nil {
		return "", err
	}
	delete(v, "checksum")
	norm, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(norm)
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

// ReadPlan decodes a saved plan and checks, in this order, that it is a
// plan, that its format version is one this nksrun reads, that it was not
// edited (checksum over the document as written), and that it is not older
// than maxAge (0 = no limit) or dated in the future beyond a small clock skew.
func ReadPlan(data []byte, maxAge time.Duration, now time.Time) (*Plan, error) {
	var head struct {
		FormatVersion *int   `json:"format_version"`
		Checksum      string `json:"checksum"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, fmt.Errorf("reading plan: not a plan file: %w", err)
	}
	if head.FormatVersion == nil {
		return nil, errors.New("reading plan: not a plan file (no format_version)")
	}
	if *head.FormatVersion != PlanFormatVersion {
		return nil, fmt.Errorf("plan format version %d is not supported (this nksrun reads %d)", *head.FormatVersion, PlanFormatVersion)
	}
	if head.Checksum == "" {
		return nil, fmt.Errorf("%w: no checksum (not written by nksrun plan -o)", ErrPlanEdited)
	}
	sum, err := documentChecksum(data)
	if err != nil {
		return nil, fmt.Errorf("reading plan: %w", err)
	}
	if sum != head.Checksum {
		return nil, ErrPlanEdited
	}
	var p Plan
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("reading plan: %w", err)
	}
	age := now.Sub(p.CreatedAt)
	if age < -maxClockSkew {
		return nil, fmt.Errorf("%w: created %s in the future (clock skew?)", ErrPlanExpired, (-age).Round(time.Second))
	}
	if maxAge > 0 && age > maxAge {
		return nil, fmt.Errorf("%w: created %s ago (limit %s, --max-plan-age)", ErrPlanExpired, age.Round(time.Second), maxAge)
	}
	return &p, nil
}

// maxClockSkew is how far in the future a plan's created_at may be (plans
// made on another machine).
const maxClockSkew = 5 * time.Minute
