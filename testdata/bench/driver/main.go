// Command driver is `make bench`: it brings up the testbed (real
// kube-apiserver + N real sshd nodes, all docker-runtime so the logrotate
// runbook targets every one of them), then measures, side by side in one
// run and over several repetitions:
//
//   - plan:  the floor (one connection + one `sudo -n sha256sum` per node)
//     vs `nksrun plan runbooks/logrotate.yaml` with nothing to change;
//   - apply: the floor (one connection + one streamed atomic install per
//     node) vs `nksrun apply --auto-approve runbooks/logrotate.yaml` with
//     every node changed (each node's file is rewritten with other content
//     before every run).
//
// For every process it records wall time, peak RSS (wait4 rusage ru_maxrss),
// its own CPU time, and the CPU the whole machine spent meanwhile (sshd,
// sudo, shells: /proc/stat). It prints medians as a Markdown table for the
// README, the exact command, and nksrun's per-phase times from its JSON log.
//
//	go run ./testdata/bench/driver -n 200 -reps 5
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"nksrun/testdata/testbed"
)

const dest = "/etc/logrotate.d/docker"

var (
	nNodes   = flag.Int("n", 200, "nodes (all docker-runtime)")
	reps     = flag.Int("reps", 5, "measured repetitions of each scenario (median reported)")
	nksrun   = flag.String("nksrun", "", "nksrun binary (default: go build ./cmd/nksrun)")
	nksrunB  = flag.String("nksrun-b", "", "A/B: a second nksrun binary (e.g. with a proposed change) measured in the same loop as \"nksrun B\"")
	floorBin = flag.String("floor", "", "floor binary (default: go build ./testdata/bench/floor)")
	rbPath   = flag.String("runbook", "runbooks/logrotate.yaml", "runbook to plan/apply")
	srcPath  = flag.String("src", "runbooks/files/docker-logrotate.conf", "the runbook's config file (what the floor installs)")
	mdOut    = flag.String("md", "", "also write the Markdown table to this file")
	only     = flag.String("only", "plan,apply", "scenarios to run")
	extra    = flag.String("nksrun-args", "", "extra args for nksrun, space separated (e.g. --forks 64)")
	verbose  = flag.Bool("v", false, "log testbed progress and every run")
	costmod  = flag.Bool("costmodel", false, "after the warm-up, price execs, sudo and nksrun's scripts on the nodes (node CPU per node) instead of the comparison")
	hold     = flag.Bool("hold", false, "after the warm-up, print how to reach the testbed and wait for Ctrl-C instead of measuring (for profiling by hand)")
)

