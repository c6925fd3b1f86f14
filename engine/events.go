package engine

import "time"

// EventSchemaVersion is the "v" of every JSON log line. It changes when a
// field changes meaning or is removed; new optional fields do not change it.
const EventSchemaVersion = 1

// Event types, as written by --log-format json (one object per line). A run
// writes exactly one run_start (first line) and one run_end (last line);
// the engine's events come in between.
const (
	EventRunStart   = "run_start"
	EventPhaseStart = "phase_start" // plan, recheck or apply begins (engine)
	EventTarget     = "host_result" // a target finished planning, re-checking or applying
	EventChange     = "change"      // a step changed something
	EventFinding    = "finding"
	EventProgress   = "progress" // a long step reports where it is
	EventRunEnd     = "run_end"
)

// Event is one progress/log record. Message is redacted before it leaves.
// The JSON form is the documented log schema (README "Cron", JSON log).
type Event struct {
	V       int       `json:"v"`
	Time    time.Time `json:"time"`
	Type    string    `json:"type"`
	Run     string    `json:"run,omitempty"`     // run id, the same on every line of one run
	Cluster string    `json:"cluster,omitempty"` // kubeconfig context, when one run covers several clusters
	Phase   string    `json:"phase,omitempty"`   // plan | recheck | apply
	Runbook string    `json:"runbook,omitempty"`
	Target  string    `json:"target,omitempty"`
	Step    string    `json:"step,omitempty"`
	Module  string    `json:"module,omitempty"`
	Status  string    `json:"status,omitempty"`
	Message string    `json:"message,omitempty"`

	// run_start only.
	Command string `json:"command,omitempty"` // plan | apply | doctor ...
	Version string `json:"version,omitempty"` // nksrun version
	PID     int    `json:"pid,omitempty"`

	// run_end only.
	ExitCode        *int           `json:"exit_code,omitempty"`
	DurationSeconds *float64       `json:"duration_seconds,omitempty"`
	Counts          map[string]int `json:"counts,omitempty"` // targets by status
}
