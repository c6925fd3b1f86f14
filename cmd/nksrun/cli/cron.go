package cli

import (
	"context"
	"fmt"
	"nksrun/engine/shell"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// runCron prints a crontab line for a runbook (absolute paths, the lock,
// JSON logs, a run-wide timeout); with --kubernetes, a CronJob manifest
// (see cronjob.go).
func runCron(_ context.Context, a *app, args []string) error {
	if len(args) != 1 {
		return usageError{"want exactly one runbook"}
	}
	rbs, err := a.loadRunbooks(args)
	if err != nil {
		return err
	}
	rb := rbs[0]
	if err := checkSchedule(a.opts.schedule); err != nil {
		return usageError{err.Error()}
	}
	set, err := a.sets()
	if err != nil {
		return err
	}
	if _, err := rb.ResolveParams(set); err != nil {
		return usageError{err.Error()}
	}
	if a.opts.kubernetes {
		return a.printCronJob(rb, set)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if r, err := filepath.EvalSymlinks(self); err == nil {
		self = r
	}
	abs := func(p string) string {
		if p == "" {
			return ""
		}
		if ap, err := filepath.Abs(p); err == nil {
			return ap
		}
		return p
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "nksrun")
	logFile := abs(a.opts.logFile)
	if logFile == "" {
		logFile = filepath.Join(dir, rb.Name+".log")
	}
	lockFile := abs(a.opts.lockFile)
	if lockFile == "" {
		lockFile = filepath.Join(dir, "apply.lock")
	}
	timeout := a.opts.timeout
	if timeout <= 0 {
		timeout = time.Hour
	}
	parts := []string{abs(self), "apply", "--auto-approve", "--lock-file", lockFile, "--timeout", timeout.String(),
		"--log-format", "json", "--log-file", logFile}
	if kc := abs(a.opts.kubeconfig); kc != "" {
		parts = append(parts, "--kubeconfig", kc)
	}
	for _, id := range a.opts.identities {
		parts = append(parts, "-i", abs(id))
	}
	if kh := abs(a.opts.knownHosts); kh != "" {
		parts = append(parts, "--known-hosts", kh)
	}
	if mf := abs(a.opts.metricsFile); mf != "" {
		parts = append(parts, "--metrics-file", mf)
	}
	keys := make([]string, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		parts = append(parts, "--set", k+"="+set[k])
	}
	parts = append(parts, abs(rb.Path))
	last := strings.TrimSuffix(logFile, ".log") + ".last.txt"
	for i, p := range parts {
		parts[i] = crontabQuote(p)
	}
	fmt.Fprintf(a.stdout, "# nksrun %s (guide §%s): add with `crontab -e` (or as a file in /etc/cron.d with a user field).\n", rb.Name, rb.Section)
	fmt.Fprintf(a.stdout, "# Never prompts; holds %s (a second run exits 3 at once); stops after %s;\n", lockFile, timeout)
	fmt.Fprintf(a.stdout, "# JSON log lines in %s (reopened on SIGHUP: logrotate with postrotate `pkill -HUP -f 'nksrun apply'` or copytruncate);\n", logFile)
	fmt.Fprintf(a.stdout, "# plan and recap of the last run in %s. Exit codes: 0 ok, 1 error, 3 lock held.\n", last)
	_, err = fmt.Fprintf(a.stdout, "%s mkdir -p %s && %s > %s 2>&1\n", a.opts.schedule,
		crontabQuote(filepath.Dir(last)), strings.Join(parts, " "), crontabQuote(last))
	return err
}

// checkSchedule accepts 5 cron fields or an @-macro.
func checkSchedule(s string) error {
	if strings.HasPrefix(s, "@") {
		switch s {
		case "@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly":
			return nil
		}
		return fmt.Errorf("--schedule %q: unknown macro", s)
	}
	f := strings.Fields(s)
	if len(f) != 5 {
		return fmt.Errorf("--schedule %q: want 5 cron fields (minute hour day month weekday)", s)
	}
	for _, x := range f {
		if strings.Trim(x, "0123456789*/,-abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") != "" {
			return fmt.Errorf("--schedule %q: bad field %q", s, x)
		}
	}
	return nil
}

// crontabQuote quotes a word for the shell cron runs, and escapes % (cron
// turns an unescaped % into a newline, even inside quotes).
func crontabQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-=:,+@") == "" {
		return s
	}
	return strings.ReplaceAll(shell.Quote(s), "%", `\%`)
}
