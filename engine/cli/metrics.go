package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"nksrun/engine"
	"nksrun/engine/module"
)

// writeMetrics writes --metrics-file in the Prometheus text format for
// node_exporter's textfile collector (written to a temp file and renamed, as
// the collector requires). Errors are reported but do not fail the run.
func (a *app) writeMetrics(phase string, p *engine.Plan, r *engine.Report) {
	if a.opts.metricsFile == "" || p == nil {
		return
	}
	type counts struct{ changed, failed, pending, findings int }
	per := map[string]*counts{}
	for _, rp := range p.Runbooks {
		c := &counts{}
		per[rp.Name] = c
		for _, t := range rp.Targets {
			if t.Status == engine.StatusFailed || t.Status == engine.StatusUnreachable {
				c.failed++
			}
			for _, s := range t.Steps {
				if s.Action == module.Change {
					c.pending++
				}
				c.findings += len(s.Findings)
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
			case engine.StatusChanged:
				c.changed++
			case engine.StatusFailed, engine.StatusUnreachable, engine.StatusStale, engine.StatusNotRun:
				c.failed++
			}
		}
	}
	names := make([]string, 0, len(per))
	for n := range per {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	now := time.Now().Unix()
	metric := func(name, help string, value func(rb string, c *counts) int) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name)
		for _, n := range names {
			fmt.Fprintf(&b, "%s{runbook=%q,phase=%q} %d\n", name, n, phase, value(n, per[n]))
		}
	}
	metric("nksrun_last_run_timestamp_seconds", "Unix time the last run ended.", func(string, *counts) int { return int(now) })
	metric("nksrun_last_run_success", "1 if no target failed in the last run.", func(_ string, c *counts) int {
		if c.failed == 0 {
			return 1
		}
		return 0
	})
	metric("nksrun_changed_targets", "Targets changed by the last apply.", func(_ string, c *counts) int { return c.changed })
	metric("nksrun_failed_targets", "Targets failed or unreachable in the last run.", func(_ string, c *counts) int { return c.failed })
	metric("nksrun_pending_changes", "Changes the last plan found (drift).", func(_ string, c *counts) int { return c.pending })
	metric("nksrun_findings", "Findings of diagnose steps in the last run.", func(_ string, c *counts) int { return c.findings })
	tmp := filepath.Join(filepath.Dir(a.opts.metricsFile), "."+filepath.Base(a.opts.metricsFile)+".tmp")
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err == nil {
		err = os.Rename(tmp, a.opts.metricsFile)
		if err != nil {
			fmt.Fprintf(a.stderr, "nksrun: --metrics-file: %v\n", err)
		}
	} else {
		fmt.Fprintf(a.stderr, "nksrun: --metrics-file: %v\n", err)
	}
}
