// Package module is the contract between the engine and the modules that do
// the work (file_sync, grub_arg, reboot, k8s_patch, ...).
//
// The split follows pyinfra and Terraform: a module first declares the facts
// it needs (Probes), then Plan compares those facts with the desired state and
// returns a Change that is plain data (what would change, why, and the
// fingerprint of what it saw). Apply later receives exactly that Change, re-checks
// the fingerprint (refusing stale changes) and performs it. Plan never changes
// anything on a node or in the cluster.
package module

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
)

// Scope says where a step of a module runs.
type Scope string

const (
	// ScopeNode steps run once per selected node, over SSH.
	ScopeNode Scope = "node"
	// ScopeCluster steps run once per run, against the Kubernetes API.
	ScopeCluster Scope = "cluster"
	// ScopeAny steps (report) run where the runbook step says (`on:`).
	ScopeAny Scope = "any"
)

// Action is what a planned step will do.
type Action string

const (
	NoOp    Action = "no-op"   // desired state already holds
	Change  Action = "change"  // apply will change something
	Skip    Action = "skip"    // condition false or not applicable (Reason says why)
	Unknown Action = "unknown" // cannot be known before apply (Reason says why)
	Finding Action = "finding" // diagnose-only result; changes nothing
)

// Planned is a module's plan for one step on one target. It is plain data: it
// is saved in plan files, rendered for reviews and handed back to Apply.
type Planned struct {
	Action Action `json:"action"`
	// Summary is one human line, e.g. "update /etc/logrotate.d/docker (sha256 1a2b… → 9f8e…)".
	Summary string `json:"summary"`
	// Reason explains a Skip, Unknown or why a Change is needed.
	Reason string `json:"reason,omitempty"`
	// Diff is a unified diff (or object diff) already redacted of secrets.
	Diff string `json:"diff,omitempty"`
	// Fingerprint is what the plan saw and what Apply re-checks before acting
	// (file hashes, resourceVersions, boot ids). A mismatch makes Apply
	// return ErrStale.
	Fingerprint map[string]string `json:"fingerprint,omitempty"`
	// Data is the module's own payload for Apply (e.g. the JSON patch to send).
	// It must hold no secret in clear text that is not already in the runbook
	// source; a module that needs secret material re-reads it in Apply.
	Data json.RawMessage `json:"data,omitempty"`
	// Outputs are registered for later steps' conditions (`steps.<id>.<key>`)
	// and are the plan-time prediction of Applied.Outputs.
	Outputs map[string]any `json:"outputs,omitempty"`
	// Findings recorded by diagnose steps (or by any step that notices something).
	Findings []FindingInfo `json:"findings,omitempty"`
}

// Applied is the result of applying one Planned change.
type Applied struct {
	Changed bool           `json:"changed"`
	Summary string         `json:"summary,omitempty"`
	Outputs map[string]any `json:"outputs,omitempty"`
}

// FindingInfo is a diagnose result.
type FindingInfo struct {
	Severity       string   `json:"severity"` // info | warning | critical
	Title          string   `json:"title"`
	Evidence       []string `json:"evidence,omitempty"`
	Recommendation string   `json:"recommendation,omitempty"`
}

// ErrStale is returned (wrapped) by Apply when the target no longer matches
// the plan's fingerprint: the change is refused, never forced.
var ErrStale = errors.New("stale: target changed since the plan")

// ErrConflict is returned (wrapped) when the Kubernetes API reports that an
// object changed between plan and apply (409, failed resourceVersion or test op).
var ErrConflict = errors.New("conflict: object changed since the plan")

// RunOpts tunes one command on a node.
type RunOpts struct {
	// Sudo runs the command as root through `sudo -n` (never prompts).
	Sudo bool
	// Stdin, if set, is streamed to the command. A runner may read some of
	// it before the command starts (the SSH transport's root shell takes
	// input up to 64 KiB whole), so it must not wait on the command.
	Stdin io.Reader
	// Timeout overrides the transport's per-command limit (0 = default).
	Timeout time.Duration
	// MaxOutput overrides the runner's cap on the bytes of stdout+stderr
	// kept for one command (0 = the runner's default, DefaultMaxOutput
	// unless configured). Going over fails the command with an
	// *OutputLimitError and ends it on the node.
	MaxOutput int64
	// UserScript, if set, runs first, as the login user (never through
	// sudo), with no stdin; its stdout comes before the command's and its
	// exit status is ignored. Fact commands that asked not to be root ride
	// on the root exec this way instead of costing a sudo of their own.
	UserScript string
}

// DefaultMaxOutput is the default cap on one command's stdout+stderr. Every
// runner buffers a command's output in memory, so without a cap one node
// printing without end could take the whole controller down; 16 MiB is far
// above anything a probe or module prints.
const DefaultMaxOutput int64 = 16 << 20

// ErrCommandTimeout is wrapped by every runner's error for a command that
// ran past its timeout (RunOpts.Timeout or the runner's default). The
// command has been ended on the node when Run returns.
var ErrCommandTimeout = errors.New("command timed out")

// ErrOutputLimit is matched (errors.Is) by *OutputLimitError.
var ErrOutputLimit = errors.New("command output over the limit")

