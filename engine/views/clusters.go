package views

import (
	"bytes"
	"fmt"
	"io"
	"net/url"
	"strings"

	"nksrun/engine/plans"
	"nksrun/engine/redact"
)

// ClusterPlan is one cluster's part of a plan over several clusters
// (plan --context a --context b, --all-contexts): the kubeconfig context,
// its API server, and either the cluster's plan or why it has none.
type ClusterPlan struct {
	Context string      `json:"context"`
	Server  string      `json:"server,omitempty"`
	Error   string      `json:"error,omitempty"`
	Plan    *plans.Plan `json:"plan,omitempty"`
	// Notes is text the human views print after the cluster's plan (what
	// earlier rollouts left there); not part of the data.
	Notes string `json:"-"`
}

// ClusterTotals adds up a many-cluster plan.
type ClusterTotals struct {
	Clusters    int `json:"clusters"`
	Errors      int `json:"errors"`       // clusters not planned, or with failed or unreachable targets
	WithChanges int `json:"with_changes"` // clusters where apply would change something
	InSync      int `json:"in_sync"`      // clusters planned without errors and without changes
	// Steps and targets over every cluster's plan.
	Change   int            `json:"change"`
	Unknown  int            `json:"unknown"`
	NoOp     int            `json:"no_op"`
	Skip     int            `json:"skip"`
	Findings int            `json:"findings"`
	Targets  map[string]int `json:"targets"` // by status
}

// ClusterPlans is the machine form (JSON, YAML) of a many-cluster plan.
type ClusterPlans struct {
	Clusters []ClusterPlan `json:"clusters"`
	Totals   ClusterTotals `json:"totals"`
}

// Totals adds up cs.
func Totals(cs []ClusterPlan) ClusterTotals {
	t := ClusterTotals{Clusters: len(cs), Targets: map[string]int{}}
	for _, c := range cs {
		if c.Plan == nil {
			t.Errors++
			continue
		}
		switch {
		case c.Error != "" || c.Plan.HasErrors():
			t.Errors++
		case c.Plan.HasChanges():
			t.WithChanges++
		default:
			t.InSync++
		}
		n := c.Plan.Counts()
		t.Change += n.Change
		t.Unknown += n.Unknown
		t.NoOp += n.NoOp
		t.Skip += n.Skip
		t.Findings += n.Findings
		for _, rp := range c.Plan.Runbooks {
			for _, tp := range rp.Targets {
				t.Targets[string(tp.Status)]++
			}
		}
	}
	return t
}

// ServerHost is the host[:port] of an API server URL, for headings.
func ServerHost(server string) string {
	if u, err := url.Parse(server); err == nil && u.Host != "" {
		return u.Host
	}
	return server
}

