package engine

import (
	"context"
	"nksrun/engine/module"
	"nksrun/engine/module/moduletest"
	"strings"
	"testing"
)

// TestVerifyRider: the module sees exactly its own output and exit code;
// verify gets the probes of the last command, read after it ran.
func TestVerifyRider(t *testing.T) {
	dir := t.TempDir()
	local := &moduletest.LocalRunner{}
	rider := &verifyRider{Runner: local, probes: []module.Probe{{Key: "fact.x", Command: "cat " + dir + "/x"}}}
	cmds := []struct {
		cmd    string
		stdin  string
		out    string
		rc     int
		factRC int
		fact   string
	}{
		{cmd: "printf 'partial line'; exit 3", out: "partial line", rc: 3, factRC: 1},
		{cmd: "set -eu\ncat > " + dir + "/x\ncase a in a) echo matched ;; esac", stdin: "written\n", out: "matched\n", fact: "written\n"},
	}
	for _, c := range cmds {
		res, err := rider.Run(context.Background(), c.cmd, module.RunOpts{Sudo: true, Stdin: strings.NewReader(c.stdin)})
		if err != nil {
			t.Fatal(err)
		}
		if string(res.Stdout) != c.out || res.ExitCode != c.rc {
			t.Errorf("%q: module saw %q rc %d, want %q rc %d", c.cmd, res.Stdout, res.ExitCode, c.out, c.rc)
		}
		got := rider.taken()["fact.x"]
		if got.ExitCode != c.factRC || string(got.Output) != c.fact {
			t.Errorf("%q: rode %q rc %d, want %q rc %d", c.cmd, got.Output, got.ExitCode, c.fact, c.factRC)
		}
	}
	// Commands without sudo are not touched, and make the reading stale:
	// verify must then read on its own.
	before := local.Calls.Load()
	res, _ := rider.Run(context.Background(), "echo plain", module.RunOpts{})
	if string(res.Stdout) != "plain\n" || local.Calls.Load() != before+1 {
		t.Errorf("non-sudo command changed: %q", res.Stdout)
	}
	if got := rider.taken(); got != nil {
		t.Errorf("a reading from before a later command was kept: %v", got)
	}
}
