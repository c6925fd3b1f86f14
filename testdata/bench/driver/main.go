// Command driver is `make bench`. For each testbed size (-n 200,1000) it
// brings up the testbed (real kube-apiserver + N real sshd nodes, all
// docker-runtime so the logrotate runbook targets every one of them), warms
// up, then measures, side by side in one run and over -reps repetitions:
//
//   - plan:   the floor (one connection + one `sudo -n sha256sum` per node,
//     all at once) vs `nksrun plan runbooks/logrotate.yaml`, nothing to change;
//   - doctor: `nksrun doctor` over every runbook in runbooks/ vs that single
//     runbook's plan, same nodes, same state;
//   - apply:  the floor (one connection + one streamed atomic install per
//     node) vs `nksrun apply --auto-approve runbooks/logrotate.yaml` with
//     every node drifted (each node's file rewritten before every run).
//
// nksrun runs with its default flags: the figure must show whether it
// reaches every node as an operator would run it. A run counts only if it
// completed every node: the driver reads nksrun's JSON log (a host_result
// for every node in every phase, none unreachable or failed), doctor's
// rows and the floor's per-node result, and fails — naming the run and the
// nodes — otherwise.
//
// For every process it records wall time, peak RSS (wait4 ru_maxrss), its
// own CPU, the CPU the nodes spent (their sshds' rusage including reaped
// children: sshd, sudo, shells) and the machine's CPU meanwhile, and prints
// median (min–max) as Markdown for the README, with the command.
//
//	go run ./testdata/bench/driver -n 200 -reps 5
//	go run ./testdata/bench/driver -n 200,1000 -reps 5 -md bench.md
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
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
	sizes        = flag.String("n", "200", "testbed sizes, comma separated (e.g. 200,1000); each gets its own testbed and table")
	reps         = flag.Int("reps", 5, "measured repetitions of each run (median, min and max reported)")
	nksrun       = flag.String("nksrun", "", "nksrun binary (default: go build ./cmd/nksrun)")
	nksrunB      = flag.String("nksrun-b", "", "A/B: a second nksrun binary (e.g. with a proposed change) measured in the same loop as \"nksrun B\"")
	floorBin     = flag.String("floor", "", "floor binary (default: go build ./testdata/bench/floor)")
	floorRetries = flag.Int("floor-retries", 3, "the floor dials a node again up to this many times when its connection or handshake failed (how many needed it is reported)")
	floorTimeout = flag.Duration("floor-timeout", 30*time.Minute, "limit for one floor run")
	rbPath       = flag.String("runbook", "runbooks/logrotate.yaml", "runbook to plan/apply")
	srcPath      = flag.String("src", "runbooks/files/docker-logrotate.conf", "the runbook's config file (what the floor installs)")
	doctorGlob   = flag.String("doctor-runbooks", "runbooks/*.yaml", "runbooks doctor diagnoses")
	mdOut        = flag.String("md", "", "also write the Markdown report to this file (rewritten after each size)")
	only         = flag.String("only", "plan,doctor,apply", "runs to measure")
	extra        = flag.String("nksrun-args", "", "extra args for nksrun, space separated (e.g. --forks 64); the report then says it is not a default-flags run")
	timeout      = flag.Duration("timeout", 8*time.Hour, "limit for the whole benchmark")
	logsDir      = flag.String("logs", "", "where the output of a failed run is kept (default: a new directory under $TMPDIR)")
	verbose      = flag.Bool("v", false, "log testbed progress")
	costmod      = flag.Bool("costmodel", false, "after the warm-up (first size only), price execs, sudo and nksrun's scripts on the nodes (node CPU per node) instead of the comparison")
	unreported   = flag.Bool("unreported-images", false, "the Nodes' status.images is emptied after the testbed starts (kubelets that report no images): doctor then lists every node's image store, in a follow-up exec")
	hold         = flag.Bool("hold", false, "after the warm-up (first size only), print how to reach the testbed and wait for Ctrl-C instead of measuring (for profiling by hand)")
)

func main() {
	if len(os.Args) > 2 && os.Args[1] == spawnArg {
		os.Exit(spawn(os.Args[2:]))
	}
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench: FAILED:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

func parseSizes(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-n %q: want node counts like 200,1000", s)
		}
		out = append(out, n)
	}
	return out, nil
}

