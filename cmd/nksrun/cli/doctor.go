package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"nksrun/engine/module"
	"nksrun/engine/plans"
	"nksrun/engine/views"
)

// doctorRow is one runbook's diagnosis.
type doctorRow struct {
	Section  string   `json:"section"`
	Runbook  string   `json:"runbook"`
	Problem  string   `json:"problem"`
	Status   string   `json:"status"` // found | unknown | not found | not applicable | error
	Evidence []string `json:"evidence,omitempty"`
	Fix      string   `json:"fix,omitempty"`
}

// runDoctor plans every runbook (plans change nothing) and condenses each
// into one row: found when a plan has changes or findings, unknown when a
// diagnose step could not tell, not applicable when every target was
// skipped, not found otherwise.
func runDoctor(ctx context.Context, a *app, args []string) error {
	if len(args) == 0 {
		paths, err := runbookFiles("runbooks")
		if err != nil {
			return usageError{err.Error() + "; pass runbook files or run from the nksrun checkout"}
		}
		args = paths
	}
	ctx, cancel := a.withTimeout(ctx)
	defer cancel()
	rbs, plan, err := a.planRunbooks(ctx, args)
	if err != nil {
		return err
	}
	rows := make([]doctorRow, 0, len(plan.Runbooks))
	for i, rp := range plan.Runbooks {
		rows = append(rows, diagnose(rp, rbs[i].Path))
	}
	if a.opts.format == views.FormatJSON {
		b, err := json.MarshalIndent(rows, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(engineWriter(a), "%s\n", b)
		return err
	}
	tw := tabwriter.NewWriter(engineWriter(a), 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SECTION\tPROBLEM\tSTATUS\tEVIDENCE\tFIX")
	for _, r := range rows {
		ev := strings.Join(r.Evidence, "; ")
		fmt.Fprintf(tw, "§%s\t%s\t%s\t%s\t%s\n", r.Section, r.Problem, r.Status, truncate(ev, 100), r.Fix)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	writeLeftovers(engineWriter(a), a.leftovers(ctx))
	return nil
}

// engineWriter redacts like every other view.
func engineWriter(a *app) io.Writer { return views.RedactingWriter(a.stdout, a.secrets) }

func diagnose(rp plans.RunbookPlan, path string) doctorRow {
	row := doctorRow{Section: rp.Section, Runbook: rp.Name, Problem: rp.Title}
	applicable, errs := false, 0
	var unknown []string
	for _, t := range rp.Targets {
		switch t.Status {
		case plans.StatusSkipped, plans.StatusNotRun:
			continue
		case plans.StatusFailed, plans.StatusUnreachable:
			errs++
			row.Evidence = append(row.Evidence, fmt.Sprintf("%s: %s", t.Name, t.Reason))
			continue
		}
		for _, st := range t.Steps {
			if st.Action != module.Skip {
				applicable = true
			}
			if st.Action == module.Change {
				row.Evidence = append(row.Evidence, fmt.Sprintf("%s: %s", t.Name, st.Summary))
			}
			if st.Action == module.Unknown && st.Module == "report" {
				// A diagnosis that cannot tell is not "not found".
				unknown = append(unknown, fmt.Sprintf("%s: %s (%s)", t.Name, st.Summary, st.Reason))
			}
			for _, f := range st.Findings {
				row.Evidence = append(row.Evidence, fmt.Sprintf("%s: %s", t.Name, f.Title))
				if f.Recommendation != "" && row.Fix == "" {
					row.Fix = f.Recommendation
				}
			}
		}
	}
	switch {
	case len(row.Evidence) > errs:
		row.Status = "found"
		if row.Fix == "" || hasChanges(rp) {
			row.Fix = "nksrun apply " + relPath(path)
		}
	case errs > 0:
		row.Status = "error"
	case len(unknown) > 0:
		row.Status, row.Evidence = "unknown", unknown
	case applicable:
		row.Status = "not found"
	default:
		row.Status = "not applicable"
	}
	return row
}

func hasChanges(rp plans.RunbookPlan) bool {
	for _, t := range rp.Targets {
		for _, s := range t.Steps {
			if s.Action == module.Change {
				return true
			}
		}
	}
	return false
}

func relPath(p string) string {
	if wd, err := os.Getwd(); err == nil {
		if r, err := filepath.Rel(wd, p); err == nil && !strings.HasPrefix(r, "..") {
			return r
		}
	}
	return p
}
