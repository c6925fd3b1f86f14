package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
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
	case a.clusters != nil:
		for _, r := range a.clusters {
			if r.plan == nil {
				continue
			}
			for _, rp := range r.plan.Runbooks {
				for _, t := range rp.Targets {
					c[string(t.Status)]++
				}
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
	// One run is one series set; a many-cluster plan is one per cluster,
	// told apart by a cluster label (the context).
	type part struct {
		cluster string
		per     map[string]*metricCounts
		ok      bool // the cluster's own outcome allows success
	}
	success := code == ExitOK || code == ExitChanges
	var parts []part
	if a.clusters != nil {
		for _, r := range a.clusters {
			parts = append(parts, part{r.context, runbookCounts(a.runbooks, r.plan, nil), r.err == nil && (r.code == ExitOK || r.code == ExitChanges)})
		}
	} else {
		parts = append(parts, part{"", runbookCounts(a.runbooks, a.plan, a.report), success})
	}
	now := time.Now()
	var ms []metricFamily
	metric := func(name, help string, value func(p part, c *metricCounts) float64) {
		m := metricFamily{name: name, help: help}
		for _, p := range parts {
			for _, n := range sortedKeys(p.per) {
				labels := fmt.Sprintf("runbook=%q,phase=%q", n, phase)
				if p.cluster != "" {
					labels = fmt.Sprintf("cluster=%q,", p.cluster) + labels
				}
				m.series = append(m.series, fmt.Sprintf("%s{%s} %s", name, labels, strconv.FormatFloat(value(p, p.per[n]), 'f', -1, 64)))
			}
		}
		ms = append(ms, m)
	}
	metric("nksrun_last_run_timestamp_seconds", "Unix time the last run ended.", func(part, *metricCounts) float64 { return float64(now.Unix()) })
	metric("nksrun_last_run_duration_seconds", "How long the last run took.", func(part, *metricCounts) float64 {
		return float64(now.Sub(a.log.startTime()).Milliseconds()) / 1000
	})
	metric("nksrun_last_run_success", "1 if the last run succeeded (exit code 0, or 2 = drift found by plan --detailed-exitcode).", func(p part, c *metricCounts) float64 {
		if p.ok && c.failed == 0 {
			return 1
		}
		return 0
	})
	metric("nksrun_last_run_exit_code", "Exit code of the last run.", func(part, *metricCounts) float64 { return float64(code) })
	metric("nksrun_changed_targets", "Targets changed by the last apply.", func(_ part, c *metricCounts) float64 { return float64(c.changed) })
	metric("nksrun_failed_targets", "Targets failed, unreachable, stale or not run in the last run.", func(_ part, c *metricCounts) float64 { return float64(c.failed) })
	metric("nksrun_stale_targets", "Targets of a saved plan refused because they changed since the plan.", func(_ part, c *metricCounts) float64 { return float64(c.stale) })
	metric("nksrun_pending_changes", "Changes the last plan found (drift).", func(_ part, c *metricCounts) float64 { return float64(c.pending) })
	metric("nksrun_findings", "Findings of diagnose steps in the last run.", func(_ part, c *metricCounts) float64 { return float64(c.findings) })
	replace := map[string]bool{}
	for _, p := range parts {
		cl := ""
		if p.cluster != "" {
			cl = strconv.Quote(p.cluster)
		}
		for n := range p.per {
			replace[seriesKey(cl, strconv.Quote(n), strconv.Quote(phase))] = true
		}
	}
	if err := mergeMetrics(a.opts.metricsFile, ms, replace); err != nil {
		fmt.Fprintf(a.stderr, "nksrun: --metrics-file: %v\n", err)
	}
}

// metricCounts are one runbook's numbers in the metrics.
type metricCounts struct{ changed, failed, stale, pending, findings int }

// runbookCounts is the metrics' numbers per runbook of names, from a plan
// and an apply report (either may be nil).
func runbookCounts(names []string, p *plans.Plan, r *plans.Report) map[string]*metricCounts {
	per := map[string]*metricCounts{}
	for _, n := range names {
		per[n] = &metricCounts{}
	}
	if p != nil {
		for _, rp := range p.Runbooks {
			c := &metricCounts{}
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
	if r != nil {
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
	return per
}

// metricFamily is one metric's HELP, TYPE and series lines.
type metricFamily struct {
	name, help, typ string
	series          []string
}

var labelRe = map[string]*regexp.Regexp{
	"cluster": regexp.MustCompile(`[{,]cluster=("(?:[^"\\]|\\.)*")`),
	"runbook": regexp.MustCompile(`[{,]runbook=("(?:[^"\\]|\\.)*")`),
	"phase":   regexp.MustCompile(`[{,]phase=("(?:[^"\\]|\\.)*")`),
}

// seriesKey names the run a series belongs to: cluster ("" without the
// label: a one-cluster run), runbook and phase, each as quoted in the file.
func seriesKey(cluster, runbook, phase string) string {
	return cluster + "|" + runbook + "|" + phase
}

// mergeMetrics writes ms into the textfile at path, keeping every series
// of the file whose runbook and phase this run did not produce: several
// runbooks' cron lines share one --metrics-file, and each run replaces only
// its own series. A sidecar lock (PATH.lock; the textfile collector reads
// only *.prom) serialises runs that finish at the same moment, and the file
// is replaced by an atomic rename, so the collector never reads half a file.
func mergeMetrics(path string, ms []metricFamily, replace map[string]bool) error {
	lf, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	defer lf.Close()
	// Bounded: the holder only reads and renames a small file.
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX); err != nil {
		return err
	}
	defer syscall.Flock(int(lf.Fd()), syscall.LOCK_UN) //nolint:errcheck // closing releases it too

	families := map[string]*metricFamily{}
	var order []string
	for i := range ms {
		families[ms[i].name] = &ms[i]
		order = append(order, ms[i].name)
	}
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	family := func(name string) *metricFamily {
		f := families[name]
		if f == nil {
			f = &metricFamily{name: name}
			families[name] = f
			order = append(order, name)
		}
		return f
	}
	for _, line := range strings.Split(string(old), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "":
		case strings.HasPrefix(line, "# HELP ") || strings.HasPrefix(line, "# TYPE "):
			f := strings.SplitN(line, " ", 4)
			if len(f) < 4 {
				continue
			}
			fam := family(f[2])
			if f[1] == "HELP" && fam.help == "" {
				fam.help = f[3]
			} else if f[1] == "TYPE" && fam.typ == "" {
				fam.typ = f[3]
			}
		case strings.HasPrefix(line, "#"):
		default:
			name := line
			if i := strings.IndexAny(line, "{ "); i >= 0 {
				name = line[:i]
			}
			cl, rb, ph := "", "", ""
			if m := labelRe["cluster"].FindStringSubmatch(line); m != nil {
				cl = m[1]
			}
			if m := labelRe["runbook"].FindStringSubmatch(line); m != nil {
				rb = m[1]
			}
			if m := labelRe["phase"].FindStringSubmatch(line); m != nil {
				ph = m[1]
			}
			if strings.HasPrefix(name, "nksrun_") && replace[seriesKey(cl, rb, ph)] {
				continue // this run's own series: replaced
			}
			fam := family(name)
			fam.series = append(fam.series, line)
		}
	}
	var b strings.Builder
	for _, name := range order {
		f := families[name]
		if len(f.series) == 0 {
			continue
		}
		if f.help != "" {
			fmt.Fprintf(&b, "# HELP %s %s\n", name, f.help)
		}
		typ := f.typ
		if typ == "" && strings.HasPrefix(name, "nksrun_") {
			typ = "gauge"
		}
		if typ != "" {
			fmt.Fprintf(&b, "# TYPE %s %s\n", name, typ)
		}
		sort.Strings(f.series)
		for _, s := range f.series {
			b.WriteString(s + "\n")
		}
	}
	return writeFileAtomic(path, []byte(b.String()), 0o644)
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