type sample struct {
	wall    time.Duration
	rssMB   float64
	cpu     time.Duration // the process's own user+sys
	machine time.Duration // the whole machine's busy CPU during the run
	nodes   time.Duration // CPU of the nodes' sshds and everything they ran (reaped children)
	phases  map[string]time.Duration
}

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()
	if _, err := os.Stat(*rbPath); err != nil {
		return fmt.Errorf("run from the repository root: %w", err)
	}
	want, err := os.ReadFile(*srcPath)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "nksrun-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if *nksrun == "" {
		*nksrun = filepath.Join(work, "nksrun")
		if err := gobuild(*nksrun, "./cmd/nksrun"); err != nil {
			return err
		}
	}
	if *floorBin == "" {
		*floorBin = filepath.Join(work, "floor")
		if err := gobuild(*floorBin, "./testdata/bench/floor"); err != nil {
			return err
		}
	}

	specs := make([]testbed.NodeSpec, *nNodes)
	flavours := []string{"CentOS Linux 7 (Core)", "Rocky Linux 8.10 (Green Obsidian)", "Ubuntu 22.04.4 LTS"}
	for i := range specs {
		specs[i] = testbed.NodeSpec{OSImage: flavours[i%len(flavours)], Runtime: "docker://20.10.7"}
	}
	opts := testbed.Options{Nodes: specs, Prefix: "bench"}
	if *verbose {
		opts.Logf = func(f string, a ...any) { logf(f, a...) }
	}
	logf("starting the testbed with %d docker nodes", *nNodes)
	tb, err := testbed.Start(ctx, opts)
	if err != nil {
		return err
	}
	defer func() {
		if err := tb.Close(); err != nil {
			logf("testbed close: %v", err)
		}
	}()
	logf("testbed up in %s", tb.StartTime.Round(time.Millisecond))
	port := tb.Nodes[0].Port

	common := []string{"--kubeconfig", tb.Kubeconfig, "-i", tb.KeyPath, "--known-hosts", tb.KnownHosts}
	if port != 22 {
		// Node objects carry no port; the testbed only moves off 22 when
		// the host's own sshd holds *:22.
		logf("WARNING: nodes listen on port %d, not 22: nksrun cannot reach them through the cluster inventory", port)
	}
	nks := func(sub string, more ...string) []string {
		a := append([]string{sub}, common...)
		a = append(a, "--log-format", "json")
		if sub == "apply" {
			a = append(a, "--lock-file", filepath.Join(work, "apply.lock"))
		}
		a = append(a, more...)
		if *extra != "" {
			a = append(a, strings.Fields(*extra)...)
		}
		return append(a, *rbPath)
	}
	floorArgs := func(mode string) []string {
		return []string{"-mode", mode, "-kubeconfig", tb.Kubeconfig, "-i", tb.KeyPath, "-known-hosts", tb.KnownHosts,
			"-port", strconv.Itoa(port), "-file", dest, "-src", *srcPath}
	}

	reset := func(round int) error {
		for _, n := range tb.Nodes {
			c := fmt.Sprintf("# bench: stale config, round %d, node %s\n", round, n.Name)
			if err := os.WriteFile(n.Path(dest), []byte(c), 0o644); err != nil {
				return err
			}
		}
		return nil
	}
	check := func(what string) error {
		bad := 0
		for _, n := range tb.Nodes {
			got, err := os.ReadFile(n.Path(dest))
			if err != nil || !bytes.Equal(got, want) {
				bad++
			}
		}
		if bad > 0 {
			return fmt.Errorf("%s: %d of %d nodes do not hold the config afterwards", what, bad, len(tb.Nodes))
		}
		return nil
	}

	// heal restarts nodes whose sshd died. On a machine where other
	// testbeds come and go, a node can be killed from outside (see the
	// report); a run that failed because of that is measured again.
	heals := 0
	heal := func() bool {
		healed := false
		for _, n := range tb.Nodes {
			if !n.Up() {
				if err := n.Start(); err != nil {
					logf("restarting node %s: %v", n.Name, err)
					continue
				}
				heals++
				healed = true
			}
		}
		return healed
	}
	retry := func(what string, f func() error) error {
		for attempt := 1; ; attempt++ {
			heal()
			err := f()
			if err == nil {
				return nil
			}
			if !heal() || attempt == 3 {
				return err
			}
			logf("%s failed while a node was down (killed from outside); measuring again", what)
		}
	}

	// Warm-up (not measured): page cache, sudo, the first apply creates
	// the file everywhere so the plans below have nothing to change.
	logf("warm-up")
	if err := retry("warm-up floor apply", func() error { _, err := measure(*floorBin, floorArgs("apply"), 0); return err }); err != nil {
		return fmt.Errorf("warm-up floor apply: %w", err)
	}
	if err := reset(0); err != nil {
		return err
	}
	if err := retry("warm-up nksrun apply", func() error { _, err := measure(*nksrun, nks("apply", "--auto-approve"), 0); return err }); err != nil {
		return fmt.Errorf("warm-up nksrun apply: %w", err)
	}
	if err := check("warm-up nksrun apply"); err != nil {
		return err
	}
	if *costmod {
		return costModel(tb, floorArgs, *srcPath)
	}
	if *hold {
		fmt.Printf("export KUBECONFIG=%s KEY=%s KNOWN_HOSTS=%s NODES=%s/nodes  # node files: $NODES/*/root%s\n", tb.Kubeconfig, tb.KeyPath, tb.KnownHosts, tb.Dir, dest)
		fmt.Printf("%s plan --kubeconfig $KUBECONFIG -i $KEY --known-hosts $KNOWN_HOSTS %s\n", *nksrun, *rbPath)
		fmt.Printf("%s %s\n", *floorBin, strings.Join(floorArgs("plan"), " "))
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
		<-sig
		return nil
	}
	idle := idleLoad()
	logf("background CPU load before measuring: %.0f%% of %d cores", idle*100, runtime.NumCPU())

	results := map[string][]sample{}
	do := func(key, bin string, args []string, wantExit int, prep func() error) error {
		var s sample
		err := retry(key, func() (err error) {
			if prep != nil {
				if err := prep(); err != nil {
					return err
				}
			}
			s, err = measureNodes(tb, bin, args, wantExit)
			return err
		})
		if err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		results[key] = append(results[key], s)
		if *verbose {
			logf("%-13s %6.2fs  rss %5.1f MB  cpu %5.2fs  node cpu %5.2fs  machine cpu %5.2fs  %v", key, s.wall.Seconds(), s.rssMB, s.cpu.Seconds(), s.nodes.Seconds(), s.machine.Seconds(), fmtPhases(s.phases))
		}
		return nil
	}
	for r := 1; r <= *reps; r++ {
		logf("repetition %d of %d", r, *reps)
		if strings.Contains(*only, "plan") {
			// Alternate who goes first, so neither always runs on a warmer machine.
			first, second := func() error { return do("floor plan", *floorBin, floorArgs("plan"), 0, nil) },
				func() error { return do("nksrun plan", *nksrun, nks("plan", "--detailed-exitcode"), 0, nil) }
			if r%2 == 0 {
				first, second = second, first
			}
			if err := first(); err != nil {
				return err
			}
			if err := second(); err != nil {
				return err
			}
			if *nksrunB != "" {
				if err := do("nksrun B plan", *nksrunB, nks("plan", "--detailed-exitcode"), 0, nil); err != nil {
					return err
				}
			}
		}
		if strings.Contains(*only, "apply") {
			if err := do("floor apply", *floorBin, floorArgs("apply"), 0, func() error { return reset(2 * r) }); err != nil {
				return err
			}
			if err := check("floor apply"); err != nil {
				return err
			}
			if err := do("nksrun apply", *nksrun, nks("apply", "--auto-approve"), 0, func() error { return reset(2*r + 1) }); err != nil {
				return err
			}
			if err := check("nksrun apply"); err != nil {
				return err
			}
			if *nksrunB != "" {
				if err := do("nksrun B apply", *nksrunB, nks("apply", "--auto-approve"), 0, func() error { return reset(2*r + 1) }); err != nil {
					return err
				}
				if err := check("nksrun B apply"); err != nil {
					return err
				}
			}
		}
	}

	md := table(results, *nNodes, *reps, idle)
	if heals > 0 {
		md += fmt.Sprintf("\n(%d node sshd restart(s) after outside kills; affected runs were measured again.)\n", heals)
	}
	fmt.Print(md)
	if *mdOut != "" {
		if err := os.WriteFile(*mdOut, []byte(md), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func gobuild(out, pkg string) error {
	logf("go build -o %s %s", out, pkg)
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, pkg)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return cmd.Run()
}

// measure runs one process and returns its wall time, peak RSS, CPU and
// the machine's CPU meanwhile. stderr is kept for errors and, for nksrun
// (--log-format json), parsed into phases.
func measure(bin string, args []string, wantExit int) (sample, error) {
	return measureNodes(nil, bin, args, wantExit)
}

// nodeCPU is the CPU time the nodes' listening sshds and all their reaped
// descendants (per-connection sshd, session shell, sudo, commands) have used:
// utime+stime+cutime+cstime of each node's sshd (its pid is in
// StateDir/sshd.pid). Unlike /proc/stat it excludes whatever else the
// machine is doing.
func nodeCPU(tb *testbed.Testbed) time.Duration {
	if tb == nil {
		return 0
	}
	var ticks int64
	for _, n := range tb.Nodes {
		b, err := os.ReadFile(n.Path(testbed.StateDir + "/sshd.pid"))
		if err != nil {
			continue
		}
		st, err := os.ReadFile("/proc/" + strings.TrimSpace(string(b)) + "/stat")
		if err != nil {
			continue
		}
		// Fields after the ")" that ends comm: state is field 3; utime,
		// stime, cutime, cstime are fields 14-17.
		s := string(st)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		for _, v := range f[11:15] {
			n, _ := strconv.ParseInt(v, 10, 64)
			ticks += n
		}
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}

// settle waits (up to 10s) until no node sshd has a child left: only then
// is all the run's node-side CPU in the sshds' cutime/cstime.
func settle(tb *testbed.Testbed) {
	if tb == nil {
		return
	}
	pids := map[string]bool{}
	for _, n := range tb.Nodes {
		if b, err := os.ReadFile(n.Path(testbed.StateDir + "/sshd.pid")); err == nil {
			pids[strings.TrimSpace(string(b))] = true
		}
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		ents, _ := os.ReadDir("/proc")
		busy := false
		for _, e := range ents {
			st, err := os.ReadFile("/proc/" + e.Name() + "/stat")
			if err != nil || st[0] < '0' || st[0] > '9' {
				continue
			}
			s := string(st)
			f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
			if len(f) > 1 && pids[f[1]] { // f[1] is the ppid
				busy = true
				break
			}
		}
		if !busy {
			return
		}
	}
}

func measureNodes(tb *testbed.Testbed, bin string, args []string, wantExit int) (sample, error) {
	cmd := exec.Command(bin, args...)
	var stderr bytes.Buffer
	cmd.Stdout = io.Discard
	cmd.Stderr = &stderr
	settle(tb)
	busy0, nodes0 := machineBusy(), nodeCPU(tb)
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	busy1 := machineBusy()
	settle(tb) // the sshds must have reaped their per-connection children
	nodes1 := nodeCPU(tb)
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			return sample{}, err
		}
		code = ee.ExitCode()
	}
	if code != wantExit {
		return sample{}, fmt.Errorf("%s %s: exit %d (want %d)\n%s", filepath.Base(bin), strings.Join(args, " "), code, wantExit, lastLines(stderr.String(), 15))
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	s := sample{
		wall:    wall,
		rssMB:   float64(ru.Maxrss) / 1024, // ru_maxrss is in KiB on Linux
		cpu:     time.Duration(ru.Utime.Nano() + ru.Stime.Nano()),
		machine: busy1 - busy0,
		nodes:   nodes1 - nodes0,
		phases:  phases(stderr.Bytes(), start, start.Add(wall)),
	}
	return s, nil
}

// phases reads nksrun's JSON events: start-up (process start to the first
// run_start: flags, runbook, kubeconfig, Node list, SSH keys), plan (run_start
// to the last plan host_result), apply (apply run_start to the last apply
// host_result), and the tail (rendering, exit).
func phases(log []byte, start, end time.Time) map[string]time.Duration {
	type ev struct {
		Time  time.Time `json:"time"`
		Type  string    `json:"type"`
		Phase string    `json:"phase"`
	}
	var planStart, planEnd, applyStart, applyEnd time.Time
	sc := bufio.NewScanner(bytes.NewReader(log))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e ev
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			continue
		}
		// Schema v1 has phase_start (plan|recheck|apply) after the CLI's
		// run_start; earlier builds had only run_start (phase apply or none).
		switch {
		case (e.Type == "run_start" || e.Type == "phase_start") && e.Phase == "apply":
			applyStart = e.Time
		case e.Type == "phase_start" && e.Phase == "plan":
			planStart = e.Time
		case e.Type == "run_start" && planStart.IsZero():
			planStart = e.Time
		case e.Type == "host_result" && e.Phase == "apply":
			applyEnd = e.Time
		case e.Type == "host_result" && (e.Phase == "" || e.Phase == "plan"):
			planEnd = e.Time
		}
	}
	if planStart.IsZero() {
		return nil
	}
	p := map[string]time.Duration{"startup": planStart.Sub(start), "plan": planEnd.Sub(planStart)}
	last := planEnd
	if !applyStart.IsZero() {
		p["render+confirm"] = applyStart.Sub(planEnd)
		p["apply+verify"] = applyEnd.Sub(applyStart)
		last = applyEnd
	}
	p["tail"] = end.Sub(last)
	return p
}

