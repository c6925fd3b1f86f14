package optest_test

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"nksrun/engine/module"
	"nksrun/engine/module/optest"
	"nksrun/testdata/golden"
)

// counter is a node module for testing the harness: it wants
// /etc/default/counter to hold Want. Its Apply adds Step (1 = correct);
// with Step < Want-current it takes several applies to converge, which
// the harness must call "not idempotent". ProbeWrites makes its probe
// change the node, which the harness must catch too.
type counter struct {
	Step        int
	ProbeWrites bool
}

type counterParams struct {
	Want int `yaml:"want"`
}

func (counter) Name() string        { return "counter" }
func (counter) Scope() module.Scope { return module.ScopeNode }
func (counter) NewParams() any      { return &counterParams{} }
func (counter) Validate(any) error  { return nil }
func (c counter) Probes(module.Target, module.Step) ([]module.Probe, error) {
	cmd := "cat /etc/default/counter 2>/dev/null || echo 0"
	if c.ProbeWrites {
		cmd = "echo probed >> /etc/default/probed; " + cmd
	}
	return []module.Probe{{Key: "n", Command: cmd, Sudo: true}}, nil
}

func (counter) Plan(_ context.Context, _ module.Target, s module.Step, probes map[string]module.ProbeResult) (module.Planned, error) {
	want := s.Params.(*counterParams).Want
	n, err := strconv.Atoi(strings.TrimSpace(string(probes["n"].Output)))
	if err != nil {
		return module.Planned{}, err
	}
	if n >= want {
		return module.Planned{Action: module.NoOp, Summary: fmt.Sprintf("counter is %d", n)}, nil
	}
	return module.Planned{Action: module.Change, Summary: fmt.Sprintf("counter %d → %d", n, want), Fingerprint: map[string]string{"n": strconv.Itoa(n)}}, nil
}

func (c counter) Apply(ctx context.Context, t module.Target, s module.Step, p module.Planned) (module.Applied, error) {
	script := fmt.Sprintf("n=$(cat /etc/default/counter 2>/dev/null || echo 0); echo $((n + %d)) > /etc/default/counter", c.Step)
	r, err := t.Node.Runner.Run(ctx, script, module.RunOpts{Sudo: true})
	if err != nil || r.ExitCode != 0 {
		return module.Applied{}, fmt.Errorf("exit %d: %v", r.ExitCode, err)
	}
	return module.Applied{Changed: true, Summary: p.Summary}, nil
}

// recTB records failures instead of failing the real test.
type recTB struct {
	testing.TB
	mu   sync.Mutex
	msgs []string
}

func (r *recTB) Errorf(f string, a ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, fmt.Sprintf(f, a...))
}
func (r *recTB) Error(a ...any)            { r.Errorf("%s", fmt.Sprint(a...)) }
func (r *recTB) Fatalf(f string, a ...any) { r.Errorf(f, a...); runtime.Goexit() }
func (r *recTB) Fatal(a ...any)            { r.Error(a...); runtime.Goexit() }
func (r *recTB) Skipf(f string, a ...any)  { r.Errorf("SKIP: "+f, a...); runtime.Goexit() }
func (r *recTB) Fail()                     { r.Errorf("Fail") }
func (r *recTB) FailNow()                  { r.Fatal("FailNow") }
func (r *recTB) Failed() bool              { return len(r.msgs) > 0 }

func run(t *testing.T, m module.Module, file string) []string {
	r := &recTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		optest.RunCase(r, m, filepath.Join("testdata", "counter", file))
	}()
	<-done
	return r.msgs
}

// The harness passes a correct module and fails each kind of defect.
func TestHarnessCatchesDefects(t *testing.T) {
	if msgs := run(t, counter{Step: 1}, "to_one.yaml"); len(msgs) != 0 {
		t.Fatalf("a correct module failed: %q", msgs)
	}
	for _, tc := range []struct {
		name string
		m    counter
		file string
		want string
	}{
		{"converges in two applies", counter{Step: 1}, "to_two.yaml", "not idempotent: the plan after apply is change"},
		{"probe writes", counter{Step: 1, ProbeWrites: true}, "probe_writes.yaml", "planning changed the node"},
		{"wrong action", counter{Step: 1}, "wrong_action.yaml", "action = change, want no-op"},
		{"golden differs", counter{Step: 1}, "golden_differs.yaml", "output differs from"},
	} {
		if tc.file == "golden_differs.yaml" && golden.Updating() {
			continue // -update accepts any output; its golden is edited by hand
		}
		msgs := run(t, tc.m, tc.file)
		if !strings.Contains(strings.Join(msgs, "\n"), tc.want) {
			t.Errorf("%s: harness said %q, want %q", tc.name, msgs, tc.want)
		}
	}
}