// OutputLimitError is a command whose stdout+stderr went over the cap. The
// runner stopped buffering at Limit bytes and ended the command on the node.
type OutputLimitError struct {
	Limit int64
}

func (e *OutputLimitError) Error() string {
	return fmt.Sprintf("command output went over the limit of %s (stdout+stderr; the command was stopped; raise the limit with --max-output)", FormatBytes(e.Limit))
}

func (e *OutputLimitError) Is(target error) bool { return target == ErrOutputLimit }

// FormatBytes prints n in the largest binary unit that divides it exactly
// (16 MiB, 1536 KiB, 100 B), so limits read back as they were given.
func FormatBytes(n int64) string {
	for _, u := range []struct {
		size int64
		name string
	}{{1 << 30, "GiB"}, {1 << 20, "MiB"}, {1 << 10, "KiB"}} {
		if n >= u.size && n%u.size == 0 {
			return fmt.Sprintf("%d %s", n/u.size, u.name)
		}
	}
	return fmt.Sprintf("%d B", n)
}

// RunResult is a finished command. A non-zero exit is not an error of Run;
// transport failures (connection lost, timeout, sudo refusing) are.
type RunResult struct {
	Stdout   []byte
	Stderr   []byte
	ExitCode int
}

// Runner executes shell commands on one node (`sh -c`), one SSH connection
// per node for the whole run, many sessions over it.
type Runner interface {
	Run(ctx context.Context, command string, opts RunOpts) (RunResult, error)
}

// Reconnector is implemented by runners that can drop and re-establish their
// connection (used by reboot to wait for a node to come back).
type Reconnector interface {
	Reconnect(ctx context.Context) error
}

// Cluster gives modules the Kubernetes API. Clients have raised rate limits.
type Cluster struct {
	Clientset kubernetes.Interface
	Dynamic   dynamic.Interface
	Mapper    meta.RESTMapper
}

// Node is one inventory host as a module sees it.
type Node struct {
	Name    string
	Address string
	// Facts are the node's facts (see engine docs: name, address, labels,
	// nodegroup, osImage, osFamily, kernel, runtime, kubelet, ready, bootID,
	// cmdline, ...). Read-only.
	Facts map[string]any
	// Runner is nil for cluster-scope steps.
	Runner Runner
}

// Target is what a step runs against: a node (Node != nil) or the cluster.
type Target struct {
	// Now is the plan's time. A module that writes a time into a change
	// (rollout_restart's restartedAt) uses it, so planning the same runbook
	// over the same facts again (apply of a saved plan re-derives it) gives
	// the same change. Zero: use the clock.
	Now     time.Time
	Node    *Node
	Cluster *Cluster // nil when no cluster is configured (static inventory)
	// RunbookDir is the directory of the runbook, for resolving relative paths.
	RunbookDir string
	// Secrets registers values that must never be printed; every plan, log
	// and error is filtered through it.
	Secrets SecretSink
	// Log reports progress lines while a long step runs (drain, reboot wait).
	Log func(format string, args ...any)
}

// SecretSink collects secret values for redaction.
type SecretSink interface {
	AddSecret(value string)
}

// Probe is a command whose output a module needs before it can plan. The
// engine runs all probes of a node (its built-in facts, declared facts and
// every step's probes) in one round trip and hands the outputs to Plan.
type Probe struct {
	// Key is unique within the step; Plan looks the output up by it.
	Key     string
	Command string
	// Sudo: the probe runs as root; otherwise as the login user.
	Sudo bool
}

// ProbeResult is one probe's output.
type ProbeResult struct {
	Output   []byte
	ExitCode int
}

// Step is one runbook step prepared for a module: its evaluated parameters.
type Step struct {
	ID     string
	Params any // the pointer returned by NewParams, decoded and evaluated
}

// Module is implemented by every module package.
//
// The name runbooks use (`module: file_sync`) is the module's key in the
// one registry (modules.Registry), not a method. Optional interfaces add
// what only some modules have: Prober (node commands Plan needs), APIUser
// (RBAC rules), runbook.OutputDeclarer (outputs later steps may read).
type Module interface {
	Scope() Scope
	// NewParams returns a pointer to a fresh parameter struct. The engine
	// decodes the step's `with:` mapping into it strictly (unknown keys and
	// wrong types are positioned errors) after evaluating `!expr` values.
	NewParams() any
	// Validate checks decoded parameters (required fields, enums). Called at
	// load time when the step has no expressions, and always before planning.
	Validate(params any) error
	// Plan computes the change without changing anything.
	Plan(ctx context.Context, t Target, s Step, probes map[string]ProbeResult) (Planned, error)
	// Apply performs exactly p (a Change), re-checking p.Fingerprint first.
	Apply(ctx context.Context, t Target, s Step, p Planned) (Applied, error)
}

// Prober is implemented by node modules whose Plan needs command output
// from the node: the engine runs every probe of a node in one exec.
type Prober interface {
	Probes(t Target, s Step) ([]Probe, error)
}

// Factory makes a module instance for one run. An instance may keep run-wide
// state (reboot keeps its serialisation and failure counters there).
type Factory func() Module

// Registry maps module names to factories. It is filled explicitly by
// modules.Registry(), never by init side effects.
type Registry map[string]Factory
