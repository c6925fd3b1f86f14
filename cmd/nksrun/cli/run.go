package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"nksrun/engine"
	"nksrun/engine/module"
	"nksrun/engine/planfile"
	"nksrun/engine/plans"
	"nksrun/engine/redact"
	"nksrun/engine/runbook"
	"nksrun/engine/transport"
	"nksrun/engine/views"
	"nksrun/inventory"
)

// session is what plan/apply/doctor need: the cluster (if any), the
// inventory and the engine.
type session struct {
	cluster *module.Cluster
	hosts   []inventory.Host
	engine  *engine.Engine
}

func (s *session) close() {
	if s.engine != nil {
		s.engine.Close()
	}
}

// needsCluster reports whether any runbook reads or changes the cluster.
func needsCluster(rbs []*runbook.Runbook) bool {
	for _, rb := range rbs {
		if rb.HasScope(module.ScopeCluster) {
			return true
		}
		for _, f := range rb.Facts {
			if f.K8s != nil {
				return true
			}
		}
	}
	return false
}

func needsSSH(rbs []*runbook.Runbook) bool {
	for _, rb := range rbs {
		if rb.HasScope(module.ScopeNode) {
			return true
		}
	}
	return false
}

// open resolves the cluster, the inventory and the SSH transport.
func (a *app) open(ctx context.Context, wantCluster, wantSSH bool) (*session, error) {
	s := &session{}
	o := &a.opts
	cluster, err := connectCluster(o.kubeconfig, o.kubeContext())
	switch {
	case err == nil:
		s.cluster = cluster
	case errors.Is(err, errNoCluster) && o.inventory != "" && !wantCluster:
		// A static inventory works without a cluster.
	default:
		return nil, err
	}
	if o.inventory != "" {
		s.hosts, err = inventory.FromFile(o.inventory)
	} else {
		s.hosts, err = inventory.FromCluster(ctx, s.cluster.Clientset)
	}
	if err != nil {
		return nil, err
	}
	if s.hosts, err = a.selectHosts(s.hosts); err != nil {
		return nil, err
	}
	var conn engine.Connector
	if wantSSH {
		if conn, err = a.dialer(); err != nil {
			return nil, err
		}
	}
	if a.log == nil {
		if a.log, err = newEventLog(o.logFormat, o.logFile, a.stderr, a.secrets); err != nil {
			return nil, err
		}
	}
	s.engine = engine.New(engine.Options{
		Registry:        a.registry,
		Connector:       conn,
		Cluster:         s.cluster,
		Hosts:           s.hosts,
		Forks:           o.forks,
		IncludeNotReady: o.includeNotReady,
		MaxFailures:     o.maxFailures,
		Secrets:         a.secrets,
		Observer:        a.log.event,
		Version:         version(),
		ClosePlanned:    a.planOnly,
	})
	return s, nil
}

// selectHosts applies --limit, --selector, --port and --user to an inventory.
func (a *app) selectHosts(hosts []inventory.Host) ([]inventory.Host, error) {
	return a.selectHostsFor(&a.opts, hosts)
}

// selectHostsFor is selectHosts with o's settings (a cluster's, in a
// many-cluster run).
func (a *app) selectHostsFor(o *options, hosts []inventory.Host) ([]inventory.Host, error) {
	hosts, err := selectHosts(hosts, o.limit, o.selector)
	if err != nil {
		return nil, err
	}
	// --port (or NKSRUN_PORT, the config file, ~/.ssh/config) sets the
	// nodes' port; a static inventory's own ports give way only to the flag.
	if o.port > 0 && (o.inventory == "" || a.fs.Changed("port")) {
		for i := range hosts {
			hosts[i].Port = o.port
		}
	}
	if o.user != "" {
		for i := range hosts {
			hosts[i].User = o.user
			hosts[i].Facts["user"] = o.user
		}
	}
	return hosts, nil
}

