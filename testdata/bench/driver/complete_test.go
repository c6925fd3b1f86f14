package main

import (
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"nksrun/testdata/golden"
)

// jl builds one JSON log line of nksrun's schema v1.
func jl(typ, phase, runbook, target, status, msg string) string {
	return fmt.Sprintf(`{"v":1,"time":"2026-12-01T12:00:00Z","type":%q,"phase":%q,"runbook":%q,"target":%q,"status":%q,"message":%q}`, typ, phase, runbook, target, status, msg)
}

func logOf(lines ...string) []byte { return []byte(strings.Join(lines, "\n") + "\n") }

const runStart = `{"v":1,"time":"2026-12-01T12:00:00Z","type":"run_start","command":"plan"}`
const runEnd = `{"v":1,"time":"2026-12-01T12:00:01Z","type":"run_end","status":"ok","exit_code":0}`

func TestCheckNksrun(t *testing.T) {
	nodes := []string{"n0", "n1", "n2"}
	tests := []struct {
		name     string
		log      []byte
		phases   []string
		problems []nodeProblem
		other    []string
	}{
		{"every node ok", logOf(runStart,
			jl("phase_start", "plan", "", "", "", ""),
			jl("host_result", "plan", "logrotate", "n0", "ok", ""),
			jl("host_result", "plan", "logrotate", "n1", "ok", ""),
			jl("host_result", "plan", "logrotate", "n2", "ok", ""),
			runEnd), []string{"plan"}, nil, nil},
		{"unreachable and failed nodes are named with their reason", logOf(runStart,
			jl("host_result", "plan", "logrotate", "n0", "ok", ""),
			jl("host_result", "plan", "logrotate", "n1", "unreachable", "ssh handshake timed out after 10s"),
			jl("host_result", "plan", "logrotate", "n2", "failed", "sudo: a password is required"),
			runEnd), []string{"plan"}, []nodeProblem{
			{"n1", "unreachable", "plan logrotate: ssh handshake timed out after 10s"},
			{"n2", "failed", "plan logrotate: sudo: a password is required"},
		}, nil},
		{"a node without any result is missing", logOf(runStart,
			jl("host_result", "plan", "logrotate", "n0", "ok", ""),
			jl("host_result", "plan", "logrotate", "n2", "ok", ""),
			runEnd), []string{"plan"}, []nodeProblem{{"n1", "missing", "no host_result in phase plan"}}, nil},
		{"apply must report every node in both phases", logOf(runStart,
			jl("host_result", "plan", "logrotate", "n0", "changes", ""),
			jl("host_result", "plan", "logrotate", "n1", "changes", ""),
			jl("host_result", "plan", "logrotate", "n2", "changes", ""),
			jl("host_result", "apply", "logrotate", "n0", "changed", ""),
			jl("host_result", "apply", "logrotate", "n1", "not-run", "halted"),
			runEnd), []string{"plan", "apply"}, []nodeProblem{
			{"n1", "not-run", "apply logrotate: halted"},
			{"n2", "missing", "no host_result in phase apply"},
		}, nil},
		{"doctor: a node bad in two runbooks is named once", logOf(runStart,
			jl("host_result", "plan", "logrotate", "n0", "ok", ""),
			jl("host_result", "plan", "logrotate", "n1", "unreachable", "connection refused"),
			jl("host_result", "plan", "rpc-statd", "n1", "unreachable", "connection refused"),
			jl("host_result", "plan", "rpc-statd", "n2", "skipped", ""),
			runEnd), []string{"plan"}, []nodeProblem{{"n1", "unreachable", "plan logrotate: connection refused"}}, nil},
		{"stale counts as not completed", logOf(runStart,
			jl("host_result", "plan", "logrotate", "n0", "ok", ""),
			jl("host_result", "plan", "logrotate", "n1", "ok", ""),
			jl("host_result", "plan", "logrotate", "n2", "ok", ""),
			jl("host_result", "recheck", "logrotate", "n2", "stale", "changed since the plan"),
			runEnd), []string{"plan"}, []nodeProblem{{"n2", "stale", "recheck logrotate: changed since the plan"}}, nil},
		{"a failed cluster target is a run-level problem", logOf(runStart,
			jl("host_result", "plan", "logrotate", "n0", "ok", ""),
			jl("host_result", "plan", "logrotate", "n1", "ok", ""),
			jl("host_result", "plan", "logrotate", "n2", "ok", ""),
			jl("host_result", "plan", "calico-image-repo", "cluster", "failed", "forbidden"),
			runEnd), []string{"plan"}, nil, []string{"runbook calico-image-repo, target cluster: failed: forbidden"}},
		{"no run_end: the process died", logOf(runStart,
			jl("host_result", "plan", "logrotate", "n0", "ok", ""),
			jl("host_result", "plan", "logrotate", "n1", "ok", ""),
			jl("host_result", "plan", "logrotate", "n2", "ok", ""),
		), []string{"plan"}, nil, []string{"the JSON log has no run_end: the process did not finish its run"}},
		{"text lines and garbage are ignored, an empty log misses everything", logOf("panic: boom", "goroutine 1 [running]:"),
			[]string{"plan"}, []nodeProblem{
				{"n0", "missing", "no host_result in phase plan"},
				{"n1", "missing", "no host_result in phase plan"},
				{"n2", "missing", "no host_result in phase plan"},
			}, []string{"the JSON log has no run_end: the process did not finish its run"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := checkNksrun(tt.log, nodes, tt.phases)
			if got.Total != len(nodes) {
				t.Errorf("Total = %d, want %d", got.Total, len(nodes))
			}
			if !reflect.DeepEqual(got.Problems, tt.problems) {
				t.Errorf("Problems =\n%#v\nwant\n%#v", got.Problems, tt.problems)
			}
			if !reflect.DeepEqual(got.Other, tt.other) {
				t.Errorf("Other = %q, want %q", got.Other, tt.other)
			}
			if got.empty() != (tt.problems == nil && tt.other == nil) {
				t.Errorf("empty() = %v", got.empty())
			}
		})
	}
}

