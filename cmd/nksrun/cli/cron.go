package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"nksrun/engine/runbook"
	"nksrun/engine/shell"
	"nksrun/engine/transport"
)

// cronFlags are plan/apply's connection, selection and run flags (passed on
// into the printed line or the CronJob's args) plus cron's own.
func cronFlags(fs *pflag.FlagSet, o *options) {
	o.flags = fs
	fs.StringVar(&o.schedule, "schedule", "", "cron schedule: 5 fields or @daily-style macro (default: daily at a time between 00:00 and 05:59 derived from the runbook's name)")
	fs.BoolVar(&o.kubernetes, "kubernetes", false, "print a Kubernetes CronJob (with ServiceAccount and RBAC) instead of a crontab line")
	fs.StringVar(&o.image, "image", "nksrun:latest", "container image for --kubernetes (built from cmd/nksrun/Dockerfile)")
	fs.StringVar(&o.namespace, "namespace", "nksrun", "namespace for --kubernetes")
	fs.StringArrayVar(&o.secretEnv, "secret-env", nil, "with --kubernetes: give the container this environment variable from the Secret nksrun-RUNBOOK-params (e.g. the variables dockerhub-ratelimit's username_env/password_env name); repeatable")
	clusterFlags(fs, o)
	sshFlags(fs, o)
	rootShellFlag(fs, o)
	// runFlags' flags, but --log-format and --log-file into cron's own
	// fields: they are for the printed line, and Run would otherwise open
	// the log and write cron's own run_start/run_end into it.
	fs.StringArrayVar(&o.set, "set", nil, "runbook param name=value for every run; repeatable (not for secret params: --set-file or NKSRUN_SET_<NAME>)")
	fs.StringArrayVar(&o.setFiles, "set-file", nil, "runbook param name=PATH, read by every run from that file; repeatable")
	fs.DurationVar(&o.timeout, "timeout", 0, "run-wide limit (default 1h for the crontab line, 55m for --kubernetes)")
	fs.IntVar(&o.maxFailures, "max-failures", 0, "stop starting new nodes once this many failed or were unreachable (0 = no limit)")
	fs.StringVar(&o.cronLogFormat, "log-format", "json", "log format of the runs: json or text")
	fs.StringVar(&o.cronLogFile, "log-file", "", "log file for the crontab line (default next to the lock, ~/.cache/nksrun/RUNBOOK.log)")
	fs.StringVar(&o.metricsFile, "metrics-file", "", "Prometheus textfile the runs write (runbooks may share one)")
	fs.StringVar(&o.lockFile, "lock-file", "", "lock for the crontab line (default one per runbook, ~/.cache/nksrun/RUNBOOK.lock)")
}

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// cronOwn are cron's own flags: never passed on.
var cronOwn = map[string]bool{"schedule": true, "kubernetes": true, "image": true, "namespace": true, "secret-env": true}

// cronHandled are flags cron writes into the line itself (with defaults or
// absolute paths), or takes apart (params).
var cronHandled = map[string]bool{"set": true, "set-file": true, "log-format": true, "log-file": true, "lock-file": true, "metrics-file": true, "timeout": true}

// pathFlags name local files: absolute in a crontab line (cron runs in
// $HOME); meaningless inside the CronJob's pod, which has its own.
var pathFlags = map[string]string{
	"kubeconfig":   "the CronJob uses its ServiceAccount (in-cluster config)",
	"context":      "the CronJob uses its ServiceAccount (in-cluster config)",
	"inventory":    "the CronJob's inventory is the cluster's nodes",
	"identity":     "the CronJob's key is the Secret nksrun-ssh",
	"known-hosts":  "the CronJob's known_hosts is the ConfigMap nksrun-known-hosts",
	"log-file":     "the CronJob logs to its pod's output",
	"lock-file":    "the CronJob's concurrencyPolicy Forbid is its lock",
	"metrics-file": "the CronJob's pod has no textfile collector",
}

