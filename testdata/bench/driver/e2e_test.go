package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"nksrun/testdata/testbed"
)

// TestRefusesIncompleteRuns runs the driver's measuring step against a real
// 3-node testbed with the real nksrun and floor: complete runs are kept;
// once one node's sudo asks for a password, nksrun plan, nksrun doctor
// (which exits 0 all the same) and the floor each fail the benchmark with
// that node named, their output kept on disk, and nothing is recorded. A
// node stopped from outside is restarted before the next run and counted.
func TestRefusesIncompleteRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds nksrun and starts a testbed")
	}
	tb := testbed.New(t, testbed.Options{Prefix: "benchtest", Nodes: []testbed.NodeSpec{
		{OSImage: "CentOS Linux 7 (Core)", Runtime: "docker://20.10.7"},
		{OSImage: "Rocky Linux 8.10 (Green Obsidian)", Runtime: "docker://20.10.7"},
		{OSImage: "Ubuntu 22.04.4 LTS", Runtime: "docker://20.10.7"},
	}})
	root, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	*nksrun, *floorBin = filepath.Join(work, "nksrun"), filepath.Join(work, "floor")
	for bin, pkg := range map[string]string{*nksrun: "nksrun/cmd/nksrun", *floorBin: "nksrun/testdata/bench/floor"} {
		if err := gobuild(bin, pkg); err != nil {
			t.Fatalf("go build %s: %v", pkg, err)
		}
	}
	*rbPath, *srcPath = filepath.Join(root, "runbooks/logrotate.yaml"), filepath.Join(root, "runbooks/files/docker-logrotate.conf")
	*logsDir = t.TempDir()
	rbs, err := filepath.Glob(filepath.Join(root, "runbooks/*.yaml"))
	if err != nil || len(rbs) == 0 {
		t.Fatalf("runbooks: %v", err)
	}
	b := &bench{n: len(tb.Nodes), work: work, doctorRBs: rbs, tb: tb, res: &sizeResult{Runs: map[string][]sample{}}}
	for _, n := range tb.Nodes {
		b.names = append(b.names, n.Name)
	}
	ctx := t.Context()

	// Complete runs count.
	if err := b.do(ctx, "warm-up", "floor apply", 0, func() error { return b.reset(0) }); err != nil {
		t.Fatal(err)
	}
	if err := b.do(ctx, "warm-up", "nksrun apply", 0, func() error { return b.reset(1) }); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"floor plan", "nksrun plan", "nksrun doctor"} {
		if err := b.do(ctx, "repetition 1 of 1", k, 0, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []string{"floor apply", "nksrun apply"} {
		if err := b.do(ctx, "repetition 1 of 1", k, 0, func() error { return b.reset(2) }); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []string{"floor plan", "nksrun plan", "nksrun doctor", "floor apply", "nksrun apply"} {
		if got := len(b.res.Runs[k]); got != 1 {
			t.Errorf("%s: %d samples recorded, want 1", k, got)
		}
	}
	if r := b.res.Runs["nksrun plan"]; len(r) == 1 && (r[0].stderr != nil || r[0].wall <= 0 || r[0].rssMB <= 0) {
		t.Errorf("a kept sample holds its figures, not its output: %+v", r[0])
	}

	// A node stopped from outside is restarted before the run, which counts.
	tb.Nodes[2].Stop()
	if err := b.do(ctx, "repetition 2 of 2", "nksrun plan", 0, nil); err != nil {
		t.Fatalf("after a node was stopped from outside: %v", err)
	}
	if b.res.Heals != 1 || len(b.res.Runs["nksrun plan"]) != 2 {
		t.Errorf("heals %d, nksrun plan samples %d; want 1 and 2", b.res.Heals, len(b.res.Runs["nksrun plan"]))
	}

	// One node fails: no run of it counts.
	bad := tb.Nodes[1]
	if err := bad.SetSudoPassword(true); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"nksrun plan", "nksrun doctor", "floor plan", "nksrun apply", "floor apply"} {
		before := len(b.res.Runs[k])
		var prep func() error
		if strings.HasSuffix(k, "apply") {
			prep = func() error { return b.reset(3) }
		}
		err := b.do(ctx, "repetition 3 of 3", k, 0, prep)
		if err == nil {
			t.Errorf("%s with %s failing: the run counted", k, bad.Name)
			continue
		}
		msg := err.Error()
		for _, want := range []string{"repetition 3 of 3, " + k, "1 of 3 nodes not completed", bad.Name + ": failed", "password", "its whole output: " + *logsDir} {
			if !strings.Contains(msg, want) {
				t.Errorf("%s: the error does not say %q:\n%s", k, want, msg)
			}
		}
		for _, ok := range tb.Nodes {
			if ok != bad && strings.Contains(msg, ok.Name) {
				t.Errorf("%s: the error names %s, which completed:\n%s", k, ok.Name, msg)
			}
		}
		if got := len(b.res.Runs[k]); got != before {
			t.Errorf("%s: a failed run was recorded (%d samples, want %d)", k, got, before)
		}
	}
	kept, _ := filepath.Glob(filepath.Join(*logsDir, "*.stderr"))
	if len(kept) != 5 {
		t.Errorf("kept outputs %v, want one per failed run (5)", kept)
	}
	if out, err := os.ReadFile(filepath.Join(*logsDir, "3-nodes-repetition-3-of-3-nksrun-doctor.stdout")); err != nil || !strings.Contains(string(out), `"status": "error"`) {
		t.Errorf("doctor's kept output: %v\n%s", err, out)
	}
}