func TestCheckDoctor(t *testing.T) {
	tests := []struct {
		name     string
		out      string
		runbooks int
		want     []string
	}{
		{"all diagnosed", `[{"runbook":"a","status":"not found"},{"runbook":"b","status":"found","evidence":["n0: x"]}]`, 2, nil},
		{"an error row is named with its evidence", `[{"runbook":"a","status":"not found"},{"runbook":"b","status":"error","evidence":["n0: refused","n1: refused","n2: refused","n3: refused"]}]`, 2,
			[]string{"doctor row b: error: n0: refused; n1: refused; n2: refused (and 1 more)"}},
		{"a row per runbook", `[{"runbook":"a","status":"not found"}]`, 2, []string{"doctor printed 1 rows for 2 runbooks"}},
		{"not JSON", "SECTION PROBLEM\n", 1, []string{"doctor output is not its JSON table: invalid character 'S' looking for beginning of value"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := checkDoctor([]byte(tt.out), tt.runbooks); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestCheckFloor(t *testing.T) {
	tests := []struct {
		name     string
		out      string
		nodes    int
		retried  int
		problems []nodeProblem
		other    []string
	}{
		{"complete", `{"mode":"plan","nodes":3,"ok":3,"failed":0,"retried":0}`, 3, 0, nil, nil},
		{"complete after retries", `{"mode":"plan","nodes":3,"ok":3,"failed":0,"retried":2}`, 3, 2, nil, nil},
		{"failed nodes are named", "noise\n" + `{"mode":"apply","nodes":3,"ok":1,"failed":2,"retried":1,"failures":[{"node":"n1","addr":"127.1.1.2:22","attempts":1,"error":"sudo: a password is required"},{"node":"n2","addr":"127.1.1.3:22","attempts":4,"error":"ssh handshake: EOF"}]}`, 3, 1,
			[]nodeProblem{{"n1", "failed", "sudo: a password is required"}, {"n2", "failed", "after 4 attempts: ssh handshake: EOF"}}, nil},
		{"fewer nodes than the testbed", `{"mode":"plan","nodes":2,"ok":2,"failed":0}`, 3, 0, nil,
			[]string{"floor worked on 2 nodes, the testbed has 3", "floor completed 2 of 3 nodes"}},
		{"no result", "", 3, 0, nil, []string{"floor output is not its JSON result: unexpected end of JSON input"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			retried, got := checkFloor([]byte(tt.out), tt.nodes)
			if retried != tt.retried {
				t.Errorf("retried = %d, want %d", retried, tt.retried)
			}
			if !reflect.DeepEqual(got.Problems, tt.problems) {
				t.Errorf("Problems =\n%#v\nwant\n%#v", got.Problems, tt.problems)
			}
			if !reflect.DeepEqual(got.Other, tt.other) {
				t.Errorf("Other = %q, want %q", got.Other, tt.other)
			}
		})
	}
}

func TestIncompleteError(t *testing.T) {
	var many []nodeProblem
	for i := range 215 {
		st := "unreachable"
		if i%100 == 7 {
			st = "failed"
		}
		many = append(many, nodeProblem{Node: fmt.Sprintf("node-%d", i), Status: st, Message: "ssh handshake timed out after 10s (the host accepts TCP but its SSH server does not answer)"})
	}
	tests := []struct {
		name string
		inc  *incomplete
		want string
	}{
		{"one node, exit code", &incomplete{Total: 3, Problems: []nodeProblem{{"n1", "unreachable", "connection refused"}}, Other: []string{"exit 1 (want 0)"}},
			"1 of 3 nodes not completed (1 unreachable):\n  n1: unreachable: connection refused\n  exit 1 (want 0)"},
		{"run-level only", &incomplete{Total: 3, Other: []string{"the JSON log has no run_end: the process did not finish its run"}},
			"the JSON log has no run_end: the process did not finish its run"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.inc.Error(); got != tt.want {
				t.Errorf("got\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
	t.Run("many nodes: the first with reasons, then names, then a count", func(t *testing.T) {
		got := (&incomplete{Total: 1000, Problems: many}).Error()
		lines := strings.Split(got, "\n")
		if want := "215 of 1000 nodes not completed (3 failed, 212 unreachable):"; lines[0] != want {
			t.Errorf("first line %q, want %q", lines[0], want)
		}
		if len(lines) != 1+namedInError+1 {
			t.Fatalf("%d lines, want %d:\n%s", len(lines), 1+namedInError+1, got)
		}
		if !strings.HasPrefix(lines[1], "  node-0: unreachable: ssh handshake timed out") || !strings.HasPrefix(lines[8], "  node-7: failed: ") {
			t.Errorf("reasons:\n%s", got)
		}
		also := lines[len(lines)-1]
		if !strings.HasPrefix(also, "  also: node-10, node-11, ") || !strings.HasSuffix(also, ", node-209, and 5 more") {
			t.Errorf("names line %q", also)
		}
	})
}

func TestStatOf(t *testing.T) {
	tests := []struct {
		xs   []float64
		want stat
	}{
		{nil, stat{}},
		{[]float64{3}, stat{3, 3, 3}},
		{[]float64{5, 1, 3}, stat{3, 1, 5}},
		{[]float64{4, 1, 3, 2}, stat{2.5, 1, 4}},
		{[]float64{9, 1, 9, 2, 8}, stat{8, 1, 9}},
	}
	for _, tt := range tests {
		if got := statOf(tt.xs); got != tt.want {
			t.Errorf("statOf(%v) = %v, want %v", tt.xs, got, tt.want)
		}
	}
}

func TestParseSizes(t *testing.T) {
	tests := []struct {
		in   string
		want []int
		ok   bool
	}{
		{"200", []int{200}, true},
		{"200,1000", []int{200, 1000}, true},
		{" 20 , 40 ", []int{20, 40}, true},
		{"200,", nil, false},
		{"0", nil, false},
		{"many", nil, false},
	}
	for _, tt := range tests {
		got, err := parseSizes(tt.in)
		if (err == nil) != tt.ok || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("parseSizes(%q) = %v, %v; want %v (ok %v)", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

// TestReport pins the Markdown the README takes: two sizes, every row and
// comparison, paired per-repetition ratios, floor retries, heals, phases.
func TestReport(t *testing.T) {
	s := func(wall, rss, cpu, nodeCPU float64, retried int, ph map[string]float64) sample {
		p := map[string]time.Duration{}
		for k, v := range ph {
			p[k] = time.Duration(v * float64(time.Second))
		}
		return sample{wall: time.Duration(wall * float64(time.Second)), rssMB: rss, cpu: time.Duration(cpu * float64(time.Second)),
			machine: time.Duration(2 * wall * float64(time.Second)), nodes: time.Duration(nodeCPU * float64(time.Second)), retried: retried, phases: p}
	}
	plan := map[string]float64{"startup": 0.1, "plan": 3, "tail": 0.05}
	apply := map[string]float64{"startup": 0.1, "plan": 3, "render+confirm": 0.01, "apply+verify": 2, "tail": 0.05}
	small := sizeResult{N: 200, Reps: 3, Idle: 0.02, Runbooks: 13, Runs: map[string][]sample{
		"floor plan":    {s(3.0, 20, 0.3, 6, 0, nil), s(3.2, 21, 0.3, 6.2, 0, nil), s(2.9, 20, 0.3, 6.1, 0, nil)},
		"nksrun plan":   {s(3.3, 60, 0.5, 8, 0, plan), s(3.9, 61, 0.5, 8.4, 0, plan), s(3.2, 59, 0.5, 8.1, 0, plan)},
		"nksrun doctor": {s(4.0, 80, 0.9, 9, 0, plan), s(4.4, 82, 0.9, 9.3, 0, plan), s(4.1, 81, 0.9, 9.2, 0, plan)},
		"floor apply":   {s(3.5, 20, 0.3, 7, 0, nil), s(3.6, 20, 0.3, 7.1, 0, nil), s(3.4, 20, 0.3, 7.2, 0, nil)},
		"nksrun apply":  {s(5.0, 63, 0.6, 12, 0, apply), s(6.0, 64, 0.6, 12.5, 0, apply), s(5.2, 62, 0.6, 12.1, 0, apply)},
	}}
	big := sizeResult{N: 1000, Reps: 1, Idle: 0.01, Runbooks: 13, Heals: 2, Runs: map[string][]sample{
		"floor plan":    {s(60, 70, 2, 150, 37, nil)},
		"nksrun plan":   {s(66, 95, 3, 160, 0, plan)},
		"nksrun doctor": {s(90, 120, 5, 200, 0, plan)},
	}}
	r := report{Command: "go run ./testdata/bench/driver -n 200,1000 -reps 3", Version: "commit abc1234", Cores: 2, Sizes: []sizeResult{small, big}}
	golden.Assert(t, filepath.Join(benchDir(t), "testdata", "report.golden"), []byte(renderReport(r)))

	r.Extra = "--connect-timeout 120s"
	r.Sizes = r.Sizes[1:]
	if got := renderReport(r); !strings.Contains(got, "**not a default-flags run**: nksrun also got `--connect-timeout 120s`") {
		t.Errorf("a run with extra flags must say so:\n%s", got)
	}
	r.Sizes[0].Idle = 0.6
	if got := renderReport(r); !strings.Contains(got, "**The machine was busy before measuring (60% of its CPU)") {
		t.Errorf("a run on a busy machine must say so:\n%s", got)
	}
}

func benchDir(t *testing.T) string {
	d, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	return d
}
