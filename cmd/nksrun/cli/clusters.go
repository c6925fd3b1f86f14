package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"

	"nksrun/engine"
	"nksrun/engine/module"
	"nksrun/engine/plans"
	"nksrun/engine/runbook"
	"nksrun/engine/views"
	"nksrun/inventory"
)

// clusterRun is one cluster's part of a many-cluster plan or doctor run.
type clusterRun struct {
	clusterRef
	err  error // the cluster could not be planned (API unreachable, kubeconfig entry broken, ...)
	plan *plans.Plan
	left []module.FindingInfo // what earlier rollouts left there
	code int                  // this cluster's exit code by the one-cluster rules
}

// planClusters plans rbs on every cluster at once, one goroutine each, each
// with its own inventory, facts and SSH connections. What the controller's
// CPU pays for is shared: one SSH dialer (one handshake admission window,
// one known_hosts) and one --forks gate across all clusters. A cluster that
// cannot be planned is that cluster's error; the others still run.
func (a *app) planClusters(ctx context.Context, refs []clusterRef, rbs []*runbook.Runbook, set map[string]string) ([]*clusterRun, error) {
	// Each cluster's settings: the run's, with its context's from the
	// config file. Clusters with the same SSH settings (all of them, unless
	// the config file sets some per context) share one dialer, so one
	// handshake admission window; all share the --forks gate.
	opts := make([]*options, len(refs))
	conns := make([]engine.Connector, len(refs))
	dialers := map[string]sshConnector{}
	for i, ref := range refs {
		o := a.opts
		if err := a.applyContextSettings(&o, a.fs, ref.context, false); err != nil {
			return nil, err
		}
		opts[i] = &o
		if !needsSSH(rbs) {
			continue
		}
		key := strings.Join([]string{strings.Join(o.identities, "\x00"), o.knownHosts, o.jump}, "\x01")
		d, ok := dialers[key]
		if !ok {
			var err error
			if d, err = a.dialerFor(&o); err != nil {
				if a.cfg != nil && len(a.cfg.contexts[ref.context]) > 0 {
					return nil, fmt.Errorf("context %s (with its settings from %s): %w", ref.context, displayPath(a.cfg.path), err)
				}
				return nil, err
			}
			defer d.d.Close()
			dialers[key] = d
		}
		conns[i] = d
	}
	gate := make(chan struct{}, a.opts.forks)
	runs := make([]*clusterRun, len(refs))
	var wg sync.WaitGroup
	for i, ref := range refs {
		r := &clusterRun{clusterRef: ref}
		runs[i] = r
		o, conn := opts[i], conns[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				// One cluster's bug is that cluster's error, never the run's.
				if v := recover(); v != nil {
					r.err = fmt.Errorf("internal error: %v", v)
				}
			}()
			r.err = a.planCluster(ctx, r, o, rbs, set, conn, gate)
		}()
	}
	wg.Wait()
	a.log.done()
	return runs, nil
}

func (a *app) planCluster(ctx context.Context, r *clusterRun, o *options, rbs []*runbook.Runbook, set map[string]string, conn engine.Connector, gate chan struct{}) error {
	if r.problem != "" {
		return errors.New(r.problem)
	}
	cluster, err := connectCluster(a.opts.kubeconfig, r.context)
	if err != nil {
		return err
	}
	hosts, err := inventory.FromCluster(ctx, cluster.Clientset)
	if err != nil {
		return err
	}
	if hosts, err = a.selectHostsFor(o, hosts); err != nil {
		return err
	}
	a.log.expectMore(expectedTargets(rbs, len(hosts)))
	name := r.context
	eng := engine.New(engine.Options{
		Registry:        a.registry,
		Connector:       conn,
		Cluster:         cluster,
		Hosts:           hosts,
		Forks:           a.opts.forks,
		Gate:            gate,
		ClosePlanned:    true, // plan and doctor only
		IncludeNotReady: a.opts.includeNotReady,
		MaxFailures:     a.opts.maxFailures,
		Secrets:         a.secrets,
		Observer: func(ev engine.Event) {
			ev.Cluster = name
			a.log.event(ev)
		},
		Version: version(),
	})
	defer eng.Close()
	plan, err := eng.Plan(ctx, rbs, set)
	if err != nil {
		return err
	}
	absPlanPaths(plan)
	r.plan = plan
	r.left = a.leftoversOf(ctx, cluster, "cluster "+name+": ")
	return nil
}

