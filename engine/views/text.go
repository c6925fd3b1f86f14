package views

import (
	"fmt"
	"io"
	"strings"

	"nksrun/engine/module"
	"nksrun/engine/plans"
)

// foldAt is how many node names a folded list shows before "and N more".
const foldAt = 5

// ANSI colours, only with Options.Color.
const (
	red    = "31"
	green  = "32"
	yellow = "33"
	cyan   = "36"
	bold   = "1"
)

func (o Options) paint(code, s string) string {
	if !o.Color || s == "" {
		return s
	}
	return "\033[" + code + "m" + s + "\033[0m"
}

var statusColor = map[plans.Status]string{
	plans.StatusFailed: red, plans.StatusUnreachable: red, plans.StatusStale: red, plans.StatusNotRun: red,
	plans.StatusChanges: yellow, plans.StatusChanged: yellow, plans.StatusOK: green,
}

var statusSign = map[plans.Status]string{
	plans.StatusFailed: "x", plans.StatusUnreachable: "x", plans.StatusStale: "x", plans.StatusNotRun: "x",
	plans.StatusChanges: "~", plans.StatusChanged: "~", plans.StatusOK: "=", plans.StatusSkipped: "-",
}

var actionColor = map[module.Action]string{
	module.Change: yellow, module.Unknown: cyan, module.Finding: red,
}

func (o Options) fold() int {
	if o.Verbose {
		return 0
	}
	return foldAt
}

// groupHeader is the one line that names a group: a single target by its
// label, a larger group by its size and folded node list.
func groupHeader(g *group, o Options) string {
	status := o.paint(statusColor[g.Status], string(g.Status))
	sign := o.paint(statusColor[g.Status], statusSign[g.Status])
	var line string
	if len(g.Targets) == 1 {
		line = fmt.Sprintf("%s %s: %s", sign, oneLine(targetLabel(g.Targets[0])), status)
	} else {
		line = fmt.Sprintf("%s %s on %d nodes", sign, status, len(g.Targets))
	}
	if g.Reason != "" {
		line += ": " + oneLine(g.Reason)
	}
	if len(g.Targets) > 1 {
		line += "\n      nodes: " + names(g.Targets, o.fold())
		if !o.Verbose && len(g.Targets) > foldAt+1 {
			line += " (-v lists all)"
		}
	}
	return line
}

func renderPlanText(w io.Writer, p *plans.Plan, o Options) error {
	for _, rp := range p.Runbooks {
		fmt.Fprintf(w, "%s (guide §%s): %s\n", o.paint(bold, "runbook "+rp.Name), rp.Section, oneLine(rp.Title))
		for _, g := range groupTargets(rp) {
			fmt.Fprintf(w, "  %s\n", groupHeader(g, o))
			// In-sync and skipped groups are one line; their steps are
			// no-ops (shown with -v).
			if g.quiet() && !o.Verbose {
				if n := len(g.Steps); n > 0 && g.Status == plans.StatusOK {
					fmt.Fprintf(w, "      (%s, nothing to do)\n", plural(n, "step", "steps"))
				}
				continue
			}
			for _, s := range g.Steps {
				renderStepText(w, s, o)
			}
		}
	}
	_, err := fmt.Fprintf(w, "\n%s\n", summary(p))
	if err == nil && p.Checksum != "" {
		// What a reviewer pins: a saved plan that was edited and resealed
		// has another checksum.
		_, err = fmt.Fprintf(w, "Plan checksum %s: nksrun apply --expect-checksum %s PLAN.json applies exactly this plan and refuses any other.\n", p.Checksum, p.Checksum)
	}
	return err
}

func renderStepText(w io.Writer, s plans.StepPlan, o Options) {
	fmt.Fprintf(w, "    %s %s [%s] %s", o.paint(actionColor[s.Action], actionSign[s.Action]), s.ID, s.Module, oneLine(s.Summary))
	if s.Reason != "" && s.Action != module.Change {
		fmt.Fprintf(w, " (%s)", oneLine(s.Reason))
	} else if s.Reason != "" {
		fmt.Fprintf(w, "\n        why: %s", oneLine(s.Reason))
	}
	fmt.Fprintln(w)
	for _, f := range s.Findings {
		fmt.Fprintf(w, "      ! %s: %s\n", o.paint(red, f.Severity), oneLine(f.Title))
		for _, ev := range f.Evidence {
			fmt.Fprintf(w, "          - %s\n", oneLine(ev))
		}
		if f.Recommendation != "" {
			fmt.Fprintf(w, "          recommendation: %s\n", oneLine(f.Recommendation))
		}
	}
	if s.Diff != "" {
		for _, line := range strings.Split(strings.TrimRight(s.Diff, "\n"), "\n") {
			switch {
			case strings.HasPrefix(line, "+++"), strings.HasPrefix(line, "---"):
				line = o.paint(bold, line)
			case strings.HasPrefix(line, "+"):
				line = o.paint(green, line)
			case strings.HasPrefix(line, "-"):
				line = o.paint(red, line)
			case strings.HasPrefix(line, "@@"):
				line = o.paint(cyan, line)
			}
			fmt.Fprintf(w, "        %s\n", line)
		}
	}
}

