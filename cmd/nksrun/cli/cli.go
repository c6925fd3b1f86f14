// Package cli is nksrun's command line: flags, wiring and exit codes. main
// only calls Run; tests call it in-process.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/pflag"

	"nksrun/engine/module"
	"nksrun/engine/plans"
	"nksrun/engine/redact"
	"nksrun/engine/runbook"
	"nksrun/modules"
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
}

var commands []command

func init() {
	commands = []command{
		{name: "plan", summary: "read facts and show what apply would change (changes nothing)", usage: "plan [flags] RUNBOOK...",
			example: "  nksrun plan runbooks/logrotate.yaml\n  nksrun plan runbooks/logrotate.yaml -o plan.json --format markdown > review.md\n  nksrun plan --detailed-exitcode runbooks/*.yaml   # exit 2 when drift is found",
			run:     runPlan, flags: planFlags},
		{name: "apply", summary: "plan, confirm, apply and verify; or apply a saved plan exactly", usage: "apply [flags] RUNBOOK... | PLAN.json",
			example: "  nksrun apply runbooks/logrotate.yaml\n  nksrun apply --auto-approve runbooks/logrotate.yaml   # cron\n  nksrun apply plan.json                                # what was reviewed, nothing else",
			run:     runApply, flags: applyFlags},
		{name: "show", summary: "render a saved plan", usage: "show [--format text|markdown|json] PLAN.json",
			example: "  nksrun show plan.json --format markdown", run: runShow, flags: showFlags},
		{name: "validate", summary: "check runbooks without a cluster", usage: "validate RUNBOOK...",
			example: "  nksrun validate runbooks/*.yaml", run: runValidate},
		{name: "list", summary: "list runbooks with their guide section and title", usage: "list [DIR]",
			example: "  nksrun list runbooks", run: runList},
		{name: "inventory", summary: "show the resolved nodes, their facts and SSH user", usage: "inventory [flags]",
			example: "  nksrun inventory --limit magnum.openstack.org/nodegroup=default-worker", run: runInventory, flags: inventoryFlags},
		{name: "doctor", summary: "run the diagnose part of every runbook and print one table", usage: "doctor [flags] [RUNBOOK...]",
			example: "  nksrun doctor\n  nksrun doctor --format json", run: runDoctor, flags: doctorFlags},
		{name: "cron", summary: "print a crontab line or a Kubernetes CronJob for a runbook", usage: "cron [flags] RUNBOOK",
			example: "  nksrun cron runbooks/logrotate.yaml --schedule '0 0 * * *'\n  nksrun cron runbooks/logrotate.yaml --kubernetes > cronjob.yaml", run: runCron, flags: cronFlags},
		{name: "version", summary: "print the version", usage: "version", run: func(_ context.Context, a *app, _ []string) error {
			fmt.Fprintf(a.stdout, "nksrun %s\n", Version)
			return nil
		}},
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

	// What the run did, for run_end and --metrics-file.
	runbooks []string
	plan     *plans.Plan
	report   *plans.Report
}

// Run runs nksrun with args (without the program name) and returns the exit code.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr, registry: modules.Registry(), secrets: &redact.Secrets{}}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		a.usage(stdout)
		if len(args) == 0 {
			return ExitUsage
		}
		return ExitOK
	}
	var cmd *command
	for i := range commands {
		if commands[i].name == args[0] {
			cmd = &commands[i]
		}
	}
	if cmd == nil {
		fmt.Fprintf(stderr, "nksrun: unknown command %q\n\n", args[0])
		a.usage(stderr)
		return ExitUsage
	}
	fs := pflag.NewFlagSet("nksrun "+cmd.name, pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SortFlags = false
	if cmd.flags != nil {
		cmd.flags(fs, &a.opts)
	}
	fs.Usage = func() {}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			a.commandHelp(stdout, cmd, fs)
			return ExitOK
		}
		fmt.Fprintf(stderr, "nksrun %s: %v\n(see nksrun %s --help)\n", cmd.name, err, cmd.name)
		return ExitUsage
	}
	// The event log exists before anything else happens, so that every run
	// that got past flag parsing, including one that finds the lock held,
	// leaves run_start and run_end in --log-file.
	if fs.Lookup("log-format") != nil {
		l, err := newEventLog(a.opts.logFormat, a.opts.logFile, stderr, a.secrets)
		if err != nil {
			return a.exit(cmd, err)
		}
		a.log = l
		a.log.start(cmd.name)
	}
	err := cmd.run(ctx, a, fs.Args())
	code := a.exit(cmd, err)
	a.finish(cmd.name, code, err)
	return code
}

// exit prints err once, redacted, and maps it to an exit code.
func (a *app) exit(cmd *command, err error) int {
	if err == nil {
		return ExitOK
	}
	var ee exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintln(a.stderr, a.secrets.Redact(ee.msg))
		}
		return ee.code
	}
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(a.stderr, "nksrun %s: %s\n(see nksrun %s --help)\n", cmd.name, ue.msg, cmd.name)
		return ExitUsage
	}
	fmt.Fprintf(a.stderr, "nksrun %s: %s\n", cmd.name, a.secrets.Redact(err.Error()))
	return ExitError
}

func (a *app) usage(w io.Writer) {
	fmt.Fprintf(w, "nksrun %s: declarative runbooks for the NKS troubleshooting guide.\n\nUsage: nksrun COMMAND [flags] [args]\n\nCommands:\n", Version)
	for _, c := range commands {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'nksrun COMMAND --help' for flags and examples.\n")
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

// loadRunbooks loads and validates every runbook before any host is
// contacted; all errors of all files are reported together.
func (a *app) loadRunbooks(paths []string) ([]*runbook.Runbook, error) {
	if len(paths) == 0 {
		return nil, usageError{"no runbook given"}
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
	for _, rb := range rbs {
		fmt.Fprintf(a.stdout, "%s: ok (%s, guide §%s, %d step(s))\n", rb.Path, rb.Name, rb.Section, len(rb.Steps))
	}
	return nil
}

func runList(_ context.Context, a *app, args []string) error {
	dir := "runbooks"
	if len(args) > 0 {
		dir = args[0]
	}
	paths, err := runbookFiles(dir)
	if err != nil {
		return err
	}
	rbs, err := a.loadRunbooks(paths)
	if err != nil {
		return err
	}
	sort.SliceStable(rbs, func(i, j int) bool {
		return runbook.VersionCompare(rbs[i].Section, rbs[j].Section) < 0
	})
	fmt.Fprintf(a.stdout, "%-8s %-26s %s\n", "SECTION", "RUNBOOK", "TITLE")
	for _, rb := range rbs {
		fmt.Fprintf(a.stdout, "§%-7s %-26s %s\n", rb.Section, rb.Path, rb.Title)
	}
	return nil
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