// dialer is the run's SSH transport. One serves every cluster of a run:
// its handshake admission and known_hosts are the process's, not per cluster.
func (a *app) dialer() (sshConnector, error) { return a.dialerFor(&a.opts) }

// dialerFor is dialer with o's settings.
func (a *app) dialerFor(o *options) (sshConnector, error) {
	policy, err := transport.ParseHostKeyPolicy(o.hostKeyPolicy)
	if err != nil {
		return sshConnector{}, usageError{err.Error()}
	}
	maxOut, err := transport.ParseSize(o.maxOutput)
	if err != nil || maxOut <= 0 {
		return sshConnector{}, usageError{fmt.Sprintf("--max-output %q: want a size like 16MiB", o.maxOutput)}
	}
	d, err := transport.NewDialer(transport.Config{
		MaxOutput:        maxOut,
		Identities:       o.identities,
		UseAgent:         os.Getenv("SSH_AUTH_SOCK") != "",
		KnownHosts:       o.knownHosts,
		Policy:           policy,
		Jump:             o.jump,
		DialTimeout:      o.connectTO,
		HandshakeTimeout: o.connectTO,
		CommandTimeout:   o.commandTO,
		RootShell:        o.rootShell, // apply's flag; plan and doctor leave it false
		Warn:             func(msg string) { fmt.Fprintln(a.stderr, "WARNING: "+msg) },
	})
	if err != nil {
		return sshConnector{}, err
	}
	return sshConnector{d}, nil
}

// sshConnector adapts the transport to the engine.
type sshConnector struct{ d *transport.Dialer }

func (c sshConnector) Connect(ctx context.Context, h inventory.Host) (module.Runner, error) {
	if h.User == "" {
		os, _ := h.Facts["osImage"].(string)
		return nil, fmt.Errorf("node %s: no SSH user known for OS image %q: pass --user", h.Name, os)
	}
	if h.Address == "" {
		return nil, fmt.Errorf("node %s has no InternalIP", h.Name)
	}
	conn, err := c.d.Dial(ctx, transport.Host{Name: h.Name, Address: h.Address, User: h.User, Port: h.Port})
	if err != nil {
		return nil, err
	}
	return conn, nil
}

// planRunbooks is what plan and doctor share: load and validate every
// runbook (before any host), resolve the cluster, inventory and SSH, plan.
func (a *app) planRunbooks(ctx context.Context, args []string) ([]*runbook.Runbook, *plans.Plan, error) {
	rbs, err := a.loadRunbooks(args)
	if err != nil {
		return nil, nil, err
	}
	set, err := a.sets(rbs)
	if err != nil {
		return nil, nil, err
	}
	a.planOnly = true
	s, err := a.open(ctx, needsCluster(rbs), needsSSH(rbs))
	if err != nil {
		return nil, nil, err
	}
	a.deferClose(s.close)
	a.log.expect(expectedTargets(rbs, len(s.hosts)))
	plan, err := s.engine.Plan(ctx, rbs, set)
	a.log.done()
	return rbs, plan, err
}

// expectedTargets is how many targets a plan of rbs has: each node for a
// runbook with node steps, the cluster for one with cluster steps.
func expectedTargets(rbs []*runbook.Runbook, hosts int) int {
	n := 0
	for _, rb := range rbs {
		if rb.HasScope(module.ScopeNode) {
			n += hosts
		}
		if rb.HasScope(module.ScopeCluster) {
			n++
		}
	}
	return n
}

// viewOpts: colour only on a terminal and without NO_COLOR (no-color.org)
// or TERM=dumb; -v lists every node.
func (a *app) viewOpts() views.Options {
	color := isTerminal(a.stdout) && os.Getenv("NO_COLOR") == "" && os.Getenv("TERM") != "dumb"
	return views.Options{Color: color, Verbose: a.opts.verbose}
}