// RenderClusterPlans writes a plan over several clusters: in text and
// Markdown one section per cluster, headed by its context and API server,
// each the same as a single-cluster plan, then one summary over all; in
// JSON and YAML a ClusterPlans object. Every plan is redacted and escaped
// as RenderPlanOpts does it.
func RenderClusterPlans(w io.Writer, cs []ClusterPlan, format string, secrets *redact.Secrets, o Options) error {
	switch format {
	case FormatJSON, FormatYAML, FormatMarkdown, FormatText, "":
	default:
		return fmt.Errorf("unknown format %q (text, markdown, json, yaml)", format)
	}
	if format == FormatJSON || format == FormatYAML {
		out := ClusterPlans{Clusters: make([]ClusterPlan, len(cs)), Totals: Totals(cs)}
		for i, c := range cs {
			c.Error = secrets.Redact(c.Error)
			if c.Plan != nil {
				rp, err := redactedPlan(c.Plan, secrets)
				if err != nil {
					return err
				}
				c.Plan = rp
			}
			out.Clusters[i] = c
		}
		if format == FormatJSON {
			return writeJSON(w, out)
		}
		return WriteYAML(w, out)
	}
	md := format == FormatMarkdown
	for i, c := range cs {
		if i > 0 {
			fmt.Fprintln(w)
		}
		head := "cluster " + oneLine(Escape(c.Context))
		if c.Server != "" {
			head += " (" + oneLine(Escape(ServerHost(c.Server))) + ")"
		}
		if md {
			head = "# Cluster `" + mdCode(c.Context) + "`"
			if c.Server != "" {
				head += " (" + mdEscape(ServerHost(c.Server)) + ")"
			}
			fmt.Fprintf(w, "%s\n\n", head)
		} else {
			fmt.Fprintf(w, "%s\n\n", o.paint(bold, "=== "+head+" ==="))
		}
		if c.Error != "" {
			msg := oneLine(Escape(secrets.Redact(c.Error)))
			if md {
				fmt.Fprintf(w, "**error:** %s\n", mdEscape(msg))
			} else {
				fmt.Fprintf(w, "%s %s\n", o.paint(red, "error:"), msg)
			}
		}
		if c.Plan != nil {
			var buf bytes.Buffer
			if err := RenderPlanOpts(&buf, c.Plan, format, secrets, o); err != nil {
				return fmt.Errorf("cluster %s: %w", c.Context, err)
			}
			if _, err := w.Write(buf.Bytes()); err != nil {
				return err
			}
		}
		if c.Notes != "" {
			fmt.Fprint(RedactingWriter(w, secrets), c.Notes)
		}
	}
	t := Totals(cs)
	if md {
		fmt.Fprintf(w, "\n# All clusters\n\n| cluster | server | status | to change | unknown | unchanged | findings | failed/unreachable |\n|---|---|---|---|---|---|---|---|\n")
		for _, c := range cs {
			status, n := clusterStatus(c), plans.Counts{}
			if c.Plan != nil {
				n = c.Plan.Counts()
			}
			fmt.Fprintf(w, "| `%s` | %s | %s | %d | %d | %d | %d | %d |\n", mdCode(c.Context), mdEscape(ServerHost(c.Server)), status, n.Change, n.Unknown, n.NoOp, n.Findings, n.Failed+n.Unreachable)
		}
		lines := strings.Split(totalsLine(t), "\n")
		for i := range lines {
			lines[i] = mdEscape(lines[i])
		}
		fmt.Fprintf(w, "\n**%s**\n%s\n", lines[0], strings.Join(lines[1:], "\n"))
		return nil
	}
	_, err := fmt.Fprintf(w, "\n%s\n%s\n", o.paint(bold, "=== all clusters ==="), totalsLine(t))
	return err
}

// clusterStatus is one word for a cluster in the summary.
func clusterStatus(c ClusterPlan) string {
	switch {
	case c.Plan == nil || c.Error != "":
		return "error"
	case c.Plan.HasErrors():
		return "failed targets"
	case c.Plan.HasChanges():
		return "changes"
	}
	return "in sync"
}

// totalsLine is the summary over all clusters, worded like a plan's.
func totalsLine(t ClusterTotals) string {
	n := 0
	for _, v := range t.Targets {
		n += v
	}
	return fmt.Sprintf("Clusters: %d with changes, %d in sync, %d with errors (of %d).\nPlan: %d to change, %d unknown until apply, %d unchanged, %d skipped, %s (steps on %s).\nTargets: %d with changes, %d in sync, %d skipped, %d unreachable, %d failed.",
		t.WithChanges, t.InSync, t.Errors, t.Clusters,
		t.Change, t.Unknown, t.NoOp, t.Skip, plural(t.Findings, "finding", "findings"), plural(n, "target", "targets"),
		t.Targets[string(plans.StatusChanges)], t.Targets[string(plans.StatusOK)], t.Targets[string(plans.StatusSkipped)]+t.Targets[string(plans.StatusNotRun)],
		t.Targets[string(plans.StatusUnreachable)], t.Targets[string(plans.StatusFailed)])
}
