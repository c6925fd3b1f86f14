// Package cli is nksrun's command line: flags, wiring and exit codes. main
// only calls Run; tests call it in-process.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/pflag"

	"nksrun/engine/module"
	"nksrun/engine/plans"
	"nksrun/engine/redact"
	"nksrun/engine/runbook"
	"nksrun/engine/views"
	"nksrun/modules"
	"nksrun/runbooks"
)

// Version is set at build time (-ldflags "-X nksrun/cmd/nksrun/cli.Version=...").
var Version = "dev"

// Exit codes, documented in the README for cron users.
const (
	ExitOK      = 0 // success; plan --detailed-exitcode: no changes
	ExitError   = 1 // error, or any node failed
	ExitChanges = 2 // plan --detailed-exitcode: changes pending
	ExitLocked  = 3 // another nksrun run holds the lock
	ExitUsage   = 64
)

// usageError is a mistake in the command line.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// exitError carries an exit code for a condition that is not an error as such.
type exitError struct {
	code int
	msg  string
}

func (e exitError) Error() string { return e.msg }

type command struct {
	name    string
	summary string
	usage   string
	example string
	run     func(ctx context.Context, a *app, args []string) error
	flags   func(fs *pflag.FlagSet, o *options)
	// formats are the -o values the command accepts, the first the default.
	formats []string
	hidden  bool
}

var (
	fmtAll  = []string{views.FormatText, views.FormatMarkdown, views.FormatJSON, views.FormatYAML}
	fmtData = []string{views.FormatText, views.FormatJSON, views.FormatYAML}
)

var commands []command

func init() {
	commands = []command{
		{name: "plan", summary: "read facts and show what apply would change (changes nothing)", usage: "plan [flags] RUNBOOK...",
			example: "  nksrun plan logrotate                      # a built-in runbook, from any directory\n  nksrun plan logrotate --out plan.json -o markdown > review.md\n  nksrun plan --detailed-exitcode logrotate rpc-statd   # exit 2 when drift is found\n  nksrun plan ./my-runbooks/logrotate.yaml   # a local file\n  nksrun plan --context prod-a --context prod-b logrotate   # two clusters, one report\n  nksrun plan --all-contexts --detailed-exitcode logrotate  # every context of the kubeconfig",
			run:     runPlan, flags: planFlags, formats: fmtAll},
		{name: "apply", summary: "plan, confirm, apply and verify; or apply a saved plan exactly", usage: "apply [flags] RUNBOOK... | PLAN.json",
			example: "  nksrun apply logrotate\n  nksrun apply --auto-approve logrotate   # cron\n  nksrun apply plan.json                  # what was reviewed, nothing else",
			run:     runApply, flags: applyFlags, formats: fmtAll},
		{name: "show", summary: "render a saved plan", usage: "show [-o text|markdown|json|yaml] PLAN.json",
			example: "  nksrun show plan.json -o markdown", run: runShow, flags: showFlags, formats: fmtAll},
		{name: "validate", summary: "check runbooks without a cluster", usage: "validate RUNBOOK...",
			example: "  nksrun validate logrotate ./my-runbooks/*.yaml", run: runValidate, flags: validateFlags, formats: fmtData},
		{name: "list", summary: "list runbooks: guide section, title and where each comes from", usage: "list [DIR]",
			example: "  nksrun list\n  nksrun list --runbook-dir ./my-runbooks", run: runList, flags: validateFlags, formats: fmtData},
		{name: "cat", summary: "print a built-in runbook's YAML, or copy it and its files to a directory, to start a local variant", usage: "cat RUNBOOK [--to DIR]",
			example: "  nksrun cat logrotate > logrotate.yaml\n  nksrun cat logrotate --to ./my-runbooks && nksrun plan --runbook-dir ./my-runbooks logrotate", run: runCat, flags: catFlags},
		{name: "inventory", summary: "show the resolved nodes, their facts and SSH user", usage: "inventory [flags]",
			example: "  nksrun inventory -l magnum.openstack.org/nodegroup=default-worker", run: runInventory, flags: inventoryFlags, formats: fmtData},
		{name: "doctor", summary: "run the diagnose part of every runbook and print one table", usage: "doctor [flags] [RUNBOOK...]",
			example: "  nksrun doctor\n  nksrun doctor -o markdown > doctor.md\n  nksrun doctor --detailed-exitcode   # exit 2 when a problem is found\n  nksrun doctor --all-contexts        # every cluster of the kubeconfig, one table each", run: runDoctor, flags: doctorFlags, formats: fmtAll},
		{name: "cron", summary: "print a crontab line or a Kubernetes CronJob for a runbook", usage: "cron [flags] RUNBOOK",
			example: "  nksrun cron runbooks/logrotate.yaml --schedule '0 0 * * *'\n  nksrun cron runbooks/logrotate.yaml --kubernetes > cronjob.yaml", run: runCron, flags: cronFlags},
		{name: "config", summary: "show the effective settings and where each comes from", usage: "config view [-o text|json|yaml]",
			example: "  nksrun config view\n  nksrun config path", run: runConfig, flags: configFlags, formats: fmtData},
		{name: "completion", summary: "print a shell completion script (bash, zsh, fish)", usage: "completion bash|zsh|fish",
			example: "  source <(nksrun completion bash)\n  nksrun completion zsh > \"${fpath[1]}/_nksrun\"\n  nksrun completion fish > ~/.config/fish/completions/nksrun.fish", run: runCompletion},
		{name: "help", summary: "help for a command", usage: "help [COMMAND]", run: runHelp},
		{name: "version", summary: "print the version", usage: "version [-o text|json|yaml]", run: runVersion, flags: versionFlags, formats: fmtData},
		{name: "__complete", hidden: true, run: runComplete},
	}
}