func run() error {
	ns, err := parseSizes(*sizes)
	if err != nil {
		return err
	}
	if *reps < 1 {
		return fmt.Errorf("-reps %d: want at least 1", *reps)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if _, err := os.Stat(*rbPath); err != nil {
		return fmt.Errorf("run from the repository root: %w", err)
	}
	doctorRBs, err := filepath.Glob(*doctorGlob)
	if err != nil || len(doctorRBs) == 0 {
		return fmt.Errorf("-doctor-runbooks %q: no runbooks (%v)", *doctorGlob, err)
	}
	slices.Sort(doctorRBs)
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
	rep := report{Command: commandLine(), Version: gitDescribe(), Cores: runtime.NumCPU(), Extra: *extra}
	for i, n := range ns {
		b := &bench{n: n, work: work, doctorRBs: doctorRBs, first: i == 0}
		sz, err := b.run(ctx)
		if err != nil {
			if len(rep.Sizes) > 0 {
				// The sizes measured before stand: every run of them completed.
				fmt.Print(renderReport(rep))
			}
			return fmt.Errorf("%d nodes: %w", n, err)
		}
		if sz == nil { // -costmodel, -hold
			return nil
		}
		rep.Sizes = append(rep.Sizes, *sz)
		md := renderReport(rep)
		if *mdOut != "" {
			if err := os.WriteFile(*mdOut, []byte(md), 0o644); err != nil {
				return err
			}
		}
		if i < len(ns)-1 {
			logf("%d nodes done:\n%s", n, md)
		}
	}
	fmt.Print(renderReport(rep))
	return nil
}

// commandLine is how to reproduce this report.
func commandLine() string {
	args := []string{"go", "run", "./testdata/bench/driver"}
	for _, a := range os.Args[1:] {
		if a == "" || strings.ContainsAny(a, " \t'\"$*") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		args = append(args, a)
	}
	return strings.Join(args, " ")
}

func gitDescribe() string {
	out, err := exec.Command("git", "describe", "--always", "--dirty").Output()
	if err != nil {
		return "an unknown commit"
	}
	return "commit " + strings.TrimSpace(string(out))
}

// bench measures one testbed size.
type bench struct {
	n         int
	work      string
	doctorRBs []string
	first     bool

	tb    *testbed.Testbed
	names []string
	res   *sizeResult
}

func (b *bench) run(ctx context.Context) (*sizeResult, error) {
	specs := make([]testbed.NodeSpec, b.n)
	flavours := []string{"CentOS Linux 7 (Core)", "Rocky Linux 8.10 (Green Obsidian)", "Ubuntu 22.04.4 LTS"}
	for i := range specs {
		specs[i] = testbed.NodeSpec{OSImage: flavours[i%len(flavours)], Runtime: "docker://20.10.7"}
	}
	opts := testbed.Options{Nodes: specs, Prefix: "bench"}
	if *verbose {
		opts.Logf = func(f string, a ...any) { logf(f, a...) }
	}
	logf("starting the testbed with %d docker nodes", b.n)
	tb, err := testbed.Start(ctx, opts)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err := tb.Close(); err != nil {
			logf("testbed close: %v", err)
		}
	}()
	b.tb = tb
	for _, n := range tb.Nodes {
		b.names = append(b.names, n.Name)
	}
	logf("testbed of %d nodes up in %s", b.n, tb.StartTime.Round(time.Millisecond))
	if *unreported {
		for _, n := range tb.Nodes {
			if err := n.SetReportedImages(ctx, nil); err != nil {
				return nil, fmt.Errorf("emptying status.images of %s: %w", n.Name, err)
			}
		}
		logf("every Node's status.images emptied (-unreported-images)")
	}
	if port := tb.Nodes[0].Port; port != 22 {
		// Node objects carry no port; the testbed only moves off 22 when
		// the host's own sshd holds *:22.
		return nil, fmt.Errorf("nodes listen on port %d, not 22 (something on this host holds *:22): nksrun cannot reach them through the cluster inventory", port)
	}
	b.res = &sizeResult{N: b.n, Reps: *reps, Runbooks: len(b.doctorRBs), Runs: map[string][]sample{}}

	// Warm-up (not measured): page cache, sudo, the first apply creates
	// the file everywhere so the plans below have nothing to change. It
	// must complete too: a warm-up that lost nodes leaves them drifted.
	logf("warm-up")
	if err := b.do(ctx, "warm-up", "floor apply", 0, func() error { return b.reset(0) }); err != nil {
		return nil, err
	}
	if err := b.do(ctx, "warm-up", "nksrun apply", 0, func() error { return b.reset(1) }); err != nil {
		return nil, err
	}
	if b.first && *costmod {
		return nil, costModel(b.tb, b.floorArgs, *srcPath)
	}
	if b.first && *hold {
		fmt.Printf("export KUBECONFIG=%s KEY=%s KNOWN_HOSTS=%s NODES=%s/nodes  # node files: $NODES/*/root%s\n", tb.Kubeconfig, tb.KeyPath, tb.KnownHosts, tb.Dir, dest)
		fmt.Printf("%s plan --kubeconfig $KUBECONFIG -i $KEY --known-hosts $KNOWN_HOSTS %s\n", *nksrun, *rbPath)
		fmt.Printf("%s %s\n", *floorBin, strings.Join(b.floorArgs("plan"), " "))
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
		<-sig
		// Removing the node trees takes about a minute at 1,000 nodes;
		// killing the driver meanwhile leaves them in the temp dir.
		logf("removing the testbed of %d nodes", b.n)
		return nil, nil
	}
	b.res.Idle = idleLoad()
	logf("background CPU load before measuring: %.0f%% of %d cores", b.res.Idle*100, runtime.NumCPU())

	has := func(what string) bool { return slices.Contains(strings.Split(*only, ","), what) }
	for r := 1; r <= *reps; r++ {
		rep := fmt.Sprintf("repetition %d of %d", r, *reps)
		logf("%d nodes, %s", b.n, rep)
		// Alternate who goes first, so neither always runs on a warmer machine.
		pair := func(a, c func() error) error {
			if r%2 == 0 {
				a, c = c, a
			}
			if err := a(); err != nil {
				return err
			}
			return c()
		}
		if has("plan") || has("doctor") {
			if err := pair(func() error { return b.do(ctx, rep, "floor plan", 0, nil) },
				func() error { return b.do(ctx, rep, "nksrun plan", 0, nil) }); err != nil {
				return nil, err
			}
			if *nksrunB != "" {
				if err := b.do(ctx, rep, "nksrun B plan", 0, nil); err != nil {
					return nil, err
				}
			}
		}
		if has("doctor") {
			if err := b.do(ctx, rep, "nksrun doctor", 0, nil); err != nil {
				return nil, err
			}
		}
		if has("apply") {
			if err := pair(func() error { return b.do(ctx, rep, "floor apply", 0, func() error { return b.reset(3 * r) }) },
				func() error { return b.do(ctx, rep, "nksrun apply", 0, func() error { return b.reset(3*r + 1) }) }); err != nil {
				return nil, err
			}
			if *nksrunB != "" {
				if err := b.do(ctx, rep, "nksrun B apply", 0, func() error { return b.reset(3*r + 2) }); err != nil {
					return nil, err
				}
			}
		}
	}
	return b.res, nil
}

