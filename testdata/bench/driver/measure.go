package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"nksrun/testdata/testbed"
)

// sample is one measured process.
type sample struct {
	wall    time.Duration
	rssMB   float64
	cpu     time.Duration // the process's own user+sys
	machine time.Duration // the whole machine's busy CPU during the run
	nodes   time.Duration // CPU of the nodes' sshds and everything they ran (reaped children)
	phases  map[string]time.Duration
	retried int // floor: nodes whose first connection attempt failed

	exit           int
	stdout, stderr []byte // for the completeness checks; dropped once checked
}

func gobuild(out, pkg string) error {
	logf("go build -o %s %s", out, pkg)
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, pkg)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return cmd.Run()
}

// measureNodes runs one process and returns its wall time, peak RSS, CPU
// (its own rusage, taken by spawn), the machine's CPU meanwhile and, with a
// testbed, the CPU its nodes spent. Any exit code is a sample; the caller
// decides what the run must have returned.
func measureNodes(tb *testbed.Testbed, bin string, args []string) (sample, error) {
	self, err := os.Executable()
	if err != nil {
		return sample{}, err
	}
	cmd := exec.Command(self, append([]string{spawnArg, bin}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	usageR, usageW, err := os.Pipe()
	if err != nil {
		return sample{}, err
	}
	defer usageR.Close()
	cmd.ExtraFiles = []*os.File{usageW} // fd 3 in the spawner
	settle(tb)
	busy0, nodes0 := machineBusy(), nodeCPU(tb)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		usageW.Close()
		return sample{}, fmt.Errorf("%s: %w", filepath.Base(bin), err)
	}
	usageW.Close()
	usageJSON, _ := io.ReadAll(usageR)
	err = cmd.Wait()
	busy1 := machineBusy()
	settle(tb) // the sshds must have reaped their per-connection children
	nodes1 := nodeCPU(tb)
	var u spawnUsage
	if jerr := json.Unmarshal(usageJSON, &u); jerr != nil {
		return sample{}, fmt.Errorf("%s: the spawner gave no usage (%v): %v\n%s", filepath.Base(bin), jerr, err, stderr.Bytes())
	}
	if u.Error != "" {
		return sample{}, fmt.Errorf("%s: %s", filepath.Base(bin), u.Error)
	}
	wall := time.Duration(u.WallNS)
	return sample{
		wall:    wall,
		rssMB:   float64(u.MaxRSSKiB) / 1024,
		cpu:     time.Duration(u.CPUNS),
		machine: busy1 - busy0,
		nodes:   nodes1 - nodes0,
		phases:  phases(stderr.Bytes(), start, start.Add(wall)),
		exit:    u.Exit,
		stdout:  stdout.Bytes(),
		stderr:  stderr.Bytes(),
	}, nil
}

// spawnArg makes the driver's own binary a spawner: "driver -spawn BIN
// ARGS..." runs BIN and writes its rusage to fd 3 as JSON.
//
// Why not wait4's ru_maxrss of a child the driver starts itself: Go starts
// children with vfork (CLONE_VM), and at exec the kernel folds the memory
// the child shared until then, the driver's, into the child's ru_maxrss.
// Every process the driver ran had a peak RSS of at least the driver's own
// (97–99 MB at 1,000 nodes, where the floor and nksrun plan both "peaked"
// at exactly that). The spawner is a fresh, small process, so what it
// folds in (a few MB) is below any figure measured.
const spawnArg = "-spawn"

type spawnUsage struct {
	WallNS    int64  `json:"wall_ns"`
	CPUNS     int64  `json:"cpu_ns"`
	MaxRSSKiB int64  `json:"maxrss_kib"`
	Exit      int    `json:"exit"`
	Error     string `json:"error,omitempty"`
}

// spawn runs args (stdio inherited) and reports its usage on fd 3; it
// exits 0 whatever the child did (the child's exit code is in the report).
func spawn(args []string) int {
	out := os.NewFile(3, "usage")
	report := func(u spawnUsage) int {
		b, _ := json.Marshal(u)
		if _, err := out.Write(b); err != nil {
			return 1
		}
		return 0
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	u := spawnUsage{WallNS: int64(wall)}
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			u.Error = err.Error()
			return report(u)
		}
		u.Exit = ee.ExitCode()
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	u.MaxRSSKiB = ru.Maxrss // KiB on Linux
	u.CPUNS = ru.Utime.Nano() + ru.Stime.Nano()
	return report(u)
}

// sshdStat reads /proc/PID/stat of a node's listening sshd (its pid is in
// StateDir/sshd.pid) and returns the fields after the ")" that ends comm
// (state is the first of them).
func sshdStat(n *testbed.Node) ([]string, string, bool) {
	b, err := os.ReadFile(n.Path(testbed.StateDir + "/sshd.pid"))
	if err != nil {
		return nil, "", false
	}
	pid := strings.TrimSpace(string(b))
	st, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return nil, pid, false
	}
	s := string(st)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+2:]), pid, true
}