// planCode is one cluster's plan exit code by the one-cluster rules.
func planCode(r *clusterRun, detailed bool) int {
	switch {
	case r.err != nil || r.plan == nil || r.plan.HasErrors():
		return ExitError
	case detailed && (r.plan.HasChanges() || len(r.left) > 0):
		return ExitChanges
	}
	return ExitOK
}

// worstExit combines per-cluster exit codes: an error anywhere (1) beats
// pending changes or problems found (2), which beat nothing to do (0).
func worstExit(codes []int) int {
	worst := ExitOK
	for _, c := range codes {
		switch {
		case c == ExitError || worst == ExitError:
			worst = ExitError
		case c != ExitOK:
			worst = c
		}
	}
	return worst
}

// clusterNames lists the contexts of runs whose code is code.
func clusterNames(runs []*clusterRun, code int) string {
	var out []string
	for _, r := range runs {
		if r.code == code {
			out = append(out, r.context)
		}
	}
	return strings.Join(out, ", ")
}

// planEveryCluster is what plan and doctor over several clusters share:
// load and check the runbooks and params, resolve the contexts (all before
// contacting anything), then plan every cluster.
func (a *app) planEveryCluster(ctx context.Context, args []string) ([]*runbook.Runbook, []*clusterRun, error) {
	rbs, err := a.loadRunbooks(args)
	if err != nil {
		return nil, nil, err
	}
	set, err := a.sets(rbs)
	if err != nil {
		return nil, nil, err
	}
	refs, err := a.resolveContexts()
	if err != nil {
		return nil, nil, err
	}
	runs, err := a.planClusters(ctx, refs, rbs, set)
	if err != nil {
		return nil, nil, err
	}
	a.clusters = runs
	return rbs, runs, nil
}

// runPlanClusters is plan over several clusters: one report grouped by
// cluster. Nothing is saved or sealed: --out is refused with several
// clusters (a saved plan belongs to one cluster), so there is no checksum
// to pin either.
func runPlanClusters(ctx context.Context, a *app, args []string) error {
	ctx, cancel := a.withTimeout(ctx)
	defer cancel()
	_, runs, err := a.planEveryCluster(ctx, args)
	if err != nil {
		return err
	}
	cs := make([]views.ClusterPlan, len(runs))
	codes := make([]int, len(runs))
	for i, r := range runs {
		cs[i] = views.ClusterPlan{Context: r.context, Server: r.server, Plan: r.plan}
		if r.err != nil {
			cs[i].Error = r.err.Error()
		}
		if a.opts.format == views.FormatText || a.opts.format == views.FormatMarkdown {
			var b bytes.Buffer
			writeLeftovers(&b, r.left)
			cs[i].Notes = b.String()
		}
		r.code = planCode(r, a.opts.detailedExitcode)
		codes[i] = r.code
	}
	if err := views.RenderClusterPlans(a.stdout, cs, a.opts.format, a.secrets, a.viewOpts()); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return fmt.Errorf("plan interrupted: %w", context.Cause(ctx))
	}
	switch code := worstExit(codes); code {
	case ExitError:
		return exitError{ExitError, fmt.Sprintf("nksrun plan: cluster %s: not planned, or some targets failed or were unreachable (see the report)", clusterNames(runs, ExitError))}
	case ExitOK:
		return nil
	default:
		return exitError{code: code}
	}
}

// doctorCluster is one cluster's part of doctor's data view.
type doctorCluster struct {
	Context string      `json:"context"`
	Server  string      `json:"server,omitempty"`
	Error   string      `json:"error,omitempty"`
	Report  []doctorRow `json:"report,omitempty"`
}

// doctorTotals add up a many-cluster doctor run.
type doctorTotals struct {
	Clusters int `json:"clusters"`
	Errors   int `json:"errors"`     // clusters not diagnosed
	Found    int `json:"found"`      // clusters with a problem found (or left by earlier runs)
	Clean    int `json:"no_problem"` // clusters diagnosed without a problem found
}

// doctorCode is one cluster's doctor exit code by the one-cluster rules: an
// error only when the cluster could not be diagnosed (a row "error" is a
// diagnosis), 2 for a problem found with --detailed-exitcode.
func doctorCode(err error, rows []doctorRow, left int, detailed bool) int {
	if err != nil {
		return ExitError
	}
	if detailed && (left > 0 || foundAny(rows)) {
		return ExitChanges
	}
	return ExitOK
}