// nksArgs is nksrun's command line: the defaults, plus what the testbed
// needs (where the cluster and keys are) and what the driver reads.
func (b *bench) nksArgs(sub string) []string {
	a := []string{sub, "--kubeconfig", b.tb.Kubeconfig, "-i", b.tb.KeyPath, "--known-hosts", b.tb.KnownHosts, "--log-format", "json"}
	switch sub {
	case "plan":
		a = append(a, "--detailed-exitcode")
	case "apply":
		// A private lock: another nksrun on a shared machine must not make
		// this one exit 3.
		a = append(a, "--auto-approve", "--lock-file", filepath.Join(b.work, "apply.lock"))
	case "doctor":
		a = append(a, "--format", "json")
	}
	if *extra != "" {
		a = append(a, strings.Fields(*extra)...)
	}
	if sub == "doctor" {
		return append(a, b.doctorRBs...)
	}
	return append(a, *rbPath)
}

func (b *bench) floorArgs(mode string) []string {
	return []string{"-mode", mode, "-kubeconfig", b.tb.Kubeconfig, "-i", b.tb.KeyPath, "-known-hosts", b.tb.KnownHosts,
		"-port", strconv.Itoa(b.tb.Nodes[0].Port), "-file", dest, "-src", *srcPath,
		"-retries", strconv.Itoa(*floorRetries), "-timeout", floorTimeout.String()}
}

// command is the binary and arguments of a run key.
func (b *bench) command(key string) (string, []string) {
	switch key {
	case "floor plan":
		return *floorBin, b.floorArgs("plan")
	case "floor apply":
		return *floorBin, b.floorArgs("apply")
	}
	bin := *nksrun
	if strings.HasPrefix(key, "nksrun B ") {
		bin = *nksrunB
	}
	return bin, b.nksArgs(key[strings.LastIndexByte(key, ' ')+1:])
}

// check is everything that makes a run count: its exit code, every node
// completed by its own account, and for applies the file on every node.
func (b *bench) check(key string, s *sample, wantExit int) *incomplete {
	var inc *incomplete
	switch {
	case strings.HasPrefix(key, "floor"):
		s.retried, inc = checkFloor(s.stdout, b.n)
	case strings.HasSuffix(key, "doctor"):
		inc = checkNksrun(s.stderr, b.names, []string{"plan"})
		inc.Other = append(inc.Other, checkDoctor(s.stdout, len(b.doctorRBs))...)
	case strings.HasSuffix(key, "apply"):
		inc = checkNksrun(s.stderr, b.names, []string{"plan", "apply"})
	default:
		inc = checkNksrun(s.stderr, b.names, []string{"plan"})
	}
	if s.exit != wantExit {
		msg := fmt.Sprintf("exit %d (want %d)", s.exit, wantExit)
		if len(inc.Problems) == 0 {
			msg += ":\n" + lastLines(string(s.stderr), 15)
		}
		inc.Other = append(inc.Other, msg)
	}
	if strings.HasSuffix(key, "apply") && len(inc.Problems) == 0 {
		inc.Problems = b.wrongFiles()
	}
	return inc
}