// app is one invocation's I/O and shared state.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	opts           options
	registry       module.Registry
	secrets        *redact.Secrets
	log            *eventLog
	fs             *pflag.FlagSet
	cfg            *settings
	builtin        []string // paths of the built-in runbooks loaded

	// What the run did, for run_end and --metrics-file.
	runbooks []string
	plan     *plans.Plan
	report   *plans.Report

	// closeLater runs once the command's output is written and run_end
	// logged, so the report never waits on connection teardown.
	closeLater []func()
	// planOnly: this run plans and applies nothing (plan, doctor), so a
	// node's connection closes once the node is planned.
	planOnly bool
	clusters []*clusterRun // a many-cluster plan or doctor run
}

// deferClose registers f to run once the command has reported.
func (a *app) deferClose(f func()) { a.closeLater = append(a.closeLater, f) }

func (a *app) closeAll() {
	for i := len(a.closeLater) - 1; i >= 0; i-- {
		a.closeLater[i]()
	}
	a.closeLater = nil
}

func findCommand(name string) *command {
	for i := range commands {
		if commands[i].name == name {
			return &commands[i]
		}
	}
	return nil
}

func commandNames() []string {
	var out []string
	for _, c := range commands {
		if !c.hidden {
			out = append(out, c.name)
		}
	}
	return out
}

