package views

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"

	"nksrun/engine/module"
	"nksrun/engine/plans"
	"nksrun/engine/redact"
)

// Formats a plan or report can be rendered in. All come from the same data.
const (
	FormatText     = "text"
	FormatMarkdown = "markdown"
	FormatJSON     = "json"
)

// RedactingWriter filters everything written through the secret redactor.
// It is for free text that does not come from a plan or report (doctor's
// table, messages); plan and report views redact their data instead, so a
// secret's value can never rewrite their structure.
func RedactingWriter(w io.Writer, s *redact.Secrets) io.Writer { return redactingWriter{w, s} }

type redactingWriter struct {
	w io.Writer
	s *redact.Secrets
}

func (r redactingWriter) Write(p []byte) (int, error) {
	if _, err := io.WriteString(r.w, r.s.Redact(string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}

// RedactJSON returns doc (JSON) with every secret replaced inside string
// values. Object keys are never rewritten: they are structure (field names,
// object names as map keys), and rewriting them would let whoever chose a
// secret's value rename the fields of a plan or a log line. It works on the
// decoded strings, so a secret that JSON escapes (quotes, <, &, newlines) is
// still found; everything else, key order and indentation included, is left
// byte for byte.
func RedactJSON(doc []byte, s *redact.Secrets) []byte {
	if s == nil {
		return doc
	}
	var out []byte
	last := 0
	for i := 0; i < len(doc); i++ {
		if doc[i] != '"' {
			continue
		}
		j := i + 1
		for j < len(doc) && doc[j] != '"' {
			if doc[j] == '\\' {
				j++
			}
			j++
		}
		if j >= len(doc) {
			break
		}
		lit := doc[i : j+1]
		if isKey(doc[j+1:]) {
			i = j
			continue
		}
		var str string
		if json.Unmarshal(lit, &str) == nil {
			if red := s.Redact(str); red != str {
				enc, _ := json.Marshal(red)
				out = append(out, doc[last:i]...)
				out = append(out, enc...)
				last = j + 1
			}
		}
		i = j
	}
	if out == nil {
		return doc
	}
	return append(out, doc[last:]...)
}

// isKey reports whether a JSON string literal followed by rest is an
// object key (the next non-space byte is a colon).
func isKey(rest []byte) bool {
	for _, c := range rest {
		switch c {
		case ' ', '\t', '\n', '\r':
			continue
		case ':':
			return true
		}
		return false
	}
	return false
}

// redactedPlan is a deep copy of p with every string value redacted: the
// views render from it, so escaping done by a view (Markdown, JSON) can
// never hide a secret from the redactor. The structural fields (kinds,
// statuses, actions, names, step ids and modules) are taken back from p:
// a secret's value can blank a sentence, never change what the plan says
// it will do.
func redactedPlan(p *plans.Plan, s *redact.Secrets) (*plans.Plan, error) {
	b, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	red := RedactJSON(b, s)
	if bytes.Equal(red, b) {
		return p, nil // nothing to hide: render p itself (numbers stay exact)
	}
	var c plans.Plan
	if err := json.Unmarshal(red, &c); err != nil {
		return nil, err
	}
	for i := range c.Runbooks {
		cr, pr := &c.Runbooks[i], &p.Runbooks[i]
		cr.Name = pr.Name
		for j := range cr.Targets {
			ct, pt := &cr.Targets[j], &pr.Targets[j]
			ct.Kind, ct.Name, ct.Status = pt.Kind, pt.Name, pt.Status
			for k := range ct.Steps {
				cs, ps := &ct.Steps[k], &pt.Steps[k]
				cs.ID, cs.Module, cs.Action = ps.ID, ps.Module, ps.Action
			}
		}
	}
	return &c, nil
}

// RenderPlan writes p in the given format. Text, Markdown and JSON are views
// of the same Plan value. Secrets are redacted in a copy of the data, never
// in the rendered text: what a view prints about kinds, statuses, actions
// and counts comes from the plan itself, so no secret's value can change
// what a reviewer is told will happen.
func RenderPlan(w io.Writer, p *plans.Plan, format string, secrets *redact.Secrets) error {
	switch format {
	case FormatJSON, FormatMarkdown, FormatText, "":
	default:
		return fmt.Errorf("unknown format %q (text, markdown, json)", format)
	}
	rp, err := redactedPlan(p, secrets)
	if err != nil {
		return err
	}
	switch format {
	case FormatJSON:
		return writeJSON(w, rp)
	case FormatMarkdown:
		return renderPlanMarkdown(w, rp)
	}
	return renderPlanText(w, rp)
}

func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

var actionSign = map[module.Action]string{
	module.Change: "~", module.NoOp: "=", module.Skip: "-", module.Unknown: "?", module.Finding: "!",
}

func sortedRunbookTargets(rp plans.RunbookPlan) []plans.TargetPlan {
	ts := append([]plans.TargetPlan(nil), rp.Targets...)
	plans.SortTargets(ts)
	return ts
}

func targetLabel(t plans.TargetPlan) string {
	if t.Kind == plans.TargetCluster {
		return "cluster"
	}
	if t.User != "" {
		return fmt.Sprintf("%s (%s@%s)", t.Name, t.User, t.Address)
	}
	return fmt.Sprintf("%s (%s)", t.Name, t.Address)
}

func renderPlanText(w io.Writer, p *plans.Plan) error {
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
	_, err := fmt.Fprintf(w, "\nPlan: %d to change, %d unchanged, %d skipped, %d unknown until apply, %d finding(s); %d node(s) skipped, %d unreachable, %d failed.\n",
		c.Change, c.NoOp, c.Skip, c.Unknown, c.Findings, c.SkippedTargets, c.Unreachable, c.Failed)
	if err == nil && p.Checksum != "" {
		// What a reviewer pins: a saved plan that was edited and resealed
		// has another checksum.
		_, err = fmt.Fprintf(w, "Plan checksum %s: nksrun apply --expect-checksum %s PLAN.json applies exactly this plan and refuses any other.\n", p.Checksum, p.Checksum)
	}
	return err
}

func renderPlanMarkdown(w io.Writer, p *plans.Plan) error {
	c := p.Counts()
	fmt.Fprintf(w, "## nksrun plan\n\n")
	fmt.Fprintf(w, "Created %s by nksrun %s. **%d to change**, %d unchanged, %d skipped, %d unknown until apply, %d finding(s), %d unreachable, %d failed.\n\n",
		p.CreatedAt.UTC().Format("2006-01-02 15:04:05 MST"), mdEscape(p.Tool), c.Change, c.NoOp, c.Skip, c.Unknown, c.Findings, c.Unreachable, c.Failed)
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
					label, status = mdEscape(targetLabel(t)), string(t.Status)
				}
				sum := s.Summary
				if s.Reason != "" {
					sum += " (" + s.Reason + ")"
				}
				fmt.Fprintf(w, "| %s | %s | `%s` | %s | %s |\n", label, status, mdCode(s.ID), s.Action, mdEscape(sum))
			}
		}
		fmt.Fprintln(w)
		for _, t := range targets {
			for _, s := range t.Steps {
				for _, f := range s.Findings {
					fmt.Fprintf(w, "- **%s** on %s: %s\n", mdEscape(f.Severity), mdEscape(targetLabel(t)), mdEscape(f.Title))
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
					fmt.Fprintf(w, "<details><summary>%s: <code>%s</code> diff</summary>\n\n%sdiff\n%s\n%s\n\n</details>\n\n",
						mdEscape(targetLabel(t)), mdEscape(s.ID), fence, diff, fence)
				}
			}
		}
	}
	return nil
}

