package runbooks_test

import (
	"strings"
	"testing"

	"nksrun/engine/plans"
	"nksrun/testdata/testbed"
)

func TestRpcStatdRestartsOnlyInactive(t *testing.T) {
	tb := testbed.New(t, testbed.Options{Nodes: []testbed.NodeSpec{nbCentOS, nbRocky, nbUbuntu}})
	statdDown, rpcbindDown, healthy := tb.Nodes[0], tb.Nodes[1], tb.Nodes[2]
	if err := statdDown.SetUnit("rpc-statd", false); err != nil {
		t.Fatal(err)
	}
	if err := rpcbindDown.SetUnit("rpcbind", false); err != nil {
		t.Fatal(err)
	}
	p := nbPlan(t, tb, "rpc-statd.yaml")
	pt := nbPlanTargets(p)
	for n, want := range map[*testbed.Node]string{statdDown: "restart rpc-statd", rpcbindDown: "restart rpcbind", healthy: ""} {
		s := pt[n.Name].Steps[0]
		if want == "" {
			if s.Action != "no-op" {
				t.Errorf("%s: %+v", n.Name, s)
			}
			continue
		}
		if s.Action != "change" || s.Summary[:len(want)] != want {
			t.Errorf("%s: plan %q, want %q…", n.Name, s.Summary, want)
		}
	}
	code, rep := nbApply(t, tb, "rpc-statd.yaml")
	if code != 0 {
		t.Fatalf("apply exit %d", code)
	}
	tr := nbTargets(rep)
	for _, n := range tb.Nodes {
		if !n.UnitActive("rpc-statd") || !n.UnitActive("rpcbind") {
			t.Errorf("%s: rpc-statd %s, rpcbind %s", n.Name, n.UnitState("rpc-statd"), n.UnitState("rpcbind"))
		}
		r := tr[n.Name]
		changed := n != healthy
		if (r.Status == plans.StatusChanged) != changed || r.Steps[0].Changed != changed {
			t.Errorf("%s: status %s, step changed %v, want changed=%v", n.Name, r.Status, r.Steps[0].Changed, changed)
		}
		if len(r.Verify) != 1 || !r.Verify[0].OK {
			t.Errorf("%s: verify %+v", n.Name, r.Verify)
		}
	}
	// Idempotent: nothing left to do.
	if p2 := nbPlan(t, tb, "rpc-statd.yaml"); p2.HasChanges() {
		t.Errorf("second plan has changes")
	}
	// A unit that cannot start fails the node with both states reported.
	if err := healthy.SetUnit("rpc-statd", false); err != nil {
		t.Fatal(err)
	}
	if err := healthy.SetUnitRestartFails("rpc-statd", true); err != nil {
		t.Fatal(err)
	}
	code, rep = nbApply(t, tb, "rpc-statd.yaml")
	r := nbTargets(rep)[healthy.Name]
	if code != 1 || r.Status != plans.StatusFailed || !strings.Contains(r.Reason, "rpc-statd failed") {
		t.Errorf("exit %d, report %+v", code, r)
	}
}
