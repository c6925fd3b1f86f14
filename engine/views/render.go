package views

import (
	"encoding/json"
	"fmt"
	"io"

	"go.yaml.in/yaml/v3"

	"nksrun/engine/plans"
	"nksrun/engine/redact"
)

// FormatYAML is the JSON data as YAML (same fields, same order).
const FormatYAML = "yaml"

// Options change how the human views look, never what they say.
type Options struct {
	// Color adds ANSI colours; the caller decides (a terminal, no NO_COLOR).
	Color bool
	// Verbose lists every node of a group instead of folding long lists.
	Verbose bool
}

// RenderPlan writes p in the given format with default options.
func RenderPlan(w io.Writer, p *plans.Plan, format string, secrets *redact.Secrets) error {
	return RenderPlanOpts(w, p, format, secrets, Options{})
}

// RenderPlanOpts writes p in the given format. Text, Markdown, JSON and YAML
// are views of the same Plan value. Secrets are redacted in a copy of the
// data, never in the rendered text: what a view prints about kinds,
// statuses, actions and counts comes from the plan itself, so no secret's
// value can change what a reviewer is told will happen. The human views
// also escape control characters that came from nodes and objects.
func RenderPlanOpts(w io.Writer, p *plans.Plan, format string, secrets *redact.Secrets, o Options) error {
	switch format {
	case FormatJSON, FormatYAML, FormatMarkdown, FormatText, "":
	default:
		return fmt.Errorf("unknown format %q (text, markdown, json, yaml)", format)
	}
	rp, err := redactedPlan(p, secrets)
	if err != nil {
		return err
	}
	switch format {
	case FormatJSON:
		return writeJSON(w, rp)
	case FormatYAML:
		return WriteYAML(w, rp)
	}
	if rp, err = escapedCopy(rp); err != nil {
		return err
	}
	if format == FormatMarkdown {
		return renderPlanMarkdown(w, rp, o)
	}
	return renderPlanText(w, rp, o)
}

// RenderReport writes an apply report with default options.
func RenderReport(w io.Writer, r *plans.Report, format string, secrets *redact.Secrets) error {
	return RenderReportOpts(w, r, format, secrets, Options{})
}

// RenderReportOpts writes an apply report: JSON or YAML data, or a recap
// grouped like the plan (text; Markdown uses the same recap in a code block).
func RenderReportOpts(w io.Writer, r *plans.Report, format string, secrets *redact.Secrets, o Options) error {
	r, err := redactedReport(r, secrets)
	if err != nil {
		return err
	}
	switch format {
	case FormatJSON:
		return writeJSON(w, r)
	case FormatYAML:
		return WriteYAML(w, r)
	}
	if r, err = escapedCopy(r); err != nil {
		return err
	}
	if format == FormatMarkdown {
		o.Color = false
		fmt.Fprint(w, "\n### nksrun apply recap\n\n```\n")
		if err := renderReportText(w, r, o); err != nil {
			return err
		}
		_, err := fmt.Fprint(w, "```\n")
		return err
	}
	return renderReportText(w, r, o)
}

// WriteJSON writes v as indented JSON (the data views of every command).
func WriteJSON(w io.Writer, v any) error { return writeJSON(w, v) }

// WriteYAML writes v as YAML with the field names and order of its JSON
// form, so the two machine formats never disagree.
func WriteYAML(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var n yaml.Node
	if err := yaml.Unmarshal(b, &n); err != nil {
		return err
	}
	blockStyle(&n)
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(&n); err != nil {
		return err
	}
	return enc.Close()
}

// blockStyle turns the flow style that JSON input parses to into YAML's
// block style, and keeps strings quoted only where YAML needs it.
func blockStyle(n *yaml.Node) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!str" {
		n.Style = 0
	} else {
		n.Style &^= yaml.FlowStyle
	}
	for _, c := range n.Content {
		blockStyle(c)
	}
}

// escapedCopy returns v with every string passed through Escape (a deep copy
// via JSON), or v itself when nothing needed escaping.
func escapedCopy[T any](v *T) (*T, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	esc, changed := escapeJSONStrings(b)
	if !changed {
		return v, nil
	}
	var c T
	if err := json.Unmarshal(esc, &c); err != nil {
		return nil, err
	}
	return &c, nil
}