func runPlan(ctx context.Context, a *app, args []string) error {
	if a.opts.many() {
		return runPlanClusters(ctx, a, args)
	}
	if a.opts.out != "" {
		// Fail before contacting anything when the plan cannot be saved.
		if st, err := os.Stat(filepath.Dir(a.opts.out)); err != nil || !st.IsDir() {
			return fmt.Errorf("--out %s: directory %s does not exist", a.opts.out, filepath.Dir(a.opts.out))
		}
		if st, err := os.Stat(a.opts.out); err == nil && st.IsDir() {
			return usageError{fmt.Sprintf("--out %s is a directory; want a file name", a.opts.out)}
		}
	}
	signer, err := a.planSigner()
	if err != nil {
		return err
	}
	if signer != nil {
		defer signer.Close()
	}
	ctx, cancel := a.withTimeout(ctx)
	defer cancel()
	_, plan, err := a.planRunbooks(ctx, args)
	if err != nil {
		return err
	}
	a.plan = plan
	absPlanPaths(plan)
	if err := planfile.Seal(plan); err != nil {
		return err
	}
	if a.opts.out != "" {
		data, err := writePlan(a.opts.out, plan, a.secrets)
		if err != nil {
			return err
		}
		if err := a.signSavedPlan(signer, a.opts.out, data); err != nil {
			return err
		}
	}
	if err := views.RenderPlanOpts(a.stdout, plan, a.opts.format, a.secrets, a.viewOpts()); err != nil {
		return err
	}
	var left []module.FindingInfo
	if a.opts.format != views.FormatJSON {
		left = a.leftovers(ctx)
		writeLeftovers(a.stdout, left)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("plan interrupted: %w", context.Cause(ctx))
	}
	if plan.HasErrors() {
		return exitError{ExitError, "nksrun plan: some targets failed or were unreachable (see the plan)"}
	}
	if a.opts.detailedExitcode && (plan.HasChanges() || len(left) > 0) {
		return exitError{code: ExitChanges}
	}
	return nil
}

// absPlanPaths records runbook paths as absolute paths, so that applying
// the saved plan from another directory resolves the runbook's files the same.
func absPlanPaths(p *plans.Plan) {
	for i := range p.Runbooks {
		if ap, err := filepath.Abs(p.Runbooks[i].Path); err == nil {
			p.Runbooks[i].Path = ap
		}
	}
}