// newFlagSet is a command's flags, parsed without output: errors are
// printed once, by Run.
func newFlagSet(cmd *command, o *options) *pflag.FlagSet {
	fs := pflag.NewFlagSet("nksrun "+cmd.name, pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SortFlags = false
	if cmd.flags != nil {
		cmd.flags(fs, o)
	}
	fs.Usage = func() {}
	return fs
}

// Run runs nksrun with args (without the program name) and returns the exit code.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr, registry: modules.Registry(), secrets: &redact.Secrets{}}
	// The cluster of an earlier in-process run (tests) is not this run's.
	lastCluster.Store(nil)
	if len(args) == 0 {
		a.usage(stderr)
		return ExitUsage
	}
	switch args[0] {
	case "-h", "--help":
		a.usage(stdout)
		return ExitOK
	case "--version":
		fmt.Fprintln(stdout, versionString())
		return ExitOK
	}
	cmd := findCommand(args[0])
	if cmd == nil {
		msg := fmt.Sprintf("nksrun: unknown command %q", args[0])
		if s := suggest(args[0], commandNames()); s != "" {
			msg += fmt.Sprintf("; did you mean %q?", s)
		}
		fmt.Fprintf(stderr, "%s\n(see nksrun --help)\n", msg)
		return ExitUsage
	}
	if cmd.name == "__complete" {
		// The words to complete are not this command's flags.
		return a.exit(cmd, runComplete(ctx, a, args[1:]))
	}
	fs := newFlagSet(cmd, &a.opts)
	a.fs = fs
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			a.commandHelp(stdout, cmd, fs)
			return ExitOK
		}
		return a.exit(cmd, usageError{flagError(err, fs)})
	}
	// Settings from the environment and the config file fill the flags that
	// were not given; then every value is checked, before anything is
	// contacted or written.
	if err := a.configure(cmd, fs); err != nil {
		return a.exit(cmd, err)
	}
	if err := a.validate(cmd, fs); err != nil {
		return a.exit(cmd, err)
	}
	// The event log exists before anything else happens, so that every run
	// that got past flag parsing, including one that finds the lock held,
	// leaves run_start and run_end in --log-file.
	if fs.Lookup("log-format") != nil {
		l, err := newEventLog(a.opts.logFormat, a.opts.logFile, stderr, a.secrets)
		if err != nil {
			return a.exit(cmd, err)
		}
		l.verbose = a.opts.verbose
		a.log = l
		a.log.start(cmd.name)
	}
	err := cmd.run(ctx, a, fs.Args())
	code := a.exit(cmd, err)
	a.finish(cmd.name, code, err)
	a.closeAll()
	return code
}

// flagError is pflag's message with a suggestion for a mistyped flag.
func flagError(err error, fs *pflag.FlagSet) string {
	msg := err.Error()
	var name string
	if n, ok := strings.CutPrefix(msg, "unknown flag: --"); ok {
		name = n
	} else if n, ok := strings.CutPrefix(msg, "unknown shorthand flag: "); ok {
		// "'x' in -xyz"
		if len(n) >= 3 {
			name = n[1:2]
		}
	}
	if name == "" {
		return msg
	}
	var flags []string
	fs.VisitAll(func(f *pflag.Flag) {
		if !f.Hidden {
			flags = append(flags, f.Name)
		}
	})
	if s := suggest(name, flags); s != "" && len(name) > 1 {
		msg += fmt.Sprintf("; did you mean --%s?", s)
	}
	return msg
}

// exit prints err once, redacted, and maps it to an exit code.
func (a *app) exit(cmd *command, err error) int {
	if err == nil {
		return ExitOK
	}
	var ee exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintln(a.stderr, views.Escape(a.secrets.Redact(ee.msg)))
		}
		return ee.code
	}
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(a.stderr, "nksrun %s: %s\n(see nksrun help %s)\n", cmd.name, views.Escape(ue.msg), cmd.name)
		return ExitUsage
	}
	fmt.Fprintf(a.stderr, "nksrun %s: %s\n", cmd.name, views.Escape(dedupePrefixes(a.secrets.Redact(err.Error()))))
	return ExitError
}

// dedupePrefixes removes a context prefix that a wrapped error repeats
// ("gathering facts: gathering facts: exit 1"), so every error reads with
// one prefix.
func dedupePrefixes(msg string) string {
	parts := strings.Split(msg, ": ")
	out := parts[:0]
	for i, p := range parts {
		if i > 0 && p == parts[i-1] {
			continue
		}
		out = append(out, p)
	}
	return strings.Join(out, ": ")
}

func (a *app) usage(w io.Writer) {
	fmt.Fprintf(w, "nksrun %s: declarative runbooks for the NKS troubleshooting guide.\n\nUsage: nksrun COMMAND [flags] [args]\n\nCommands:\n", version())
	for _, c := range commands {
		if !c.hidden {
			fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
		}
	}
	fmt.Fprintf(w, "\nRunbooks are built in (nksrun list); a path or --runbook-dir uses local files.\nSettings: flags > NKSRUN_* environment > %s (nksrun config view).\n\nRun 'nksrun help COMMAND' for flags and examples; 'nksrun --version'.\n", displayPath(configPath()))
}

