package cli_test

// Attacks on a saved plan and on node identity, reproduced on the testbed
// and shown refused: nothing in a plan file or a Node's status makes nksrun
// run anything that was not reviewed, or run it on another machine.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"nksrun/cmd/nksrun/cli"
	"nksrun/engine/module"
	"nksrun/engine/planfile"
	"nksrun/engine/plans"
	"nksrun/testdata/testbed"
)

// reseal edits a saved plan and recomputes its checksum the way anyone who
// can write the file can: the checksum alone proves nothing.
func reseal(t *testing.T, path string, edit func(p *plans.Plan)) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var p plans.Plan
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	edit(&p)
	p.Checksum = ""
	if err := planfile.Seal(&p); err != nil {
		t.Fatal(err)
	}
	out, err := json.MarshalIndent(&p, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, append(out, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	// The resealed file passes the checksum: what refuses it must be nksrun
	// re-deriving the plan.
	if _, err := planfile.Read(append(out, '\n'), 0, p.CreatedAt); err != nil {
		t.Fatalf("resealed plan does not read: %v", err)
	}
}

func firstChange(t *testing.T, p *plans.Plan) *plans.StepPlan {
	t.Helper()
	for i := range p.Runbooks[0].Targets {
		tp := &p.Runbooks[0].Targets[i]
		for j := range tp.Steps {
			if tp.Steps[j].Action == module.Change {
				return &tp.Steps[j]
			}
		}
	}
	t.Fatal("plan has no change")
	return nil
}

func TestE2ESavedPlanIsReDerived(t *testing.T) {
	e := newE2E(t)
	evil := "/etc/default/evil"
	untouched := func(t *testing.T) {
		t.Helper()
		for _, n := range e.tb.Nodes {
			if _, err := os.Stat(n.Path(evil)); err == nil {
				t.Errorf("%s: %s was written", n.Name, evil)
			}
			if _, err := os.Stat(n.Path("/tmp/pwned")); err == nil {
				t.Errorf("%s: the crafted fingerprint ran as a command", n.Name)
			}
		}
		for _, n := range e.docker {
			if got := e.file(t, n); got != drifted {
				t.Errorf("%s: /etc/logrotate.d/docker changed by a refused plan: %q", n.Name, got)
			}
		}
	}
	plan := func(t *testing.T) string {
		t.Helper()
		e.reset(t)
		f := filepath.Join(t.TempDir(), "plan.json")
		if code, _, _ := nksrun(t, append([]string{"plan", "--out", f}, append(e.conn(), e.runbook)...)...); code != 0 {
			t.Fatalf("plan: exit %d", code)
		}
		return f
	}
	apply := func(t *testing.T, f string) (int, string, string) {
		t.Helper()
		return nksrun(t, append([]string{"apply", "--auto-approve", "--format", "json", "--lock-file", e.lockFile}, append(e.conn(), f)...)...)
	}

	for _, tc := range []struct {
		name string
		edit func(t *testing.T, p *plans.Plan)
		// refused: the whole plan is refused as not matching its runbook;
		// otherwise every edited target is stale and not applied.
		refused bool
	}{
		{"step params point file_sync at another file", func(t *testing.T, p *plans.Plan) {
			sp := firstChange(t, p)
			var params map[string]any
			if err := json.Unmarshal(sp.Params, &params); err != nil {
				t.Fatal(err)
			}
			params["dest"], params["validate"] = evil, "true %s"
			sp.Params, _ = json.Marshal(params)
		}, true},
		{"payload changed, summary kept", func(t *testing.T, p *plans.Plan) {
			sp := firstChange(t, p)
			sp.Data = json.RawMessage(`{"content":"ZXZpbAo=","sha256":"` + strings.Repeat("0", 64) + `"}`)
		}, true},
		{"runbook text, hash and step rewritten consistently", func(t *testing.T, p *plans.Plan) {
			rp := &p.Runbooks[0]
			rp.Source = strings.ReplaceAll(rp.Source, "/etc/logrotate.d/docker", evil)
			if rp.Source == p.Runbooks[0].Source && !strings.Contains(rp.Source, evil) {
				t.Fatal("runbook text has no dest to rewrite")
			}
			rp.SourceHash = sha256Hex(rp.Source)
			if rp.Params["dest"] != nil {
				rp.Params["dest"] = evil
			}
			sp := firstChange(t, p)
			sp.Summary = strings.ReplaceAll(sp.Summary, "/etc/logrotate.d/docker", evil)
		}, false},
		{"runbook text changed, hash kept", func(t *testing.T, p *plans.Plan) {
			p.Runbooks[0].Source += "\n# edited\n"
		}, true},
		{"a file_sync step placed under a cluster target", func(t *testing.T, p *plans.Plan) {
			sp := *firstChange(t, p)
			p.Runbooks[0].Targets = append(p.Runbooks[0].Targets, plans.TargetPlan{Kind: plans.TargetCluster, Name: "cluster", Status: plans.StatusChanges, Steps: []plans.StepPlan{sp}})
		}, true},
		{"crafted fingerprint", func(t *testing.T, p *plans.Plan) {
			sp := firstChange(t, p)
			sp.Fingerprint = map[string]string{"sha256": "x'; id > /tmp/pwned; echo '"}
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := plan(t)
			reseal(t, f, func(p *plans.Plan) { tc.edit(t, p) })
			code, out, stderr := apply(t, f)
			if code != cli.ExitError {
				t.Errorf("apply of an edited plan: exit %d, want %d", code, cli.ExitError)
			}
			if tc.refused {
				if !strings.Contains(stderr, "does not match its own runbook") || out != "" {
					t.Errorf("want the whole plan refused before any report; stderr %q stdout %q", stderr, out)
				}
			} else {
				rep := reportOf(t, out)
				stale := 0
				for _, r := range rep {
					switch r.Status {
					case plans.StatusStale:
						stale++
					case plans.StatusChanged:
						// Targets the edit did not touch may be applied:
						// they are exactly what was planned.
					}
				}
				if stale == 0 {
					t.Errorf("no target refused as stale: %+v", rep)
				}
			}
			if tc.name == "runbook text, hash and step rewritten consistently" || tc.name == "crafted fingerprint" {
				// Only the edited node was refused; the file must be
				// untouched there and nowhere is /etc/default/evil.
				for _, n := range e.tb.Nodes {
					if _, err := os.Stat(n.Path(evil)); err == nil {
						t.Errorf("%s: %s was written", n.Name, evil)
					}
					if _, err := os.Stat(n.Path("/tmp/pwned")); err == nil {
						t.Errorf("%s: the crafted fingerprint ran as a command", n.Name)
					}
				}
				return
			}
			untouched(t)
		})
	}

	t.Run("applying an unedited saved plan works, and twice is a no-op", func(t *testing.T) {
		f := plan(t)
		if code, out, _ := apply(t, f); code != 0 {
			t.Fatalf("apply: exit %d\n%s", code, out)
		}
		backups := map[string][]string{}
		for _, n := range e.docker {
			if got := e.file(t, n); got != string(e.want) {
				t.Errorf("%s not applied: %q", n.Name, got)
			}
			backups[n.Name], _ = filepath.Glob(n.Path("/etc/logrotate.d/docker") + ".*.nksrun-backup~")
		}
		code, out, _ := apply(t, f)
		if code != 0 {
			t.Fatalf("second apply of the same plan: exit %d, want 0\n%s", code, out)
		}
		for _, n := range e.docker {
			r := reportOf(t, out)[n.Name]
			if r.Status != plans.StatusOK || !strings.Contains(r.Reason, "already applied") {
				t.Errorf("%s: %s %q, want ok, already applied", n.Name, r.Status, r.Reason)
			}
			if again, _ := filepath.Glob(n.Path("/etc/logrotate.d/docker") + ".*.nksrun-backup~"); len(again) != len(backups[n.Name]) {
				t.Errorf("%s: the second apply left another backup: %v", n.Name, again)
			}
		}
	})
}

// TestE2ENodeIdentity: a Node's InternalIP is reported by its kubelet. A
// node that claims another node's address, or two nodes that swap theirs,
// must not make nksrun run one node's changes on the other.
func TestE2ENodeIdentity(t *testing.T) {
	e := newE2E(t)
	ctx := context.Background()
	nodes := e.tb.Client.CoreV1().Nodes()
	setAddress := func(t *testing.T, n *testbed.Node, addr string) {
		t.Helper()
		obj, err := nodes.Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for i := range obj.Status.Addresses {
			if obj.Status.Addresses[i].Type == corev1.NodeInternalIP {
				obj.Status.Addresses[i].Address = addr
			}
		}
		if _, err := nodes.UpdateStatus(ctx, obj, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	a, b := e.docker[0], e.docker[2]
	restore := func() { setAddress(t, a, a.Address); setAddress(t, b, b.Address) }

	check := func(t *testing.T, want string, refused ...*testbed.Node) {
		t.Helper()
		e.reset(t)
		code, out, _ := nksrun(t, append([]string{"apply", "--auto-approve", "--format", "json", "--lock-file", e.lockFile}, append(e.conn(), e.runbook)...)...)
		if code != cli.ExitError {
			t.Errorf("apply: exit %d, want %d", code, cli.ExitError)
		}
		rep := reportOf(t, out)
		for _, n := range refused {
			r := rep[n.Name]
			if r.Status != plans.StatusFailed || !strings.Contains(r.Reason, want) {
				t.Errorf("%s: %s %q, want failed with %q", n.Name, r.Status, r.Reason, want)
			}
			if got := e.file(t, n); got != drifted {
				t.Errorf("%s: file changed although the node was refused: %q", n.Name, got)
			}
		}
		// The bystander keeps working.
		if r := rep[e.docker[1].Name]; r.Status != plans.StatusChanged {
			t.Errorf("bystander %s: %s (%s), want changed", e.docker[1].Name, r.Status, r.Reason)
		}
	}

	t.Run("a node that claims another node's address: both refused", func(t *testing.T) {
		defer restore()
		setAddress(t, b, a.Address)
		check(t, "is also the address of", a, b)
	})
	t.Run("two nodes that swap addresses: both refused", func(t *testing.T) {
		defer restore()
		setAddress(t, a, b.Address)
		setAddress(t, b, a.Address)
		// Here the login users differ too, so sudo already fails; with the
		// same user the identity check below is what refuses them.
		check(t, "", a, b)
	})
	t.Run("an address that leads to another machine: identity mismatch", func(t *testing.T) {
		obj, err := nodes.Get(ctx, a.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		genuine := obj.Status.NodeInfo.MachineID
		obj.Status.NodeInfo.MachineID = strings.Repeat("5", 32)
		if _, err := nodes.UpdateStatus(ctx, obj, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		defer func() {
			obj, err := nodes.Get(ctx, a.Name, metav1.GetOptions{})
			if err == nil {
				obj.Status.NodeInfo.MachineID = genuine
				_, err = nodes.UpdateStatus(ctx, obj, metav1.UpdateOptions{})
			}
			if err != nil {
				t.Error(err)
			}
		}()
		check(t, "identity mismatch", a)
	})
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}
