package main

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// sizeResult is everything measured on one testbed size.
type sizeResult struct {
	N        int
	Reps     int
	Idle     float64 // background CPU load before measuring, fraction of all cores
	Runbooks int     // doctor's runbooks
	Runs     map[string][]sample
	Heals    int // node sshds restarted after being killed from outside
}

// report is the whole output of one driver invocation.
type report struct {
	Command string // how to reproduce it
	Version string // git describe of the checkout measured
	Cores   int
	Extra   string // nksrun flags beyond the defaults (then it is not a default-flags run)
	Sizes   []sizeResult
}

// stat is the median, min and max of one figure over the repetitions.
type stat struct{ med, min, max float64 }

func statOf(xs []float64) stat {
	if len(xs) == 0 {
		return stat{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return stat{med, s[0], s[n-1]}
}

func (s stat) fmt(prec int) string {
	return fmt.Sprintf("%.*f (%.*f–%.*f)", prec, s.med, prec, s.min, prec, s.max)
}

func pick(ss []sample, f func(sample) float64) []float64 {
	out := make([]float64, len(ss))
	for i, s := range ss {
		out[i] = f(s)
	}
	return out
}

// ratios pairs the runs of one repetition: a[i] / b[i]. Both ran in the
// same repetition, minutes apart at most, so the ratio cancels most of
// the machine's drift that a ratio of medians would keep.
func ratios(a, b []sample) []float64 {
	var out []float64
	for i := range min(len(a), len(b)) {
		if b[i].wall > 0 {
			out = append(out, a[i].wall.Seconds()/b[i].wall.Seconds())
		}
	}
	return out
}

// runRows are the table's rows, in order; rows without runs are left out.
var runRows = []string{"floor plan", "nksrun plan", "nksrun B plan", "nksrun doctor", "floor apply", "nksrun apply", "nksrun B apply"}

// Targets of issue #14.
const (
	planTarget   = 1.2
	applyTarget  = 1.5
	doctorTarget = 1.3
	rssTargetMB  = 100
)

// busyLoad is the background load above which the report warns that the
// figures were taken on a busy machine.
const busyLoad = 0.10

func renderReport(r report) string {
	var b strings.Builder
	for _, sz := range r.Sizes {
		renderSize(&b, r, sz)
	}
	fmt.Fprintf(&b, "Produced by `%s` (as root, from the repository root) on %s, %d cores.\n", r.Command, r.Version, r.Cores)
	return b.String()
}

func renderSize(b *strings.Builder, r report, sz sizeResult) {
	n := float64(sz.N)
	fmt.Fprintf(b, "#### %d nodes\n\n", sz.N)
	flags := "nksrun with its default flags (only `--kubeconfig`, `-i`, `--known-hosts`, `--log-format json`; apply adds `--auto-approve --lock-file`)"
	if r.Extra != "" {
		flags = fmt.Sprintf("**not a default-flags run**: nksrun also got `%s`", r.Extra)
	}
	load := fmt.Sprintf("Background CPU load before measuring: %.0f%%.", sz.Idle*100)
	if sz.Idle > busyLoad {
		load = fmt.Sprintf("**The machine was busy before measuring (%.0f%% of its CPU): wall times and ratios are skewed; node CPU per node is the figure to trust.**", sz.Idle*100)
	}
	fmt.Fprintf(b, "%d docker-runtime nodes, median (min–max) of %d repetitions, %s. Every run counted reached and completed all %d nodes (the driver fails otherwise). %s\n\n",
		sz.N, sz.Reps, flags, sz.N, load)

	b.WriteString("| run | wall s | peak RSS MB | process CPU s | node CPU / node ms | machine CPU s |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|\n")
	wall := func(s sample) float64 { return s.wall.Seconds() }
	rss := func(s sample) float64 { return s.rssMB }
	cpu := func(s sample) float64 { return s.cpu.Seconds() }
	mach := func(s sample) float64 { return s.machine.Seconds() }
	perNode := func(s sample) float64 { return s.nodes.Seconds() * 1000 / n }
	for _, k := range runRows {
		ss := sz.Runs[k]
		if len(ss) == 0 {
			continue
		}
		name := k
		switch k {
		case "nksrun plan", "nksrun B plan":
			name += " (1 runbook, nothing to change)"
		case "nksrun doctor":
			name = fmt.Sprintf("nksrun doctor (%d runbooks)", sz.Runbooks)
		case "nksrun apply", "nksrun B apply":
			name += " (every node drifted)"
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s |\n", name,
			statOf(pick(ss, wall)).fmt(2), statOf(pick(ss, rss)).fmt(0), statOf(pick(ss, cpu)).fmt(2),
			statOf(pick(ss, perNode)).fmt(0), statOf(pick(ss, mach)).fmt(1))
	}

	b.WriteString("\n| comparison (per repetition) | median | min | max | target | |\n")
	b.WriteString("|---|---:|---:|---:|---:|---|\n")
	ratioRow := func(label, a, bKey string, target float64) {
		rs := ratios(sz.Runs[a], sz.Runs[bKey])
		if len(rs) == 0 {
			return
		}
		st := statOf(rs)
		fmt.Fprintf(b, "| %s | %.2f× | %.2f× | %.2f× | ≤ %.1f× | %s |\n", label, st.med, st.min, st.max, target, verdict(st.med <= target))
	}
	ratioRow("nksrun plan / floor plan", "nksrun plan", "floor plan", planTarget)
	ratioRow("nksrun B plan / floor plan", "nksrun B plan", "floor plan", planTarget)
	ratioRow("nksrun apply / floor apply", "nksrun apply", "floor apply", applyTarget)
	ratioRow("nksrun B apply / floor apply", "nksrun B apply", "floor apply", applyTarget)
	ratioRow(fmt.Sprintf("nksrun doctor (%d runbooks) / nksrun plan (1 runbook)", sz.Runbooks), "nksrun doctor", "nksrun plan", doctorTarget)
	var allRSS []float64
	for _, k := range []string{"nksrun plan", "nksrun doctor", "nksrun apply"} {
		allRSS = append(allRSS, pick(sz.Runs[k], rss)...)
	}
	if len(allRSS) > 0 {
		st := statOf(allRSS)
		fmt.Fprintf(b, "| nksrun peak RSS, every plan/doctor/apply run | %.0f MB | %.0f MB | %.0f MB | < %d MB | %s |\n", st.med, st.min, st.max, rssTargetMB, verdict(st.max < rssTargetMB))
	}

	var notes []string
	for _, k := range []string{"floor plan", "floor apply"} {
		ss := sz.Runs[k]
		if len(ss) == 0 {
			continue
		}
		st := statOf(pick(ss, func(s sample) float64 { return float64(s.retried) }))
		if st.max > 0 {
			notes = append(notes, fmt.Sprintf("%s: %s nodes per run lost their first connection (all at once) and were reached on a retry", k, st.fmt(0)))
		} else {
			notes = append(notes, fmt.Sprintf("%s: every node reached on the first connection", k))
		}
	}
	if sz.Heals > 0 {
		notes = append(notes, fmt.Sprintf("%d node sshd restart(s) after kills from outside the benchmark; the runs they broke were measured again", sz.Heals))
	}
	if len(notes) > 0 {
		fmt.Fprintf(b, "\n%s.\n", strings.Join(notes, "; "))
	}

	var ph []string
	for _, k := range []string{"nksrun plan", "nksrun doctor", "nksrun apply", "nksrun B plan", "nksrun B apply"} {
		ss := sz.Runs[k]
		if len(ss) == 0 {
			continue
		}
		med := map[string]time.Duration{}
		for _, p := range phaseNames {
			var xs []float64
			for _, s := range ss {
				if d, ok := s.phases[p]; ok {
					xs = append(xs, d.Seconds())
				}
			}
			if len(xs) > 0 {
				med[p] = time.Duration(statOf(xs).med * float64(time.Second))
			}
		}
		if len(med) > 0 {
			ph = append(ph, fmt.Sprintf("%s: %s", k, fmtPhases(med)))
		}
	}
	if len(ph) > 0 {
		fmt.Fprintf(b, "\nnksrun phases (median, from its JSON log): %s.\n", strings.Join(ph, "; "))
	}
	b.WriteString("\n")
}

func verdict(ok bool) string {
	if ok {
		return "✅"
	}
	return "❌"
}