// writePlan saves a plan atomically (temp file + rename), redacted, and
// returns the bytes written (what --sign-key signs).
func writePlan(path string, p *plans.Plan, secrets *redact.Secrets) ([]byte, error) {
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(views.RedactJSON(b, secrets), b) {
		return nil, errors.New("refusing to save the plan: it would contain secret values (a step's parameters carry a secret param; pass secrets as file paths or env var names)")
	}
	b = append(b, '\n')
	tmp, err := os.CreateTemp(filepath.Dir(path), ".nksrun-plan-*")
	if err != nil {
		return nil, fmt.Errorf("saving plan: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("saving plan: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("saving plan: %w", err)
	}
	return b, os.Rename(tmp.Name(), path)
}

func isPlanFile(args []string) bool {
	return len(args) == 1 && strings.HasSuffix(args[0], ".json")
}

func runApply(ctx context.Context, a *app, args []string) error {
	if len(args) == 0 {
		return usageError{"no runbook or plan given"}
	}
	var rbs []*runbook.Runbook
	var saved *plans.Plan
	if isPlanFile(args) {
		var err error
		if saved, err = a.readSavedPlan(args[0]); err != nil {
			return err
		}
		for i := range saved.Runbooks {
			rp := &saved.Runbooks[i]
			rb, err := engine.ParsePlanRunbook(rp, a.registry)
			if err != nil {
				return fmt.Errorf("%s: runbook %s: %w", args[0], rp.Name, err)
			}
			rbs = append(rbs, rb)
			a.runbooks = append(a.runbooks, rp.Name)
		}
		a.plan = saved
	} else {
		if err := a.requireSavedPlan(); err != nil {
			return err
		}
		var err error
		if rbs, err = a.loadRunbooks(args); err != nil {
			return err
		}
	}
	set, err := a.sets(rbs)
	if err != nil {
		return err
	}
	if saved != nil && len(a.opts.set)+len(a.opts.setFiles) > 0 {
		return usageError{"--set and --set-file do not apply to a saved plan: its params are fixed"}
	}
	if !a.opts.autoApprove && !isTerminal(a.stdin) {
		return exitError{ExitError, "nksrun apply: no terminal to confirm on; pass --auto-approve (cron, CI) to apply without asking"}
	}
	if !a.opts.noLock {
		unlock, err := acquireLocks(a.opts.lockFile, a.runbooks)
		if err != nil {
			return err
		}
		defer unlock()
	}
	ctx, cancel := a.withTimeout(ctx)
	defer cancel()
	s, err := a.open(ctx, needsCluster(rbs), needsSSH(rbs))
	if err != nil {
		return err
	}
	a.deferClose(s.close)
	plan := saved
	var rep *plans.Report
	if plan == nil {
		if a.opts.autoApprove && s.engine.Streams(rbs) {
			// No review between plan and apply, and more nodes than
			// --forks: each node is applied as soon as it is planned, so
			// no more than --forks connections are held (see
			// engine.PlanAndApply).
			a.log.expect(2 * expectedTargets(rbs, len(s.hosts)))
			plan, rep, err = s.engine.PlanAndApply(ctx, rbs, set)
		} else {
			a.log.expect(expectedTargets(rbs, len(s.hosts)))
			plan, err = s.engine.Plan(ctx, rbs, set)
		}
		a.log.done()
		if err != nil {
			return err
		}
		absPlanPaths(plan)
		a.plan = plan
	}
	format, vo := a.opts.format, a.viewOpts()
	if format == views.FormatText || format == views.FormatMarkdown {
		if err := views.RenderPlanOpts(a.stdout, plan, format, a.secrets, vo); err != nil {
			return err
		}
	}
	if rep == nil {
		if rep, err = a.applyPlan(ctx, s, plan, saved != nil); err != nil {
			return err
		}
	}
	a.report = rep
	if err := views.RenderReportOpts(a.stdout, rep, format, a.secrets, vo); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return fmt.Errorf("apply interrupted: %w", context.Cause(ctx))
	}
	if n := countStatus(rep, plans.StatusStale); n > 0 {
		return exitError{ExitError, fmt.Sprintf("nksrun apply: %d target(s) refused as stale (changed since the plan; see the recap); the others were applied. Make a new plan for them.", n)}
	}
	if rep.Failed() || plan.HasErrors() {
		return exitError{ExitError, "nksrun apply: some targets failed (see the recap)"}
	}
	return nil
}

// applyPlan re-checks a saved plan, asks for confirmation unless
// --auto-approve, and applies plan.
func (a *app) applyPlan(ctx context.Context, s *session, plan *plans.Plan, saved bool) (*plans.Report, error) {
	format, vo := a.opts.format, a.viewOpts()
	if ctx.Err() != nil {
		return nil, fmt.Errorf("interrupted before apply: %w", context.Cause(ctx))
	}
	var stale []engine.StaleTarget
	if saved && plan.HasChanges() {
		// Nothing in a plan file is trusted as an instruction: every
		// pending change is planned again from the plan's own runbook over
		// the node's facts as they are now. An edited plan is refused whole;
		// a target whose facts moved on is stale.
		var err error
		if stale, err = s.engine.Rederive(ctx, plan); err != nil {
			return nil, err
		}
		if engine.Stale(stale) > 0 && a.opts.onStale == "stop" {
			a.log.done()
			rep := engine.StoppedReport(plan, stale, time.Now())
			a.report = rep
			if err := views.RenderReportOpts(a.stdout, rep, format, a.secrets, vo); err != nil {
				return nil, err
			}
			return nil, exitError{ExitError, fmt.Sprintf("nksrun apply: %d target(s) changed since the plan; nothing was applied (--on-stale stop). Make a new plan.", engine.Stale(stale))}
		}
	}
	if plan.HasChanges() && !a.opts.autoApprove {
		ok, err := confirm(a.stdin, a.stderr)
		if err != nil || !ok {
			return nil, exitError{ExitError, "apply canceled; nothing was changed"}
		}
	}
	a.log.expect(planTargets(plan))
	rep, err := s.engine.Apply(ctx, plan, stale)
	a.log.done()
	return rep, err
}

