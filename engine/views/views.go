package views

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
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
	if s.None() {
		return doc
	}
	out, _ := mapJSONStrings(doc, s.Redact, false)
	return out
}

// mapJSONStrings returns doc with fn applied to every decoded string value
// (and, with keys, object key), re-encoded; doc itself and false when fn
// changed nothing.
func mapJSONStrings(doc []byte, fn func(string) string, keys bool) ([]byte, bool) {
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
		if !keys && isKey(doc[j+1:]) {
			i = j
			continue
		}
		var str string
		if json.Unmarshal(lit, &str) == nil {
			if red := fn(str); red != str {
				enc, _ := json.Marshal(red)
				out = append(out, doc[last:i]...)
				out = append(out, enc...)
				last = j + 1
			}
		}
		i = j
	}
	if out == nil {
		return doc, false
	}
	return append(out, doc[last:]...), true
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
	if s.None() {
		// Nothing to hide: no copy. At 1,000 nodes the copy through JSON
		// was about 10 MB, made while apply holds every node's connection.
		return p, nil
	}
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
	s = oneLine(s)
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

// redactedReport is redactedPlan for an apply report.
func redactedReport(r *plans.Report, s *redact.Secrets) (*plans.Report, error) {
	if s.None() {
		return r, nil
	}
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
