package systemdrestart

import (
	"context"
	"strings"
	"testing"

	"nksrun/engine/module"
)

func TestPlan(t *testing.T) {
	m := Module{}
	p := &Params{Units: []string{"rpcbind", "rpc-statd"}}
	if err := m.Validate(p); err != nil {
		t.Fatal(err)
	}
	plan := func(out string, always bool) module.Planned {
		p.Always = always
		pl, err := m.Plan(context.Background(), module.Target{}, "", p, map[string]module.ProbeResult{probeState: {Output: []byte(out)}})
		if err != nil {
			t.Fatal(err)
		}
		return pl
	}
	if pl := plan("rpcbind active\nrpc-statd active\n", false); pl.Action != module.NoOp {
		t.Fatalf("%+v", pl)
	}
	pl := plan("rpcbind active\nrpc-statd failed\n", false)
	if pl.Action != module.Change || !strings.HasPrefix(pl.Summary, "restart rpc-statd ") || pl.Outputs["before"].(map[string]any)["rpc-statd"] != "failed" {
		t.Fatalf("%+v", pl)
	}
	if pl := plan("rpcbind active\nrpc-statd active\n", true); pl.Action != module.Change || !strings.HasPrefix(pl.Summary, "restart rpcbind, rpc-statd") {
		t.Fatalf("always: %+v", pl)
	}
	for _, bad := range [][]string{nil, {"a b"}, {"x;rm"}, {"a", "a"}} {
		if m.Validate(&Params{Units: bad}) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
