package engine

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"

	"nksrun/engine/module"
)

// Formats a plan or report can be rendered in. All come from the same data.
const (
	FormatText     = "text"
	FormatMarkdown = "markdown"
	FormatJSON     = "json"
)

// redactingWriter filters everything written through the secret redactor:
// the last line of defence for every view.
type redactingWriter struct {
	w io.Writer
	s *Secrets
}

func (r redactingWriter) Write(p []byte) (int, error) {
	if _, err := io.WriteString(r.w, r.s.Redact(string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}

// RenderPlan writes p in the given format.
func RenderPlan(w io.Writer, p *Plan, format string, secrets *Secrets) error {
	w = redactingWriter{w, secrets}
	switch format {
	case FormatJSON:
		b, err := json.MarshalIndent(p, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	case FormatMarkdown:
		return renderPlanMarkdown(w, p)
	case FormatText, "":
		return renderPlanText(w, p)
	}
	return fmt.Errorf("unknown format %q (text, markdown, json)", format)
}

var actionSign = map[module.Action]string{
	module.Change: "~", module.NoOp: "=", module.Skip: "-", module.Unknown: "?", module.Finding: "!",
}

func sortedRunbookTargets(rp RunbookPlan) []TargetPlan {
	ts := append([]TargetPlan(nil), rp.Targets...)
	sortedTargets(ts)
	return ts
}

func targetLabel(t TargetPlan) string {
	if t.Kind == TargetCluster {
		return "cluster"
	}
	if t.User != "" {
		return fmt.Sprintf("%s (%s@%s)", t.Name, t.User, t.Address)
	}
	return fmt.Sprintf("%s (%s)", t.Name, t.Address)
}

func renderPlanText(w io.Writer, p *Plan) error {
	for _, rp := range p.Runbooks {
		fmt.Fprintf(w, "runbook %s (guide §%s): %s\n", rp.Name, rp.Section, rp.Title)
		for _, t := range sortedRunbookTargets(rp) {
			fmt.Fprintf(w, "  %s: %s", targetLabel(t), t.Status)
			if t.Reason != "" {
				fmt.Fprintf(w, ": %s", t.Reason)
			}
			fmt.Fprintln(w)
			for _, s := range t.Steps {
				fmt.Fprintf(w, "    %s %s [%s] %s", actionSign[s.Action], s.ID, s.Module, s.Summary)
				if s.Reason != "" && s.Action != module.Change {
					fmt.Fprintf(w, " (%s)", s.Reason)
				} else if s.Reason != "" {
					fmt.Fprintf(w, "\n        why: %s", s.Reason)
				}
				fmt.Fprintln(w)
				for _, f := range s.Findings {
					fmt.Fprintf(w, "      ! %s: %s\n", f.Severity, f.Title)
					for _, ev := range f.Evidence {
						fmt.Fprintf(w, "          - %s\n", ev)
					}
					if f.Recommendation != "" {
						fmt.Fprintf(w, "          recommendation: %s\n", f.Recommendation)
					}
				}
				if s.Diff != "" {
					for _, line := range strings.Split(strings.TrimRight(s.Diff, "\n"), "\n") {
						fmt.Fprintf(w, "        %s\n", line)
					}
				}
			}
		}
	}
	c := p.Counts()
	_, err := fmt.Fprintf(w, "\nPlan: %d to change, %d unchanged, %d skipped, %d unknown until apply, %d finding(s); %d node(s) unreachable, %d failed.\n",
		c.Change, c.NoOp, c.Skip, c.Unknown, c.Findings, c.Unreachable, c.Failed)
	return err
}

func renderPlanMarkdown(w io.Writer, p *Plan) error {
	c := p.Counts()
	fmt.Fprintf(w, "## nksrun plan\n\n")
	fmt.Fprintf(w, "Created %s by nksrun %s. **%d to change**, %d unchanged, %d skipped, %d unknown until apply, %d finding(s), %d unreachable, %d failed.\n\n",
		p.CreatedAt.Format("2006-01-02 15:04:05 MST"), p.Tool, c.Change, c.NoOp, c.Skip, c.Unknown, c.Findings, c.Unreachable, c.Failed)
	for _, rp := range p.Runbooks {
		fmt.Fprintf(w, "### `%s` — %s (guide §%s)\n\n", rp.Name, mdEscape(rp.Title), rp.Section)
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
				ps = append(ps, fmt.Sprintf("`%s=%s`", k, mdEscape(string(b))))
			}
			fmt.Fprintf(w, ", params %s", strings.Join(ps, ", "))
		}
		fmt.Fprintf(w, ".\n\n| target | status | step | action | summary |\n|---|---|---|---|---|\n")
		targets := sortedRunbookTargets(rp)
		for _, t := range targets {
			if len(t.Steps) == 0 {
				fmt.Fprintf(w, "| %s | %s | | | %s |\n", mdEscape(targetLabel(t)), t.Status, mdEscape(t.Reason))
				continue
			}
			for i, s := range t.Steps {
				label, status := "", ""
				if i == 0 {
					label, status = mdEscape(targetLabel(t)), t.Status
				}
				sum := s.Summary
				if s.Reason != "" {
					sum += " (" + s.Reason + ")"
				}
				fmt.Fprintf(w, "| %s | %s | `%s` | %s | %s |\n", label, status, s.ID, s.Action, mdEscape(sum))
			}
		}
		fmt.Fprintln(w)
		for _, t := range targets {
			for _, s := range t.Steps {
				for _, f := range s.Findings {
					fmt.Fprintf(w, "- **%s** on %s: %s\n", f.Severity, mdEscape(targetLabel(t)), mdEscape(f.Title))
					for _, ev := range f.Evidence {
						fmt.Fprintf(w, "  - %s\n", mdEscape(ev))
					}
					if f.Recommendation != "" {
						fmt.Fprintf(w, "  - recommendation: %s\n", mdEscape(f.Recommendation))
					}
				}
				if s.Diff != "" {
					fmt.Fprintf(w, "<details><summary>%s: <code>%s</code> diff</summary>\n\n```diff\n%s\n```\n\n</details>\n\n",
						mdEscape(targetLabel(t)), s.ID, strings.TrimRight(strings.ReplaceAll(s.Diff, "```", "'''"), "\n"))
				}
			}
		}
	}
	return nil
}

func mdEscape(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ", "<", "&lt;", ">", "&gt;").Replace(s)
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

// RenderReport writes an apply report.
func RenderReport(w io.Writer, r *Report, format string, secrets *Secrets) error {
	w = redactingWriter{w, secrets}
	if format == FormatJSON {
		b, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	counts := map[string]int{}
	fmt.Fprintln(w, "\nRecap:")
	for _, t := range r.Targets {
		counts[t.Status]++
		name := t.Name
		if t.Kind == TargetNode && t.Address != "" {
			name += " (" + t.Address + ")"
		}
		fmt.Fprintf(w, "  %-12s %s/%s", t.Status, t.Runbook, name)
		if t.Reason != "" {
			fmt.Fprintf(w, ": %s", t.Reason)
		}
		fmt.Fprintln(w)
		for _, s := range t.Steps {
			if s.Changed || s.Error != "" {
				mark := "changed"
				if s.Error != "" {
					mark = "FAILED"
				}
				fmt.Fprintf(w, "      %s %s: %s\n", s.ID, mark, s.Summary)
			}
		}
		for _, c := range t.Verify {
			mark := "ok"
			if !c.OK {
				mark = "FAILED"
			}
			fmt.Fprintf(w, "      verify %s: %s", mark, c.Message)
			if c.Error != "" {
				fmt.Fprintf(w, " (%s)", c.Error)
			}
			fmt.Fprintln(w)
		}
	}
	_, err := fmt.Fprintf(w, "ok=%d changed=%d failed=%d unreachable=%d skipped=%d stale=%d not-run=%d\n",
		counts[StatusOK], counts[StatusChanged], counts[StatusFailed], counts[StatusUnreachable], counts[StatusSkipped], counts[StatusStale], counts[StatusNotRun])
	return err
}
