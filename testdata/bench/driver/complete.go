package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// A figure counts only complete runs: a run that lost nodes finishes early
// and flatters whoever lost them (issue #14: 1.30× became 1.41× once the
// fast failures were excluded). These checks read what each program says
// about every node — nksrun's JSON log, doctor's rows, the floor's result —
// and name every node that was not reached or failed.

// nodeProblem is one node a run did not complete.
type nodeProblem struct {
	Node    string
	Status  string // unreachable, failed, stale, not-run, missing (no result at all)
	Message string
}

// incomplete is why a run does not count. Its Error names the nodes.
type incomplete struct {
	Total    int // nodes the run should have completed
	Problems []nodeProblem
	Other    []string // run-level problems (exit code, no run_end, doctor rows)
}

func (e *incomplete) empty() bool { return e == nil || len(e.Problems) == 0 && len(e.Other) == 0 }

// namedInError is how many nodes the error message lists with their
// reason; the rest are listed by name only, up to namesInError.
const (
	namedInError = 10
	namesInError = 200
)

func (e *incomplete) Error() string {
	var b strings.Builder
	if len(e.Problems) > 0 {
		byStatus := map[string]int{}
		for _, p := range e.Problems {
			byStatus[p.Status]++
		}
		var parts []string
		for _, s := range slices.Sorted(maps.Keys(byStatus)) {
			parts = append(parts, fmt.Sprintf("%d %s", byStatus[s], s))
		}
		fmt.Fprintf(&b, "%d of %d nodes not completed (%s):", len(e.Problems), e.Total, strings.Join(parts, ", "))
		for i, p := range e.Problems {
			if i == namedInError {
				break
			}
			fmt.Fprintf(&b, "\n  %s: %s", p.Node, p.Status)
			if p.Message != "" {
				fmt.Fprintf(&b, ": %s", truncate(p.Message, 160))
			}
		}
		if rest := e.Problems[min(namedInError, len(e.Problems)):]; len(rest) > 0 {
			var names []string
			for i, p := range rest {
				if i == namesInError {
					names = append(names, fmt.Sprintf("and %d more", len(rest)-namesInError))
					break
				}
				names = append(names, p.Node)
			}
			fmt.Fprintf(&b, "\n  also: %s", strings.Join(names, ", "))
		}
	}
	for _, o := range e.Other {
		if b.Len() > 0 {
			b.WriteString("\n  ")
		}
		b.WriteString(o)
	}
	return b.String()
}

// badStatus are host_result statuses that mean the node was not done.
var badStatus = map[string]bool{"unreachable": true, "failed": true, "stale": true, "not-run": true}

// checkNksrun reads nksrun's JSON log (--log-format json) and reports every
// node that has a bad host_result in any phase, or none at all in one of
// the phases the run must have (plan; plan and apply). Targets that are not
// nodes (a runbook's "cluster" target) count as run-level problems when
// bad. A log without run_end means the process died mid-run.
func checkNksrun(log []byte, nodes []string, phases []string) *incomplete {
	type ev struct {
		Type    string `json:"type"`
		Phase   string `json:"phase"`
		Runbook string `json:"runbook"`
		Target  string `json:"target"`
		Status  string `json:"status"`
		Message string `json:"message"`
	}
	isNode := map[string]bool{}
	for _, n := range nodes {
		isNode[n] = true
	}
	seen := map[string]map[string]bool{} // phase -> node -> has a host_result
	bad := map[string]nodeProblem{}      // node -> its first problem
	var badOrder []string
	res := &incomplete{Total: len(nodes)}
	ended := false
	sc := bufio.NewScanner(bytes.NewReader(log))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e ev
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			continue
		}
		switch e.Type {
		case "run_end":
			ended = true
		case "host_result":
			if !isNode[e.Target] {
				if badStatus[e.Status] {
					res.Other = append(res.Other, fmt.Sprintf("runbook %s, target %s: %s: %s", e.Runbook, e.Target, e.Status, truncate(e.Message, 160)))
				}
				continue
			}
			if seen[e.Phase] == nil {
				seen[e.Phase] = map[string]bool{}
			}
			seen[e.Phase][e.Target] = true
			if badStatus[e.Status] {
				if _, dup := bad[e.Target]; !dup {
					msg := e.Message
					if e.Runbook != "" {
						msg = e.Phase + " " + e.Runbook + ": " + msg
					}
					bad[e.Target] = nodeProblem{Node: e.Target, Status: e.Status, Message: msg}
					badOrder = append(badOrder, e.Target)
				}
			}
		}
	}
	for _, ph := range phases {
		for _, n := range nodes {
			if !seen[ph][n] {
				if _, dup := bad[n]; !dup {
					bad[n] = nodeProblem{Node: n, Status: "missing", Message: "no host_result in phase " + ph}
					badOrder = append(badOrder, n)
				}
			}
		}
	}
	for _, n := range badOrder {
		res.Problems = append(res.Problems, bad[n])
	}
	if !ended {
		res.Other = append(res.Other, "the JSON log has no run_end: the process did not finish its run")
	}
	return res
}