// passThrough is every flag given on the command line that plan/apply
// take, as --name=value words (one per value of a repeatable flag), in the
// order the flags are defined. Paths are made absolute for a crontab line
// and refused for a CronJob.
func (a *app) passThrough() ([]string, error) {
	var out []string
	var err error
	a.opts.flags.Visit(func(f *pflag.Flag) {
		if err != nil || cronOwn[f.Name] {
			return
		}
		if why, ok := pathFlags[f.Name]; ok && a.opts.kubernetes {
			err = usageError{fmt.Sprintf("--%s does not apply to --kubernetes: %s", f.Name, why)}
			return
		}
		if cronHandled[f.Name] {
			return
		}
		_, isPath := pathFlags[f.Name]
		isPath = isPath && f.Name != "context"
		vals := []string{f.Value.String()}
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			vals = sv.GetSlice()
		}
		for _, v := range vals {
			if isPath {
				v = absPath(v)
			}
			if f.Value.Type() == "bool" && v == "true" {
				out = append(out, "--"+f.Name)
				continue
			}
			// --name=value: a value that starts with '-' stays a value.
			out = append(out, "--"+f.Name+"="+v)
		}
	})
	if err != nil {
		return nil, err
	}
	// What plan/apply would refuse, refused now rather than at 3 a.m.
	if _, perr := transport.ParseHostKeyPolicy(a.opts.hostKeyPolicy); perr != nil {
		return nil, usageError{"--host-key-policy: " + perr.Error()}
	}
	if a.opts.forks < 1 {
		return nil, usageError{fmt.Sprintf("--forks %d: want at least 1", a.opts.forks)}
	}
	return out, nil
}

// cronParams are the params for the printed line or CronJob, with secrets
// kept off it: --set of a secret param is refused; a secret from
// --set-file stays a file reference; one from the environment stays there.
type cronParams struct {
	words   []string // --set / --set-file words for the command line
	env     []string // secret params the run reads from NKSRUN_SET_<NAME> (crontab)
	secrets []string // secret params the CronJob takes from its Secret
}

