// Package systemdrestart implements the systemd_restart module: restart
// units that are not active (or every listed unit, with always: true), in
// the order given, then verify that each is active. Plan and apply report
// every unit's state before and after (`systemctl is-active`).
package systemdrestart

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	"nksrun/engine/module"
	"nksrun/engine/shell"
)

// Params are systemd_restart's parameters.
type Params struct {
	// Units to keep active, restarted in this order (rpcbind before rpc-statd).
	Units []string `yaml:"units" nks:"required"`
	// Always restarts every unit, even active ones.
	Always bool `yaml:"always,omitempty"`
	// Wait is how long (seconds) a restarted unit may take to become active
	// (default 30).
	Wait int `yaml:"wait,omitempty"`
}

// Module is systemd_restart.
type Module struct{}

// New is the registry factory.
func New() module.Module { return module.Adapt[Params](Module{}) }

var _ module.Typed[Params] = Module{}

func (Module) Scope() module.Scope { return module.ScopeNode }

// Outputs are the keys later steps read as steps.<id>.<key>: the units' states before and after, and those restarted.
func (Module) Outputs() []string { return []string{"before", "after", "restarted"} }

var unitRE = regexp.MustCompile(`^[A-Za-z0-9:_.@\\-]+$`)

func (Module) Validate(ps *Params) error {
	if len(ps.Units) == 0 {
		return errors.New("units: list at least one unit")
	}
	seen := map[string]bool{}
	for _, u := range ps.Units {
		if !unitRE.MatchString(u) {
			return fmt.Errorf("unit %q is not a systemd unit name", u)
		}
		if seen[u] {
			return fmt.Errorf("unit %q listed twice", u)
		}
		seen[u] = true
	}
	if ps.Wait < 0 {
		return errors.New("wait must not be negative")
	}
	return nil
}

const probeState = "state"

// stateScript prints "UNIT STATE" per unit (is-active prints the state
// even when it exits non-zero).
func stateScript(units []string) string {
	var q []string
	for _, u := range units {
		q = append(q, shell.Quote(u))
	}
	return fmt.Sprintf("for u in %s; do s=$(systemctl is-active \"$u\" 2>/dev/null | head -n 1); echo \"$u ${s:-unknown}\"; done", strings.Join(q, " "))
}

func (Module) Probes(t module.Target, _ string, params *Params) ([]module.Probe, error) {
	return []module.Probe{{Key: probeState, Command: stateScript(params.Units), Sudo: true}}, nil
}

func parseStates(out []byte) map[string]string {
	m := map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) == 2 {
			m[f[0]] = f[1]
		}
	}
	return m
}

type data struct {
	Restart []string `json:"restart"`
}

func asAny(m map[string]string) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func describe(units []string, st map[string]string) string {
	var parts []string
	for _, u := range units {
		parts = append(parts, u+" "+st[u])
	}
	return strings.Join(parts, ", ")
}

func (Module) Plan(ctx context.Context, t module.Target, _ string, p *Params, probes map[string]module.ProbeResult) (module.Planned, error) {
	st := parseStates(probes[probeState].Output)
	var restart []string
	for _, u := range p.Units {
		if _, ok := st[u]; !ok {
			return module.Planned{}, fmt.Errorf("no state for unit %s (systemctl missing?)", u)
		}
		if p.Always || st[u] != "active" {
			restart = append(restart, u)
		}
	}
	out := module.Planned{
		Fingerprint: map[string]string{},
		Outputs:     map[string]any{"before": asAny(st), "after": asAny(st), "restarted": []any{}},
	}
	for u, v := range st {
		out.Fingerprint[u] = v
	}
	if len(restart) == 0 {
		out.Action = module.NoOp
		out.Summary = "active: " + describe(p.Units, st)
		return out, nil
	}
	after := map[string]string{}
	for u, v := range st {
		after[u] = v
	}
	var rs []any
	for _, u := range restart {
		after[u] = "active"
		rs = append(rs, u)
	}
	out.Outputs["after"], out.Outputs["restarted"] = asAny(after), rs
	out.Action = module.Change
	out.Summary = fmt.Sprintf("restart %s (now: %s)", strings.Join(restart, ", "), describe(p.Units, st))
	if p.Always {
		out.Reason = "always: true"
	} else {
		out.Reason = "not active: " + describe(restart, st)
	}
	var err error
	out.Data, err = json.Marshal(data{Restart: restart})
	return out, err
}