func isTerminal(r any) bool {
	f, ok := r.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// openTTY is the terminal the prompt is written to; a variable for tests.
var openTTY = func() (io.WriteCloser, error) { return os.OpenFile("/dev/tty", os.O_WRONLY, 0) }

// confirm asks on the terminal: the prompt goes to /dev/tty (stderr when
// there is none), never to stdout, which may be redirected to a file
// (nksrun apply x > apply.log); the answer is read from stdin, a terminal.
func confirm(in io.Reader, fallback io.Writer) (bool, error) {
	return ask(in, fallback, "\nApply these changes? Only 'yes' is accepted: ")
}

// ask writes question to the terminal (see confirm) and reads a yes.
func ask(in io.Reader, fallback io.Writer, question string) (bool, error) {
	var out io.Writer = fallback
	if tty, err := openTTY(); err == nil {
		defer tty.Close()
		out = tty
	}
	fmt.Fprint(out, question)
	return readYes(in)
}

// readYes reads one line and accepts exactly "yes".
func readYes(in io.Reader) (bool, error) {
	if in == nil {
		return false, errors.New("no input")
	}
	line, err := bufio.NewReader(in).ReadString('\n')
	if err != nil && line == "" {
		return false, err
	}
	return strings.TrimSpace(line) == "yes", nil
}

func runShow(_ context.Context, a *app, args []string) error {
	if len(args) != 1 {
		return usageError{"want exactly one plan file"}
	}
	data, err := os.ReadFile(args[0])
	if err != nil {
		return err
	}
	plan, err := planfile.Read(data, 0, time.Now())
	if err != nil {
		return fmt.Errorf("%s: %w", args[0], err)
	}
	return views.RenderPlanOpts(a.stdout, plan, a.opts.format, a.secrets, a.viewOpts())
}

func runInventory(ctx context.Context, a *app, args []string) error {
	if len(args) > 0 {
		return usageError{"inventory takes no arguments"}
	}
	a.opts.logFormat = "text"
	s, err := a.open(ctx, false, false)
	if err != nil {
		return err
	}
	defer s.close()
	if done, err := a.writeData(s.hosts); done {
		return err
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tADDRESS\tUSER\tREADY\tOS\tKERNEL\tRUNTIME\tNODEGROUP")
	for _, h := range s.hosts {
		f := h.Facts
		// Node names and facts come from the cluster: escaped, one line each.
		fmt.Fprintln(tw, cell(h.Name)+"\t"+cell(h.Address)+"\t"+cell(h.User)+"\t"+cell(f["ready"])+"\t"+cell(f["osImage"])+"\t"+cell(f["kernel"])+"\t"+cell(f["runtime"])+"\t"+cell(f["nodegroup"]))
	}
	return tw.Flush()
}

func countStatus(r *plans.Report, status plans.Status) int {
	n := 0
	for _, t := range r.Targets {
		if t.Status == status {
			n++
		}
	}
	return n
}

// cell is a table cell from cluster data: control characters escaped, on
// one line, tabs (the column separator) shown as spaces.
func cell(v any) string {
	s := views.Escape(fmt.Sprint(v))
	return strings.NewReplacer("\n", `\n`, "\t", " ").Replace(s)
}

func planTargets(p *plans.Plan) int {
	n := 0
	for _, rp := range p.Runbooks {
		n += len(rp.Targets)
	}
	return n
}
