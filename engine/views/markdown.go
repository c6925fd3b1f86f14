package views

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"

	"nksrun/engine/plans"
)

// Markdown limits: a GitHub comment holds 65,536 characters. Node lists
// longer than mdInline names go into <details>; a runbook shows at most
// mdMaxGroups groups (the JSON plan has every target).
const (
	mdInline    = 8
	mdMaxGroups = 40
)

func mdNames(ts []plans.TargetPlan) string {
	if len(ts) <= mdInline {
		return mdEscape(names(ts, 0))
	}
	return fmt.Sprintf("<details><summary>%d nodes</summary>\n\n%s\n\n</details>", len(ts), mdEscape(names(ts, 0)))
}

func renderPlanMarkdown(w io.Writer, p *plans.Plan, _ Options) error {
	fmt.Fprintf(w, "## nksrun plan\n\n")
	fmt.Fprintf(w, "Created %s by nksrun %s.\n\n", p.CreatedAt.UTC().Format("2006-01-02 15:04:05 MST"), mdEscape(p.Tool))
	sum := strings.SplitN(summary(p), "\n", 2)
	fmt.Fprintf(w, "**%s**\n%s\n\n", mdEscape(sum[0]), mdEscape(sum[1]))
	if p.Checksum != "" {
		fmt.Fprintf(w, "Plan checksum `%s`: `nksrun apply --expect-checksum %s PLAN.json` applies exactly this plan and refuses any other.\n\n", p.Checksum, p.Checksum)
	}
	// Summary: one row per runbook, targets by status, then step counts.
	fmt.Fprintf(w, "| runbook | guide | targets | with changes | in sync | skipped | failed/unreachable | changes | unknown | findings |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, rp := range p.Runbooks {
		by := map[plans.Status]int{}
		for _, t := range rp.Targets {
			by[t.Status]++
		}
		one := plans.Plan{Runbooks: []plans.RunbookPlan{rp}}
		rc := one.Counts()
		fmt.Fprintf(w, "| `%s` | §%s | %d | %d | %d | %d | %d | %d | %d | %d |\n", mdCode(rp.Name), mdEscape(rp.Section), len(rp.Targets),
			by[plans.StatusChanges], by[plans.StatusOK], by[plans.StatusSkipped]+by[plans.StatusNotRun], by[plans.StatusFailed]+by[plans.StatusUnreachable], rc.Change, rc.Unknown, rc.Findings)
	}
	fmt.Fprintln(w)
	for _, rp := range p.Runbooks {
		fmt.Fprintf(w, "### `%s` — %s (guide §%s)\n\n", mdCode(rp.Name), mdEscape(rp.Title), mdEscape(rp.Section))
		fmt.Fprintf(w, "Runbook sha256 `%s`", short(rp.SourceHash))
		if len(rp.Params) > 0 {
			keys := make([]string, 0, len(rp.Params))
			for k := range rp.Params {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			var ps []string
			for _, k := range keys {
				b, _ := json.Marshal(rp.Params[k])
				ps = append(ps, fmt.Sprintf("`%s=%s`", mdCode(k), mdCode(string(b))))
			}
			fmt.Fprintf(w, ", params %s", strings.Join(ps, ", "))
		}
		fmt.Fprint(w, ".\n\n")
		groups := groupTargets(rp)
		var brief []*group // one bullet each: in sync, skipped, errors
		shown := 0
		for _, g := range groups {
			if len(g.Steps) == 0 || g.quiet() {
				brief = append(brief, g)
				continue
			}
			if shown == mdMaxGroups {
				brief = append(brief, g)
				continue
			}
			shown++
			renderGroupMarkdown(w, g)
		}
		if len(brief) > 0 {
			more := 0
			for i, g := range brief {
				if i == mdMaxGroups {
					more = len(brief) - i
					break
				}
				line := fmt.Sprintf("- **%s**", g.Status)
				folded := ""
				switch {
				case len(g.Targets) == 1:
					line += " " + mdEscape(targetLabel(g.Targets[0]))
				case len(g.Targets) <= mdInline:
					line += fmt.Sprintf(" on %d nodes (%s)", len(g.Targets), mdEscape(names(g.Targets, 0)))
				default:
					line += fmt.Sprintf(" on %d nodes", len(g.Targets))
					folded = "\n  " + strings.ReplaceAll(mdNames(g.Targets), "\n\n", "\n\n  ")
				}
				if g.Reason != "" {
					line += ": " + mdEscape(g.Reason)
				} else if g.Status == plans.StatusOK && len(g.Steps) > 0 {
					line += fmt.Sprintf(" (%s, nothing to do)", plural(len(g.Steps), "step", "steps"))
				} else if len(g.Steps) > 0 {
					line += fmt.Sprintf(" (%s, see the JSON plan)", plural(len(g.Steps), "step", "steps"))
				}
				line += folded
				fmt.Fprintln(w, line)
			}
			if more > 0 {
				fmt.Fprintf(w, "- %d more groups: see the JSON plan (`nksrun show -o json PLAN.json`)\n", more)
			}
			fmt.Fprintln(w)
		}
	}
	return nil
}

// renderGroupMarkdown shows one group with steps: who, a step table, the
// findings and each diff once.
func renderGroupMarkdown(w io.Writer, g *group) {
	if len(g.Targets) == 1 {
		fmt.Fprintf(w, "#### %s: %s\n\n", mdEscape(targetLabel(g.Targets[0])), g.Status)
	} else {
		fmt.Fprintf(w, "#### %s on %d nodes (the same plan on each)\n\n%s\n\n", g.Status, len(g.Targets), mdNames(g.Targets))
	}
	if g.Reason != "" {
		fmt.Fprintf(w, "%s\n\n", mdEscape(g.Reason))
	}
	fmt.Fprintf(w, "| step | action | summary |\n|---|---|---|\n")
	for _, s := range g.Steps {
		sum := s.Summary
		if s.Reason != "" {
			sum += " (" + s.Reason + ")"
		}
		fmt.Fprintf(w, "| `%s` | %s | %s |\n", mdCode(s.ID), s.Action, mdEscape(sum))
	}
	fmt.Fprintln(w)
	for _, s := range g.Steps {
		for _, f := range s.Findings {
			fmt.Fprintf(w, "- **%s**: %s\n", mdEscape(f.Severity), mdEscape(f.Title))
			for _, ev := range f.Evidence {
				fmt.Fprintf(w, "  - %s\n", mdEscape(ev))
			}
			if f.Recommendation != "" {
				fmt.Fprintf(w, "  - recommendation: %s\n", mdEscape(f.Recommendation))
			}
		}
		if len(s.Findings) > 0 {
			fmt.Fprintln(w)
		}
		if s.Diff != "" {
			diff := strings.TrimRight(s.Diff, "\n")
			fence := mdFence(diff)
			fmt.Fprintf(w, "<details><summary><code>%s</code> diff</summary>\n\n%sdiff\n%s\n%s\n\n</details>\n\n", mdEscape(s.ID), fence, diff, fence)
		}
	}
}
