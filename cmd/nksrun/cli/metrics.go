package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"nksrun/engine/module"
	"nksrun/engine/plans"
)

// finish ends a run: run_end in the log and --metrics-file, then closes the
// log. A run that found the lock held or had a usage error did not run, so
// it leaves the metrics of the last real run alone.
func (a *app) finish(command string, code int, err error) {
	counts := a.targetCounts()
	status := "ok"
	switch {
	case code == ExitLocked:
		status = "locked"
	case code == ExitUsage:
		status = "usage"
	case code == ExitChanges:
		status = "changes"
	case err != nil:
		status = "error"
	}
	msg := ""
	if err != nil {
		msg = err.Error()
		var ee exitError
		if errors.As(err, &ee) {
			msg = ee.msg
		}
	}
	a.log.end(status, code, counts, msg)
	if code != ExitLocked && code != ExitUsage {
		switch command {
		case "plan", "apply":
			a.writeMetrics(command, code)
		}
	}
	a.log.close()
}

// targetCounts is the number of targets by status: of the apply report if
// there is one, else of the plan.
func (a *app) targetCounts() map[string]int {
	c := map[string]int{}
	switch {
	case a.report != nil:
		for _, t := range a.report.Targets {
			c[string(t.Status)]++
		}
	case a.plan != nil:
		for _, rp := range a.plan.Runbooks {
			for _, t := range rp.Targets {
				c[string(t.Status)]++
			}
		}
	default:
		return nil
	}
	return c
}

// writeMetrics writes --metrics-file in the Prometheus text format for
// node_exporter's textfile collector (written to a temp file and renamed, as
// the collector requires). Every runbook of the run gets a series, also when
// the run failed before planning (then success is 0). Errors are reported
// but do not change the exit code.
func (a *app) writeMetrics(phase string, code int) {
	if a.opts.metricsFile == "" {
		return
	}
	type counts struct{ changed, failed, stale, pending, findings int }
	per := map[string]*counts{}
	for _, n := range a.runbooks {
		per[n] = &counts{}
	}
	if p := a.plan; p != nil {
		for _, rp := range p.Runbooks {
			c := &counts{}
			per[rp.Name] = c
			for _, t := range rp.Targets {
				if t.Status == plans.StatusFailed || t.Status == plans.StatusUnreachable {
					c.failed++
				}
				for _, s := range t.Steps {
					if s.Action == module.Change || s.Action == module.Unknown {
						c.pending++
					}
					c.findings += len(s.Findings)
				}
			}
		}
	}
	if r := a.report; r != nil {
		for _, c := range per {
			c.failed = 0
		}
		for _, t := range r.Targets {
			c := per[t.Runbook]
			if c == nil {
				continue
			}
			switch t.Status {
			case plans.StatusChanged:
				c.changed++
			case plans.StatusStale:
				c.stale++
				c.failed++
			case plans.StatusFailed, plans.StatusUnreachable, plans.StatusNotRun:
				c.failed++
			}
		}
	}
	names := make([]string, 0, len(per))
	for n := range per {
		names = append(names, n)
	}
	sort.Strings(names)
	success := code == ExitOK || code == ExitChanges
	var b strings.Builder
	now := time.Now()
	metric := func(name, help string, value func(c *counts) float64) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name)
		for _, n := range names {
			fmt.Fprintf(&b, "%s{runbook=%q,phase=%q} %s\n", name, n, phase, strconv.FormatFloat(value(per[n]), 'f', -1, 64))
		}
	}
	metric("nksrun_last_run_timestamp_seconds", "Unix time the last run ended.", func(*counts) float64 { return float64(now.Unix()) })
	metric("nksrun_last_run_duration_seconds", "How long the last run took.", func(*counts) float64 {
		return float64(now.Sub(a.log.startTime()).Milliseconds()) / 1000
	})
	metric("nksrun_last_run_success", "1 if the last run succeeded (exit code 0, or 2 = drift found by plan --detailed-exitcode).", func(c *counts) float64 {
		if success && c.failed == 0 {
			return 1
		}
		return 0
	})
	metric("nksrun_last_run_exit_code", "Exit code of the last run.", func(*counts) float64 { return float64(code) })
	metric("nksrun_changed_targets", "Targets changed by the last apply.", func(c *counts) float64 { return float64(c.changed) })
	metric("nksrun_failed_targets", "Targets failed, unreachable, stale or not run in the last run.", func(c *counts) float64 { return float64(c.failed) })
	metric("nksrun_stale_targets", "Targets of a saved plan refused because they changed since the plan.", func(c *counts) float64 { return float64(c.stale) })
	metric("nksrun_pending_changes", "Changes the last plan found (drift).", func(c *counts) float64 { return float64(c.pending) })
	metric("nksrun_findings", "Findings of diagnose steps in the last run.", func(c *counts) float64 { return float64(c.findings) })
	if err := writeFileAtomic(a.opts.metricsFile, []byte(b.String()), 0o644); err != nil {
		fmt.Fprintf(a.stderr, "nksrun: --metrics-file: %v\n", err)
	}
}

// writeFileAtomic writes a temp file in the same directory and renames it.
// The temp name starts with a dot and does not end in .prom, so the textfile
// collector never reads a half-written file.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
