package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"

	"nksrun/engine/module"
	"nksrun/engine/plans"
	"nksrun/engine/runbook"
	"nksrun/engine/shell"
	"nksrun/engine/views"

	"github.com/spf13/pflag"
)

// doctorRow is one runbook's diagnosis.
type doctorRow struct {
	Section  string   `json:"section"`
	Runbook  string   `json:"runbook"`
	Problem  string   `json:"problem"`
	Status   string   `json:"status"` // found | unknown | not found | not applicable | error
	Evidence []string `json:"evidence,omitempty"`
	Fix      string   `json:"fix,omitempty"`    // a command that runs as printed
	Advice   string   `json:"advice,omitempty"` // a finding's recommendation (prose)
}

// runDoctor plans every runbook (plans change nothing) and condenses each
// into one row: found when a plan has changes or findings, unknown when a
// diagnose step could not tell, not applicable when every target was
// skipped, not found otherwise. Rows are in guide order (§1 .. §13); with
// --detailed-exitcode a found problem exits 2.
func runDoctor(ctx context.Context, a *app, args []string) error {
	if len(args) == 0 {
		refs, err := a.allRunbooks()
		if err != nil {
			return err
		}
		for _, r := range refs {
			args = append(args, r.path)
		}
	}
	if a.opts.many() {
		return runDoctorClusters(ctx, a, args)
	}
	ctx, cancel := a.withTimeout(ctx)
	defer cancel()
	rbs, plan, err := a.planRunbooks(ctx, args)
	if err != nil {
		return err
	}
	rows := make([]doctorRow, 0, len(plan.Runbooks))
	for i, rp := range plan.Runbooks {
		rows = append(rows, diagnose(rp, a.fixCommand(rbs[i].Path, "")))
	}
	sort.SliceStable(rows, func(i, j int) bool { return runbook.VersionCompare(rows[i].Section, rows[j].Section) < 0 })
	if err := a.renderDoctor(rows); err != nil {
		return err
	}
	// What earlier rollouts left (held slots, nksrun's cordons) is pending
	// work too: after the table in the human views, counted by
	// --detailed-exitcode.
	left := a.leftovers(ctx)
	if a.opts.format == views.FormatText || a.opts.format == views.FormatMarkdown {
		writeLeftovers(engineWriter(a), left)
	}
	if a.opts.detailedExitcode {
		if len(left) > 0 {
			return exitError{code: ExitChanges}
		}
		for _, r := range rows {
			if r.Status == "found" {
				return exitError{code: ExitChanges}
			}
		}
	}
	return nil
}

func (a *app) renderDoctor(rows []doctorRow) error { return a.renderDoctorTo(engineWriter(a), rows) }

func (a *app) renderDoctorTo(w io.Writer, rows []doctorRow) error {
	switch a.opts.format {
	case views.FormatJSON:
		return views.WriteJSON(w, rows)
	case views.FormatYAML:
		return views.WriteYAML(w, rows)
	case views.FormatMarkdown:
		fmt.Fprint(w, "## nksrun doctor\n\n| section | problem | status | evidence | fix |\n|---|---|---|---|---|\n")
		for _, r := range rows {
			fix := ""
			if r.Fix != "" {
				fix = "`" + strings.ReplaceAll(r.Fix, "|", `\|`) + "`"
			}
			fmt.Fprintf(w, "| §%s | %s | %s | %s | %s |\n", mdCell(r.Section), mdCell(r.Problem), r.Status, mdCell(truncate(strings.Join(r.Evidence, "; "), 300)), fix)
		}
		for _, r := range rows {
			if r.Advice != "" {
				fmt.Fprintf(w, "\n- §%s: %s", mdCell(r.Section), mdCell(r.Advice))
			}
		}
		fmt.Fprintln(w)
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SECTION\tPROBLEM\tSTATUS\tEVIDENCE\tFIX")
	for _, r := range rows {
		fmt.Fprintf(tw, "§%s\t%s\t%s\t%s\t%s\n", r.Section, cell(r.Problem), r.Status, cell(truncate(strings.Join(r.Evidence, "; "), 100)), r.Fix)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range rows {
		if r.Advice != "" {
			fmt.Fprintf(w, "§%s: %s\n", r.Section, cell(r.Advice))
		}
	}
	return nil
}

func mdCell(s string) string {
	return strings.NewReplacer("|", `\|`, "<", "&lt;", ">", "&gt;").Replace(cell(s))
}

// fixCommand is `nksrun apply RUNBOOK` with the connection and selection
// flags this run was given, so it runs as printed (settings from the
// environment and config file apply to it as they did here). A built-in
// runbook is named; a file by its path. In a many-cluster run kubeContext
// is the cluster's context: apply takes one.
func (a *app) fixCommand(path, kubeContext string) string {
	parts := []string{"nksrun", "apply"}
	for _, name := range []string{"kubeconfig", "context", "inventory", "identity", "user", "port", "known-hosts", "host-key-policy", "jump", "limit", "selector", "include-not-ready", "runbook-dir"} {
		if name == "context" && kubeContext != "" {
			parts = append(parts, "--context", quoteArg(kubeContext))
			continue
		}
		f := a.fs.Lookup(name)
		if f == nil || !f.Changed {
			continue
		}
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			for _, v := range sv.GetSlice() {
				parts = append(parts, "--"+name, quoteArg(v))
			}
		} else if f.Value.Type() == "bool" {
			parts = append(parts, "--"+name)
		} else {
			parts = append(parts, "--"+name, quoteArg(f.Value.String()))
		}
	}
	return strings.Join(append(parts, quoteArg(a.runbookArg(path))), " ")
}

func diagnose(rp plans.RunbookPlan, fix string) doctorRow {
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
				if f.Recommendation != "" && row.Advice == "" {
					row.Advice = f.Recommendation
				}
			}
		}
	}
	switch {
	case len(row.Evidence) > errs:
		row.Status = "found"
		if hasChanges(rp) {
			row.Fix = fix
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

// engineWriter redacts like every other view.
func engineWriter(a *app) io.Writer { return views.RedactingWriter(a.stdout, a.secrets) }

// quoteArg quotes a word for a command line a person reads and runs: bare
// when it holds only characters no shell treats specially.
func quoteArg(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./:=@%+,-") == "" {
		return s
	}
	return shell.Quote(s)
}