// nodeCPU is the CPU time the nodes' listening sshds and all their reaped
// descendants (per-connection sshd, session shell, sudo, commands) have used:
// utime+stime+cutime+cstime of each node's sshd. Unlike /proc/stat it
// excludes whatever else the machine is doing.
func nodeCPU(tb *testbed.Testbed) time.Duration {
	if tb == nil {
		return 0
	}
	var ticks int64
	for _, n := range tb.Nodes {
		f, _, ok := sshdStat(n)
		if !ok || len(f) < 15 {
			continue
		}
		// utime, stime, cutime, cstime are fields 14-17 of stat, 11-14 here.
		for _, v := range f[11:15] {
			n, _ := strconv.ParseInt(v, 10, 64)
			ticks += n
		}
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}

// settle waits until no node sshd has a child left: only then is all the
// run's node-side CPU in the sshds' cutime/cstime. It gives up after 10 s
// plus 30 ms a node (a thousand nodes reap a thousand sessions) and says so.
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
	limit := 10*time.Second + time.Duration(len(tb.Nodes))*30*time.Millisecond
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		ents, _ := os.ReadDir("/proc")
		busy := false
		for _, e := range ents {
			if c := e.Name()[0]; c < '0' || c > '9' {
				continue
			}
			st, err := os.ReadFile("/proc/" + e.Name() + "/stat")
			if err != nil {
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
	logf("WARNING: node sshds still had children %s after a run; node CPU of the next run may include them", limit)
}

// phases reads nksrun's JSON events: start-up (process start to the first
// phase_start: flags, runbook, kubeconfig, Node list, SSH keys), plan
// (phase_start plan to the last plan host_result), apply (apply phase_start
// to the last apply host_result), and the tail (rendering, exit).
func phases(log []byte, start, end time.Time) map[string]time.Duration {
	type ev struct {
		Time  time.Time `json:"time"`
		Type  string    `json:"type"`
		Phase string    `json:"phase"`
	}
	var planStart, planEnd, applyStart, applyEnd time.Time
	sc := bufio.NewScanner(bytes.NewReader(log))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e ev
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			continue
		}
		switch {
		case e.Type == "phase_start" && e.Phase == "apply":
			applyStart = e.Time
		case e.Type == "phase_start" && e.Phase == "plan":
			planStart = e.Time
		case e.Type == "host_result" && e.Phase == "apply":
			applyEnd = e.Time
		case e.Type == "host_result" && e.Phase == "plan":
			planEnd = e.Time
		}
	}
	if planStart.IsZero() || planEnd.IsZero() {
		return nil
	}
	if !applyStart.IsZero() && !applyEnd.IsZero() && applyStart.Before(planEnd) {
		// apply --auto-approve over more nodes than --forks: each node is
		// applied once planned, so the two phases overlap.
		return map[string]time.Duration{"startup": planStart.Sub(start), "plan+apply (node by node)": applyEnd.Sub(planStart), "tail": end.Sub(applyEnd)}
	}
	p := map[string]time.Duration{"startup": planStart.Sub(start), "plan": planEnd.Sub(planStart)}
	last := planEnd
	if !applyStart.IsZero() && !applyEnd.IsZero() {
		p["render+confirm"] = applyStart.Sub(planEnd)
		p["apply+verify"] = applyEnd.Sub(applyStart)
		last = applyEnd
	}
	p["tail"] = end.Sub(last)
	return p
}

var phaseNames = []string{"startup", "plan", "plan+apply (node by node)", "render+confirm", "apply+verify", "tail"}

func fmtPhases(p map[string]time.Duration) string {
	var parts []string
	for _, k := range phaseNames {
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

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