func applyScript(p *Params, restart []string) string {
	wait := p.Wait
	if wait == 0 {
		wait = 30
	}
	var q []string
	for _, u := range restart {
		q = append(q, shell.Quote(u))
	}
	always := "no"
	if p.Always {
		always = "yes"
	}
	return fmt.Sprintf(`rc=0
for u in %[1]s; do
	before=$(systemctl is-active "$u" 2>/dev/null | head -n 1)
	echo "before $u ${before:-unknown}"
	if [ "$before" = active ] && [ %[2]s = no ]; then echo "skipped $u"; continue; fi
	if ! out=$(systemctl restart "$u" 2>&1); then echo "restart-failed $u $(echo "$out" | tr '\n' ' ')" ; fi
	echo "restarted $u"
	i=0
	while s=$(systemctl is-active "$u" 2>/dev/null | head -n 1); [ "$s" != active ] && [ $i -lt %[3]d ]; do
		case $s in failed|inactive) [ $i -ge 2 ] && break ;; esac
		sleep 1; i=$((i + 1))
	done
done
%[4]s | sed 's/^/after /'
`, strings.Join(q, " "), always, wait, stateScript(p.Units))
}

func (Module) Apply(ctx context.Context, t module.Target, _ string, p *Params, pl module.Planned) (module.Applied, error) {
	var d data
	if err := json.Unmarshal(pl.Data, &d); err != nil {
		return module.Applied{}, fmt.Errorf("plan data: %w", err)
	}
	wait := p.Wait
	if wait == 0 {
		wait = 30
	}
	res, err := t.Node.Runner.Run(ctx, applyScript(p, d.Restart), module.RunOpts{Sudo: true, Timeout: time.Duration(wait*len(d.Restart)+60) * time.Second})
	if err != nil {
		return module.Applied{}, fmt.Errorf("restarting units: %w", err)
	}
	after, before := map[string]string{}, map[string]string{}
	var restarted []any
	var problems []string
	for _, l := range strings.Split(string(res.Stdout), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "after":
			if len(f) == 3 {
				after[f[1]] = f[2]
			}
		case "before":
			if len(f) == 3 {
				before[f[1]] = f[2]
			}
		case "restarted":
			restarted = append(restarted, f[1])
		case "restart-failed":
			problems = append(problems, fmt.Sprintf("systemctl restart %s: %s", f[1], strings.Join(f[2:], " ")))
		}
	}
	var bad []string
	for _, u := range p.Units {
		if after[u] != "active" {
			bad = append(bad, u+" "+orUnknown(after[u]))
		}
	}
	summary := fmt.Sprintf("before: %s; after: %s", describe(p.Units, merge(pl.Outputs["before"], before)), describe(p.Units, after))
	if len(bad) > 0 {
		sort.Strings(problems)
		msg := "not active after restart: " + strings.Join(bad, ", ") + " (" + summary + ")"
		if len(problems) > 0 {
			msg += "; " + strings.Join(problems, "; ")
		}
		return module.Applied{}, errors.New(msg)
	}
	if restarted == nil {
		restarted = []any{}
	}
	return module.Applied{
		Changed: len(restarted) > 0,
		Summary: summary,
		Outputs: map[string]any{"before": pl.Outputs["before"], "after": asAny(after), "restarted": restarted},
	}, nil
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func merge(planned any, seen map[string]string) map[string]string {
	out := map[string]string{}
	if m, ok := planned.(map[string]any); ok {
		for k, v := range m {
			out[k], _ = v.(string)
		}
	}
	for k, v := range seen {
		out[k] = v
	}
	return out
}