func (a *app) cronParams(rb *runbook.Runbook) (cronParams, error) {
	var cp cronParams
	in, err := a.paramInputs([]*runbook.Runbook{rb})
	if err != nil {
		return cp, err
	}
	secret := secretParams([]*runbook.Runbook{rb})
	for _, name := range sortedKeys(in) {
		if secret[name] && in[name].flag {
			if a.opts.kubernetes {
				return cp, usageError{fmt.Sprintf("--set %s: %s is a secret param and would be in the CronJob's args for anyone who can read the CronJob: leave it out, the CronJob reads it from the Secret %s (secretKeyRef, see the template printed with the manifest); --set-file %s=PATH checks a value now without printing it", name, name, paramSecretName(rb), name)}
			}
			return cp, usageError{fmt.Sprintf("--set %s: %s is a secret param and would be in the crontab and in every run's command line (ps): use --set-file %s=PATH (a file only the cron user can read), or set %s in cron's environment", name, name, name, paramEnv(name))}
		}
	}
	// Check the params as the run will resolve them; for the CronJob a
	// secret that is not given here comes from its Secret at run time.
	check := map[string]string{}
	for name, v := range in {
		check[name] = v.value
	}
	var missing []string
	for _, name := range rb.SecretParams() {
		if a.opts.kubernetes {
			// Every secret param may come from the CronJob's Secret
			// (optional unless the runbook requires it).
			cp.secrets = append(cp.secrets, name)
		}
		if _, ok := in[name]; ok || !rb.Params[name].Required {
			continue
		}
		if a.opts.kubernetes {
			check[name] = placeholder(rb.Params[name].Type)
		} else {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		name := missing[0]
		return cp, usageError{fmt.Sprintf("runbook %s needs the secret param %s: give it with --set-file %s=PATH or %s in the environment (cron must have it too)", rb.Name, name, name, paramEnv(name))}
	}
	if _, err := rb.ResolveParams(check); err != nil {
		return cp, usageError{err.Error()}
	}
	for _, name := range sortedKeys(in) {
		v := in[name]
		switch {
		case secret[name] && a.opts.kubernetes:
			// From the Secret at run time; the value given here was only checked.
		case secret[name] && v.file != "":
			p := absPath(v.file)
			if fi, err := os.Stat(p); err == nil && fi.Mode().Perm()&0o077 != 0 {
				fmt.Fprintf(a.stderr, "WARNING: %s (secret param %s) is readable by group or others (mode %04o): chmod 600 it\n", p, name, fi.Mode().Perm())
			}
			cp.words = append(cp.words, "--set-file", name+"="+p)
		case secret[name]:
			cp.env = append(cp.env, name)
		case v.file != "" && !a.opts.kubernetes:
			cp.words = append(cp.words, "--set-file", name+"="+absPath(v.file))
		default:
			cp.words = append(cp.words, "--set", name+"="+v.value)
		}
	}
	return cp, nil
}

// placeholder is a value of a param type, to check the other params of a
// runbook whose secret comes from a Secret at run time.
func placeholder(typ string) string {
	switch typ {
	case "int":
		return "0"
	case "bool":
		return "false"
	case "list":
		return "[]"
	case "map":
		return "{}"
	}
	return "placeholder-secret"
}

// runCron prints a crontab line for a runbook (absolute paths, the
// runbook's lock, JSON logs, a run-wide timeout, every connection and
// selection flag given); with --kubernetes, a CronJob manifest (see
// cronjob.go).
func runCron(_ context.Context, a *app, args []string) error {
	if len(args) != 1 {
		return usageError{"want exactly one runbook"}
	}
	rbs, err := a.loadRunbooks(args)
	if err != nil {
		return err
	}
	rb := rbs[0]
	if a.opts.schedule == "" {
		a.opts.schedule = defaultSchedule(rb.Name)
	}
	if err := checkSchedule(a.opts.schedule, !a.opts.kubernetes); err != nil {
		return usageError{err.Error()}
	}
	for _, v := range a.opts.secretEnv {
		switch {
		case !a.opts.kubernetes:
			return usageError{"--secret-env is for --kubernetes: a crontab line's runs have cron's environment"}
		case !envNameRE.MatchString(v):
			return usageError{fmt.Sprintf("--secret-env %q: not an environment variable name", v)}
		case strings.HasPrefix(v, "NKSRUN_SET_"):
			return usageError{fmt.Sprintf("--secret-env %s: secret params get their variable by themselves", v)}
		}
	}
	if f := a.opts.cronLogFormat; f != "json" && f != "text" {
		return usageError{fmt.Sprintf("--log-format %q: want json or text", f)}
	}
	pass, err := a.passThrough()
	if err != nil {
		return err
	}
	params, err := a.cronParams(rb)
	if err != nil {
		return err
	}
	if a.opts.kubernetes {
		return a.printCronJob(rb, pass, params)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if r, err := filepath.EvalSymlinks(self); err == nil {
		self = r
	}
	logFile := absPath(a.opts.cronLogFile)
	lockFile := absPath(a.opts.lockFile)
	if logFile == "" || lockFile == "" {
		dir, err := defaultLockDir()
		if err != nil {
			return fmt.Errorf("%w (or --log-file)", err)
		}
		if logFile == "" {
			logFile = filepath.Join(dir, safeFileName(rb.Name)+".log")
		}
		if lockFile == "" {
			lockFile = filepath.Join(dir, lockName(rb.Name))
		}
	}
	timeout := a.opts.timeout
	if timeout <= 0 {
		timeout = time.Hour
	}
	logFormat := a.opts.cronLogFormat
	parts := []string{self, "apply", "--auto-approve", "--lock-file", lockFile, "--timeout", timeout.String(),
		"--log-format", logFormat, "--log-file", logFile}
	if mf := absPath(a.opts.metricsFile); mf != "" {
		parts = append(parts, "--metrics-file", mf)
	}
	parts = append(parts, pass...)
	parts = append(parts, params.words...)
	rbArg := absPath(rb.Path)
	if slices.Contains(a.builtin, rb.Path) {
		// A built-in runbook by name: the line keeps working, with the
		// runbook of the installed binary, after an upgrade.
		rbArg = strings.TrimSuffix(filepath.Base(rb.Path), ".yaml")
	}
	parts = append(parts, rbArg)
	last := strings.TrimSuffix(logFile, ".log") + ".last.txt"
	for i, p := range parts {
		parts[i] = crontabQuote(p)
	}
	fmt.Fprintf(a.stdout, "# nksrun %s (guide §%s): add with `crontab -e` (or as a file in /etc/cron.d with a user field).\n", rb.Name, rb.Section)
	fmt.Fprintf(a.stdout, "# Never prompts; holds %s (a second run of this runbook exits 3 at once; other runbooks have their own lock); stops after %s;\n", lockFile, timeout)
	fmt.Fprintf(a.stdout, "# log lines (%s) in %s (reopened on SIGHUP: logrotate with postrotate `pkill -HUP -f 'nksrun apply'` or copytruncate);\n", logFormat, logFile)
	fmt.Fprintf(a.stdout, "# plan and recap of the last run in %s. Exit codes: 0 ok, 1 error, 3 lock held.\n", last)
	for _, name := range params.env {
		fmt.Fprintf(a.stdout, "# The secret param %s is read from %s at run time: cron must have it in its environment (not written here).\n", name, paramEnv(name))
	}
	_, err = fmt.Fprintf(a.stdout, "%s mkdir -p %s && %s > %s 2>&1\n", a.opts.schedule,
		crontabQuote(filepath.Dir(last)), strings.Join(parts, " "), crontabQuote(last))
	return err
}

// crontabQuote quotes a word for the shell cron runs, and escapes % (cron
// turns an unescaped % into a newline, even inside quotes).
func crontabQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-=:,+@") == "" {
		return s
	}
	return strings.ReplaceAll(shell.Quote(s), "%", `\%`)
}