func (a *app) commandHelp(w io.Writer, c *command, fs *pflag.FlagSet) {
	fmt.Fprintf(w, "nksrun %s: %s\n\nUsage: nksrun %s\n", c.name, c.summary, c.usage)
	if u := fs.FlagUsages(); u != "" {
		fmt.Fprintf(w, "\nFlags:\n%s", u)
	}
	if c.example != "" {
		fmt.Fprintf(w, "\nExamples:\n%s\n", c.example)
	}
}

func runHelp(_ context.Context, a *app, args []string) error {
	if len(args) == 0 {
		a.usage(a.stdout)
		return nil
	}
	c := findCommand(args[0])
	if c == nil || c.hidden {
		msg := fmt.Sprintf("unknown command %q", args[0])
		if s := suggest(args[0], commandNames()); s != "" {
			msg += fmt.Sprintf("; did you mean %q?", s)
		}
		return usageError{msg}
	}
	var o options
	a.commandHelp(a.stdout, c, newFlagSet(c, &o))
	return nil
}

func versionFlags(fs *pflag.FlagSet, o *options) {
	outputFlag(fs, o, "text, json or yaml")
}

func runVersion(_ context.Context, a *app, args []string) error {
	if len(args) > 0 {
		return usageError{"version takes no arguments"}
	}
	switch a.opts.format {
	case views.FormatJSON:
		return views.WriteJSON(a.stdout, readBuildInfo())
	case views.FormatYAML:
		return views.WriteYAML(a.stdout, readBuildInfo())
	}
	fmt.Fprintln(a.stdout, versionString())
	return nil
}

// version is the version stamped in plans, logs and the User-Agent.
func version() string { return readBuildInfo().Version }

// loadRunbooks loads and validates every runbook before any host is
// contacted; all errors of all files are reported together.
func (a *app) loadRunbooks(paths []string) ([]*runbook.Runbook, error) {
	if len(paths) == 0 {
		return nil, usageError{"no runbook given (nksrun list shows the built-in ones)"}
	}
	refs, err := a.resolveRunbooks(paths)
	if err != nil {
		return nil, err
	}
	paths = paths[:0:0]
	for _, r := range refs {
		paths = append(paths, r.path)
		if r.origin == originBuiltin {
			a.builtin = append(a.builtin, r.path)
		}
	}
	var rbs []*runbook.Runbook
	var errs []string
	names := map[string]string{}
	for _, p := range paths {
		rb, err := runbook.Load(p, a.registry)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		if prev, ok := names[rb.Name]; ok {
			errs = append(errs, fmt.Sprintf("%s: runbook name %q already used by %s", p, rb.Name, prev))
			continue
		}
		// A runbook's files (src:) resolve relative to the runbook whatever
		// the working directory (cron runs in $HOME), also later, when a
		// saved plan is applied from elsewhere (see absPlanPaths).
		if d, err := filepath.Abs(rb.Dir); err == nil {
			rb.Dir = d
		}
		names[rb.Name] = p
		rbs = append(rbs, rb)
		a.runbooks = append(a.runbooks, rb.Name)
	}
	if len(errs) > 0 {
		return nil, errors.New("invalid runbook:\n" + strings.Join(errs, "\n"))
	}
	return rbs, nil
}

func runValidate(_ context.Context, a *app, args []string) error {
	rbs, err := a.loadRunbooks(args)
	if err != nil {
		return err
	}
	type row struct {
		Path    string `json:"path"`
		Name    string `json:"name"`
		Section string `json:"section"`
		Steps   int    `json:"steps"`
	}
	var rows []row
	for _, rb := range rbs {
		p := rb.Path
		if slices.Contains(a.builtin, p) {
			p = "built-in " + rb.Name // not the cache path it was written to
		}
		rows = append(rows, row{p, rb.Name, rb.Section, len(rb.Steps)})
	}
	if done, err := a.writeData(rows); done {
		return err
	}
	for _, r := range rows {
		fmt.Fprintf(a.stdout, "%s: ok (%s, guide §%s, %d step(s))\n", r.Path, r.Name, r.Section, r.Steps)
	}
	return nil
}