func foundAny(rows []doctorRow) bool {
	for _, r := range rows {
		if r.Status == "found" {
			return true
		}
	}
	return false
}

// runDoctorClusters is doctor over several clusters: one table per
// cluster, then a summary; the exit code is the worst cluster's.
func runDoctorClusters(ctx context.Context, a *app, args []string) error {
	ctx, cancel := a.withTimeout(ctx)
	defer cancel()
	rbs, runs, err := a.planEveryCluster(ctx, args)
	if err != nil {
		return err
	}
	out := make([]doctorCluster, len(runs))
	codes := make([]int, len(runs))
	var tot doctorTotals
	tot.Clusters = len(runs)
	for i, r := range runs {
		out[i] = doctorCluster{Context: r.context, Server: r.server}
		if r.err != nil {
			out[i].Error = a.secrets.Redact(r.err.Error())
		} else {
			rows := make([]doctorRow, 0, len(r.plan.Runbooks))
			for j, rp := range r.plan.Runbooks {
				rows = append(rows, diagnose(rp, a.fixCommand(rbs[j].Path, r.context)))
			}
			sort.SliceStable(rows, func(i, j int) bool { return runbook.VersionCompare(rows[i].Section, rows[j].Section) < 0 })
			out[i].Report = rows
		}
		r.code = doctorCode(r.err, out[i].Report, len(r.left), a.opts.detailedExitcode)
		codes[i] = r.code
		switch {
		case r.err != nil:
			tot.Errors++
		case len(r.left) > 0 || foundAny(out[i].Report):
			tot.Found++
		default:
			tot.Clean++
		}
	}
	w := engineWriter(a)
	switch a.opts.format {
	case views.FormatJSON:
		err = views.WriteJSON(w, map[string]any{"clusters": out, "totals": tot})
	case views.FormatYAML:
		err = views.WriteYAML(w, map[string]any{"clusters": out, "totals": tot})
	default:
		err = a.renderDoctorClusters(w, out, runs, tot)
	}
	if err != nil {
		return err
	}
	if ctx.Err() != nil {
		return fmt.Errorf("doctor interrupted: %w", context.Cause(ctx))
	}
	switch code := worstExit(codes); code {
	case ExitError:
		return exitError{ExitError, fmt.Sprintf("nksrun doctor: cluster %s: could not be diagnosed (see the report)", clusterNames(runs, ExitError))}
	case ExitOK:
		return nil
	default:
		return exitError{code: code}
	}
}

// renderDoctorClusters is the text and Markdown view: one section per
// cluster, each today's doctor table, then the summary.
func (a *app) renderDoctorClusters(w io.Writer, out []doctorCluster, runs []*clusterRun, tot doctorTotals) error {
	md := a.opts.format == views.FormatMarkdown
	for i, c := range out {
		if i > 0 {
			fmt.Fprintln(w)
		}
		if md {
			head := "# Cluster `" + strings.ReplaceAll(c.Context, "`", "'") + "`"
			if c.Server != "" {
				head += " (" + mdCell(views.ServerHost(c.Server)) + ")"
			}
			fmt.Fprintf(w, "%s\n\n", head)
		} else {
			head := "=== cluster " + cell(c.Context)
			if c.Server != "" {
				head += " (" + cell(views.ServerHost(c.Server)) + ")"
			}
			fmt.Fprintf(w, "%s ===\n\n", head)
		}
		if c.Error != "" {
			if md {
				fmt.Fprintf(w, "**error:** %s\n", mdCell(c.Error))
			} else {
				fmt.Fprintf(w, "error: %s\n", cell(c.Error))
			}
			continue
		}
		if err := a.renderDoctorTo(w, c.Report); err != nil {
			return err
		}
		writeLeftovers(w, runs[i].left)
	}
	line := fmt.Sprintf("Clusters: %d with a problem found, %d with none, %d not diagnosed (of %d).", tot.Found, tot.Clean, tot.Errors, tot.Clusters)
	if md {
		_, err := fmt.Fprintf(w, "\n# All clusters\n\n**%s**\n", line)
		return err
	}
	_, err := fmt.Fprintf(w, "\n=== all clusters ===\n%s\n", line)
	return err
}