// checkDoctor reads `nksrun doctor --format json`: a row in status error
// means a runbook could not diagnose some node (doctor itself exits 0).
// The rows must be one per runbook.
func checkDoctor(stdout []byte, runbooks int) []string {
	var rows []struct {
		Runbook  string   `json:"runbook"`
		Status   string   `json:"status"`
		Evidence []string `json:"evidence"`
	}
	if err := json.Unmarshal(stdout, &rows); err != nil {
		return []string{fmt.Sprintf("doctor output is not its JSON table: %v", err)}
	}
	var out []string
	if len(rows) != runbooks {
		out = append(out, fmt.Sprintf("doctor printed %d rows for %d runbooks", len(rows), runbooks))
	}
	for _, r := range rows {
		if r.Status == "error" {
			ev := r.Evidence
			more := ""
			if len(ev) > 3 {
				ev, more = ev[:3], fmt.Sprintf(" (and %d more)", len(r.Evidence)-3)
			}
			out = append(out, fmt.Sprintf("doctor row %s: error: %s%s", r.Runbook, truncate(strings.Join(ev, "; "), 300), more))
		}
	}
	return out
}

// floorResult is the floor's JSON line (testdata/bench/floor Result).
type floorResult struct {
	Mode     string `json:"mode"`
	Nodes    int    `json:"nodes"`
	OK       int    `json:"ok"`
	Failed   int    `json:"failed"`
	Retried  int    `json:"retried"`
	Failures []struct {
		Node     string `json:"node"`
		Addr     string `json:"addr"`
		Attempts int    `json:"attempts"`
		Error    string `json:"error"`
	} `json:"failures"`
}

// checkFloor reads the floor's result line: every node listed must have
// completed. It also returns how many nodes needed more than one attempt.
func checkFloor(stdout []byte, nodes int) (retried int, inc *incomplete) {
	inc = &incomplete{Total: nodes}
	var r floorResult
	lines := strings.Split(strings.TrimSpace(string(stdout)), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil {
		inc.Other = append(inc.Other, fmt.Sprintf("floor output is not its JSON result: %v", err))
		return 0, inc
	}
	for _, f := range r.Failures {
		msg := f.Error
		if f.Attempts > 1 {
			msg = fmt.Sprintf("after %d attempts: %s", f.Attempts, msg)
		}
		inc.Problems = append(inc.Problems, nodeProblem{Node: f.Node, Status: "failed", Message: msg})
	}
	if r.Nodes != nodes {
		inc.Other = append(inc.Other, fmt.Sprintf("floor worked on %d nodes, the testbed has %d", r.Nodes, nodes))
	}
	if r.OK != nodes && len(r.Failures) == 0 {
		inc.Other = append(inc.Other, fmt.Sprintf("floor completed %d of %d nodes", r.OK, nodes))
	}
	return r.Retried, inc
}

func truncate(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n]) + "…"
	}
	return s
}