// do measures one run and keeps it if it completed every node. A run that
// failed only on nodes whose sshd had died (killed from outside: on a
// shared machine other testbeds come and go) is measured again, at most
// twice; anything else fails the benchmark with the run and the nodes
// named, and the run's whole output kept on disk.
func (b *bench) do(ctx context.Context, rep, key string, wantExit int, prep func() error) error {
	bin, args := b.command(key)
	name := fmt.Sprintf("%s, %s", rep, key)
	for attempt := 1; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		b.heal()
		if prep != nil {
			if err := prep(); err != nil {
				return fmt.Errorf("%s: preparing: %w", name, err)
			}
		}
		s, err := measureNodes(b.tb, bin, args)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		inc := b.check(key, &s, wantExit)
		if inc.empty() {
			logf("%-40s %7.2fs  rss %4.0f MB  cpu %6.2fs  node cpu %4.0f ms/node  %s", name, s.wall.Seconds(), s.rssMB, s.cpu.Seconds(), s.nodes.Seconds()*1000/float64(b.n), fmtPhases(s.phases))
			if rep != "warm-up" {
				s.stdout, s.stderr = nil, nil
				b.res.Runs[key] = append(b.res.Runs[key], s)
			}
			return nil
		}
		down := b.heal()
		if attempt < 3 && len(down) > 0 && onlyOn(inc, down) {
			logf("%s: failed on %d node(s) whose sshd had been killed from outside; restarted them, measuring again", name, len(down))
			continue
		}
		saved := b.keep(name, s)
		return fmt.Errorf("%s (%s %s): the run does not count: %v\n  its whole output: %s", name, filepath.Base(bin), strings.Join(args, " "), inc, saved)
	}
}

// onlyOn: every node problem is on one of these nodes, and there is one.
func onlyOn(inc *incomplete, nodes []string) bool {
	if len(inc.Problems) == 0 {
		return false
	}
	for _, p := range inc.Problems {
		if !slices.Contains(nodes, p.Node) {
			return false
		}
	}
	return true
}

// heal restarts nodes whose sshd is gone and returns their names.
func (b *bench) heal() []string {
	var healed []string
	for _, n := range b.tb.Nodes {
		if n.Up() {
			continue
		}
		if err := n.Start(); err != nil {
			logf("restarting node %s: %v", n.Name, err)
			continue
		}
		b.res.Heals++
		healed = append(healed, n.Name)
	}
	return healed
}

// keep writes a failed run's stdout and stderr where the operator can read
// them after the testbed is gone.
func (b *bench) keep(name string, s sample) string {
	dir := *logsDir
	if dir == "" {
		d, err := os.MkdirTemp("", "nksrun-bench-failed-")
		if err != nil {
			return "(not kept: " + err.Error() + ")"
		}
		dir = d
		*logsDir = d
	}
	base := filepath.Join(dir, fmt.Sprintf("%d-nodes-%s", b.n, strings.NewReplacer(" ", "-", ",", "").Replace(name)))
	err := errors.Join(os.MkdirAll(dir, 0o755), os.WriteFile(base+".stdout", s.stdout, 0o644), os.WriteFile(base+".stderr", s.stderr, 0o644))
	if err != nil {
		return "(not kept: " + err.Error() + ")"
	}
	return base + ".{stdout,stderr}"
}

// reset drifts every node: its file gets other content.
func (b *bench) reset(round int) error {
	for _, n := range b.tb.Nodes {
		c := fmt.Sprintf("# bench: stale config, round %d, node %s\n", round, n.Name)
		if err := os.WriteFile(n.Path(dest), []byte(c), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// wrongFiles names the nodes that do not hold the runbook's file after an
// apply that said it completed.
func (b *bench) wrongFiles() []nodeProblem {
	want, err := os.ReadFile(*srcPath)
	if err != nil {
		return []nodeProblem{{Node: "(driver)", Status: "error", Message: err.Error()}}
	}
	var out []nodeProblem
	for _, n := range b.tb.Nodes {
		got, err := os.ReadFile(n.Path(dest))
		if err != nil || !bytes.Equal(got, want) {
			out = append(out, nodeProblem{Node: n.Name, Status: "wrong file", Message: dest + " does not hold the runbook's content afterwards"})
		}
	}
	return out
}