// reportGroup is the report's counterpart of group: targets of one runbook
// with the same outcome.
type reportGroup struct {
	runbook string
	first   plans.TargetResult
	text    []string // normalized step and verify lines
	names   []plans.TargetPlan
}

func renderReportText(w io.Writer, r *plans.Report, o Options) error {
	var groups []*reportGroup
	byKey := map[string]*reportGroup{}
	counts := map[plans.Status]int{}
	for _, t := range r.Targets {
		counts[t.Status]++
		tp := plans.TargetPlan{Kind: t.Kind, Name: t.Name, Address: t.Address}
		var lines []string
		for _, s := range t.Steps {
			if s.Error != "" {
				lines = append(lines, fmt.Sprintf("%s FAILED: %s", s.ID, oneLine(normalize(tp, s.Error))))
			} else if s.Changed {
				lines = append(lines, fmt.Sprintf("%s changed: %s", s.ID, oneLine(normalize(tp, s.Summary))))
			}
		}
		for _, c := range t.Verify {
			mark := "ok"
			if !c.OK {
				mark = "FAILED"
			}
			l := fmt.Sprintf("verify %s: %s", mark, oneLine(normalize(tp, c.Message)))
			if c.Error != "" {
				l += " (" + oneLine(normalize(tp, c.Error)) + ")"
			}
			lines = append(lines, l)
		}
		key := strings.Join(append([]string{t.Runbook, string(t.Kind), string(t.Status), normalize(tp, t.Reason)}, lines...), "\x00")
		g := byKey[key]
		if g == nil || t.Kind == plans.TargetCluster {
			g = &reportGroup{runbook: t.Runbook, first: t, text: lines}
			byKey[key] = g
			groups = append(groups, g)
		}
		g.names = append(g.names, tp)
	}
	fmt.Fprintln(w, "\nRecap:")
	for _, g := range groups {
		st := o.paint(statusColor[g.first.Status], string(g.first.Status))
		reason := g.first.Reason
		text := g.text
		if len(g.names) == 1 {
			name := g.first.Name
			if g.first.Kind == plans.TargetNode && g.first.Address != "" {
				name += " (" + g.first.Address + ")"
			}
			fmt.Fprintf(w, "  %-12s %s/%s", st, g.runbook, name)
			// A single target shows its own text, not the placeholders.
			text = nil
			for _, s := range g.first.Steps {
				if s.Error != "" {
					text = append(text, fmt.Sprintf("%s FAILED: %s", s.ID, oneLine(s.Error)))
				} else if s.Changed {
					text = append(text, fmt.Sprintf("%s changed: %s", s.ID, oneLine(s.Summary)))
				}
			}
			for _, c := range g.first.Verify {
				mark := "ok"
				if !c.OK {
					mark = "FAILED"
				}
				l := fmt.Sprintf("verify %s: %s", mark, oneLine(c.Message))
				if c.Error != "" {
					l += " (" + oneLine(c.Error) + ")"
				}
				text = append(text, l)
			}
		} else {
			fmt.Fprintf(w, "  %-12s %s on %d nodes", st, g.runbook, len(g.names))
			reason = normalize(g.names[0], reason)
		}
		if reason != "" {
			fmt.Fprintf(w, ": %s", oneLine(reason))
		}
		fmt.Fprintln(w)
		if len(g.names) > 1 {
			fmt.Fprintf(w, "      nodes: %s\n", names(g.names, o.fold()))
		}
		for _, l := range text {
			fmt.Fprintf(w, "      %s\n", l)
		}
	}
	_, err := fmt.Fprintf(w, "Targets: ok=%d changed=%d failed=%d unreachable=%d skipped=%d stale=%d not-run=%d\n",
		counts[plans.StatusOK], counts[plans.StatusChanged], counts[plans.StatusFailed], counts[plans.StatusUnreachable], counts[plans.StatusSkipped], counts[plans.StatusStale], counts[plans.StatusNotRun])
	return err
}