// writeData writes v as JSON or YAML when -o asks for it (done = true).
func (a *app) writeData(v any) (bool, error) {
	switch a.opts.format {
	case views.FormatJSON:
		return true, views.WriteJSON(a.stdout, v)
	case views.FormatYAML:
		return true, views.WriteYAML(a.stdout, v)
	}
	return false, nil
}

func runList(_ context.Context, a *app, args []string) error {
	if len(args) > 1 {
		return usageError{"list takes at most one directory"}
	}
	if len(args) == 1 {
		a.opts.runbookDir = args[0]
	}
	refs, err := a.allRunbooks()
	if err != nil {
		return err
	}
	type row struct {
		Section string `json:"section"`
		Name    string `json:"name"`
		Title   string `json:"title"`
		Origin  string `json:"origin"`
		Path    string `json:"path"`
	}
	var rows []row
	var errs []string
	for _, r := range refs {
		rb, err := runbook.Load(r.path, a.registry)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		rows = append(rows, row{rb.Section, rb.Name, rb.Title, r.origin, r.path})
	}
	sort.SliceStable(rows, func(i, j int) bool {
		return runbook.VersionCompare(rows[i].Section, rows[j].Section) < 0
	})
	if len(errs) > 0 {
		return errors.New("invalid runbook:\n" + strings.Join(errs, "\n"))
	}
	if done, err := a.writeData(rows); done {
		return err
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SECTION\tRUNBOOK\tFROM\tTITLE")
	for _, r := range rows {
		from := r.Origin
		if r.Origin != originBuiltin {
			from = displayPath(r.Path)
		}
		fmt.Fprintf(tw, "§%s\t%s\t%s\t%s\n", r.Section, r.Name, from, r.Title)
	}
	return tw.Flush()
}

func catFlags(fs *pflag.FlagSet, o *options) {
	fs.StringVar(&o.out, "to", "", "write NAME.yaml and the files it uses into this directory instead of printing the YAML")
}

func runCat(_ context.Context, a *app, args []string) error {
	if len(args) != 1 {
		return usageError{"want one built-in runbook name"}
	}
	name := strings.TrimSuffix(args[0], ".yaml")
	if a.opts.out != "" {
		written, err := writeBuiltin(name, a.opts.out)
		for _, w := range written {
			fmt.Fprintf(a.stdout, "wrote %s\n", w)
		}
		if err == nil {
			fmt.Fprintf(a.stdout, "nksrun plan --runbook-dir %s %s   # uses your copy\n", quoteArg(a.opts.out), name)
		}
		return err
	}
	b, err := fs.ReadFile(runbooks.FS(), name+".yaml")
	if err != nil {
		msg := fmt.Sprintf("no built-in runbook %q", args[0])
		if s := suggest(name, a.runbookNames()); s != "" {
			msg += fmt.Sprintf("; did you mean %q?", s)
		}
		return usageError{msg}
	}
	_, err = a.stdout.Write(b)
	return err
}

func runbookFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("listing runbooks: %w", err)
	}
	var out []string
	for _, e := range entries {
		if !e.IsDir() && (strings.HasSuffix(e.Name(), ".yaml") || strings.HasSuffix(e.Name(), ".yml")) {
			out = append(out, dir+string(os.PathSeparator)+e.Name())
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no runbooks (*.yaml) in %s", dir)
	}
	return out, nil
}

// withTimeout applies the run-wide --timeout.
func (a *app) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if a.opts.timeout > 0 {
		return context.WithTimeout(ctx, a.opts.timeout)
	}
	return context.WithCancel(ctx)
}
