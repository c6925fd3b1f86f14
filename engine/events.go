package engine

import "time"

// Event types, as written by --log-format json (one object per line).
const (
	EventRunStart = "run_start"
	EventTarget   = "host_result" // a target finished planning or applying
	EventChange   = "change"      // a step changed something
	EventFinding  = "finding"
	EventProgress = "progress" // a long step reports where it is
	EventRunEnd   = "run_end"
)

// Event is one progress/log record. Message is redacted before it leaves.
type Event struct {
	Time    time.Time `json:"time"`
	Type    string    `json:"type"`
	Phase   string    `json:"phase,omitempty"` // plan | apply | verify
	Runbook string    `json:"runbook,omitempty"`
	Target  string    `json:"target,omitempty"`
	Step    string    `json:"step,omitempty"`
	Module  string    `json:"module,omitempty"`
	Status  string    `json:"status,omitempty"`
	Message string    `json:"message,omitempty"`
}