func fmtPhases(p map[string]time.Duration) string {
	var parts []string
	for _, k := range []string{"startup", "plan", "render+confirm", "apply+verify", "tail"} {
		if d, ok := p[k]; ok {
			parts = append(parts, fmt.Sprintf("%s %.2fs", k, d.Seconds()))
		}
	}
	return strings.Join(parts, ", ")
}

// machineBusy is the CPU time all processes spent so far (/proc/stat).
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	var ticks int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		if i >= 8 { // guest, guest_nice are already in user
			break
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond // USER_HZ = 100
}

// idleLoad samples how busy the machine is before measuring (others' work
// on a shared machine skews every figure).
func idleLoad() float64 {
	b0, t0 := machineBusy(), time.Now()
	time.Sleep(2 * time.Second)
	return (machineBusy() - b0).Seconds() / time.Since(t0).Seconds() / float64(runtime.NumCPU())
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func pick(ss []sample, f func(sample) float64) []float64 {
	out := make([]float64, len(ss))
	for i, s := range ss {
		out[i] = f(s)
	}
	return out
}

func table(res map[string][]sample, n, reps int, idle float64) string {
	var b strings.Builder
	wall := func(s sample) float64 { return s.wall.Seconds() }
	rss := func(s sample) float64 { return s.rssMB }
	cpu := func(s sample) float64 { return s.cpu.Seconds() }
	mach := func(s sample) float64 { return s.machine.Seconds() }
	perNode := func(s sample) float64 { return s.nodes.Seconds() * 1000 / float64(n) }
	fmt.Fprintf(&b, "\n%d nodes (all docker runtime), %d cores, median of %d runs; wall = whole process (start-up, Node list, SSH, exit); node CPU = what the nodes' sshds and everything they ran (sudo, shells, commands) used, per node; machine CPU = every process on the box during the run (includes any background load).\n\n", n, runtime.NumCPU(), reps)
	b.WriteString("| scenario | floor wall | nksrun wall | ratio | target | nksrun peak RSS (max) | nksrun CPU | node CPU/node floor / nksrun | machine CPU floor / nksrun | |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
	for _, sc := range []struct {
		name, floor, nks string
		target           float64
	}{
		{"plan, nothing to change", "floor plan", "nksrun plan", 1.5},
		{"apply, every node changed", "floor apply", "nksrun apply", 2.0},
		{"B: plan, nothing to change", "floor plan", "nksrun B plan", 1.5},
		{"B: apply, every node changed", "floor apply", "nksrun B apply", 2.0},
	} {
		fs, ns := res[sc.floor], res[sc.nks]
		if len(fs) == 0 || len(ns) == 0 {
			continue
		}
		fw, nw := median(pick(fs, wall)), median(pick(ns, wall))
		maxRSS := slices.Max(pick(ns, rss))
		ratio := nw / fw
		ok := "✅"
		if ratio > sc.target || maxRSS > 150 {
			ok = "❌"
		}
		fmt.Fprintf(&b, "| %s | %.2f s | %.2f s | %.2f× | ≤ %.1f× | %.0f MB (≤ 150) | %.2f s | %.0f ms / %.0f ms | %.1f s / %.1f s | %s |\n",
			sc.name, fw, nw, ratio, sc.target, maxRSS, median(pick(ns, cpu)), median(pick(fs, perNode)), median(pick(ns, perNode)), median(pick(fs, mach)), median(pick(ns, mach)), ok)
	}
	b.WriteString("\nnksrun phases (median): ")
	for _, k := range []string{"nksrun plan", "nksrun apply", "nksrun B plan", "nksrun B apply"} {
		ss := res[k]
		if len(ss) == 0 {
			continue
		}
		med := map[string]time.Duration{}
		for _, ph := range []string{"startup", "plan", "render+confirm", "apply+verify", "tail"} {
			var xs []float64
			for _, s := range ss {
				if d, ok := s.phases[ph]; ok {
					xs = append(xs, d.Seconds())
				}
			}
			if len(xs) > 0 {
				med[ph] = time.Duration(median(xs) * float64(time.Second))
			}
		}
		fmt.Fprintf(&b, "%s: %s. ", k, fmtPhases(med))
	}
	b.WriteString("\n\nEvery run (wall s / peak RSS MB):\n\n")
	for _, k := range []string{"floor plan", "nksrun plan", "nksrun B plan", "floor apply", "nksrun apply", "nksrun B apply"} {
		var cells []string
		for _, s := range res[k] {
			cells = append(cells, fmt.Sprintf("%.2f/%.0f", s.wall.Seconds(), s.rssMB))
		}
		if len(cells) > 0 {
			fmt.Fprintf(&b, "- %s: %s\n", k, strings.Join(cells, ", "))
		}
	}
	fmt.Fprintf(&b, "\nBackground load before measuring: %.0f%%. Reproduce: `make bench` (= `go run ./testdata/bench/driver -n %d -reps %d`, as root, from the repository root).\n", idle*100, n, reps)
	return b.String()
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