// mdFence is a code fence longer than any run of backticks in s, so a diff
// containing ``` cannot end its block early (CommonMark).
func mdFence(s string) string {
	longest, run := 0, 0
	for _, r := range s {
		if r == '`' {
			run++
			longest = max(longest, run)
		} else {
			run = 0
		}
	}
	return strings.Repeat("`", max(3, longest+1))
}

// mdEscape makes s safe in Markdown text and table cells.
func mdEscape(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ", "<", "&lt;", ">", "&gt;").Replace(s)
}

// mdCode makes s safe inside a `code span` in a table cell.
func mdCode(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ", "`", "'").Replace(s)
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

// RenderReport writes an apply report.
func RenderReport(w io.Writer, r *plans.Report, format string, secrets *redact.Secrets) error {
	r, err := redactedReport(r, secrets)
	if err != nil {
		return err
	}
	if format == FormatJSON {
		return writeJSON(w, r)
	}
	counts := map[plans.Status]int{}
	fmt.Fprintln(w, "\nRecap:")
	for _, t := range r.Targets {
		counts[t.Status]++
		name := t.Name
		if t.Kind == plans.TargetNode && t.Address != "" {
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
	_, err = fmt.Fprintf(w, "ok=%d changed=%d failed=%d unreachable=%d skipped=%d stale=%d not-run=%d\n",
		counts[plans.StatusOK], counts[plans.StatusChanged], counts[plans.StatusFailed], counts[plans.StatusUnreachable], counts[plans.StatusSkipped], counts[plans.StatusStale], counts[plans.StatusNotRun])
	return err
}

// redactedReport is redactedPlan for an apply report.
func redactedReport(r *plans.Report, s *redact.Secrets) (*plans.Report, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	red := RedactJSON(b, s)
	if bytes.Equal(red, b) {
		return r, nil
	}
	var c plans.Report
	if err := json.Unmarshal(red, &c); err != nil {
		return nil, err
	}
	for i := range c.Targets {
		ct, pt := &c.Targets[i], &r.Targets[i]
		ct.Runbook, ct.Kind, ct.Name, ct.Status = pt.Runbook, pt.Kind, pt.Name, pt.Status
		for k := range ct.Steps {
			cs, ps := &ct.Steps[k], &pt.Steps[k]
			cs.ID, cs.Module, cs.Action, cs.Changed = ps.ID, ps.Module, ps.Action, ps.Changed
		}
		for k := range ct.Verify {
			ct.Verify[k].OK = pt.Verify[k].OK
		}
	}
	return &c, nil
}
