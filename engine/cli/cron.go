package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// runCron prints a crontab line (absolute paths, lock, JSON logs) for a
// runbook; with --kubernetes, a CronJob manifest (see cronjob.go).
func runCron(_ context.Context, a *app, args []string) error {
	if len(args) != 1 {
		return usageError{"want exactly one runbook"}
	}
	rbs, err := a.loadRunbooks(args)
	if err != nil {
		return err
	}
	rb := rbs[0]
	if fields := strings.Fields(a.opts.schedule); len(fields) != 5 {
		return usageError{fmt.Sprintf("--schedule %q: want 5 cron fields", a.opts.schedule)}
	}
	if a.opts.kubernetes {
		return a.printCronJob(rb)
	}
	self, err := os.Executable()
	if err != nil {
		return err
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
	logFile := abs(a.opts.logFile)
	if logFile == "" {
		logFile = filepath.Join(cache, "nksrun", rb.Name+".log")
	}
	parts := []string{a.opts.schedule, abs(self), "apply", "--auto-approve", "--log-format", "json", "--log-file", logFile, "--timeout", "1h"}
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
	parts = append(parts, abs(rb.Path))
	for i, p := range parts[1:] {
		if strings.ContainsAny(p, " '\"$%") {
			parts[i+1] = "'" + strings.ReplaceAll(p, "'", `'\''`) + "'"
		}
	}
	fmt.Fprintf(a.stdout, "# nksrun %s (guide §%s): add with `crontab -e`; it never prompts, holds a lock,\n# exits 3 when another run holds it, and logs JSON lines to %s.\n", rb.Name, rb.Section, logFile)
	// '%' is special in crontab lines (newline); none of the flags above use it.
	// stdout (plan and recap of the last run) goes next to the log.
	_, err = fmt.Fprintln(a.stdout, strings.Join(parts, " ")+" > "+strings.TrimSuffix(logFile, ".log")+".last.txt 2>&1")
	return err
}
