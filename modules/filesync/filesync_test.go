package filesync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"nksrun/engine/module"
	"nksrun/engine/module/moduletest"
)

func me(t *testing.T) (string, string) {
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	g, err := user.LookupGroupId(u.Gid)
	if err != nil {
		t.Fatal(err)
	}
	return u.Username, g.Name
}

func probe(t *testing.T, m module.Module, tgt module.Target, s module.Step) map[string]module.ProbeResult {
	t.Helper()
	probes, err := m.(module.Prober).Probes(tgt, s)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]module.ProbeResult{}
	for _, p := range probes {
		r, err := (&moduletest.LocalRunner{}).Run(context.Background(), p.Command, module.RunOpts{})
		if err != nil {
			t.Fatal(err)
		}
		out[p.Key] = module.ProbeResult{Output: r.Stdout, ExitCode: r.ExitCode}
	}
	return out
}

func setup(t *testing.T, content, validate string) (module.Module, module.Target, module.Step, string) {
	dir := t.TempDir()
	owner, group := me(t)
	c := content
	p := &Params{Dest: filepath.Join(dir, "docker"), Content: &c, Mode: "0644", Owner: owner, Group: group, Validate: validate}
	m := New()
	if err := m.Validate(p); err != nil {
		t.Fatal(err)
	}
	return m, module.Target{Node: &module.Node{Name: "n1", Runner: &moduletest.LocalRunner{}}, RunbookDir: dir}, module.Step{ID: "config", Params: p}, p.Dest
}

func plan(t *testing.T, m module.Module, tgt module.Target, s module.Step) module.Planned {
	t.Helper()
	pl, err := m.Plan(context.Background(), tgt, s, probe(t, m, tgt, s))
	if err != nil {
		t.Fatal(err)
	}
	return pl
}

func TestPlanApplyIdempotent(t *testing.T) {
	m, tgt, s, dest := setup(t, "rotate 10\n", "")
	pl := plan(t, m, tgt, s)
	if pl.Action != module.Change || !strings.HasPrefix(pl.Summary, "create ") || !strings.Contains(pl.Diff, "+rotate 10") {
		t.Fatalf("fresh plan = %+v", pl)
	}
	if _, err := m.Apply(context.Background(), tgt, s, pl); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(dest); string(b) != "rotate 10\n" {
		t.Fatalf("dest = %q", b)
	}
	if fi, _ := os.Stat(dest); fi.Mode().Perm() != 0o644 {
		t.Fatalf("mode = %v", fi.Mode())
	}
	if pl := plan(t, m, tgt, s); pl.Action != module.NoOp {
		t.Fatalf("second plan = %+v, want no-op", pl)
	}
	// A mode change alone is drift too.
	os.Chmod(dest, 0o600)
	if pl := plan(t, m, tgt, s); pl.Action != module.Change || !strings.Contains(pl.Reason, "mode 0600, want 0644") || pl.Diff != "" {
		t.Fatalf("mode drift plan = %+v", pl)
	}
	assertNoTemp(t, filepath.Dir(dest))
}

func TestApplyRefusesStale(t *testing.T) {
	m, tgt, s, dest := setup(t, "new\n", "")
	os.WriteFile(dest, []byte("old\n"), 0o644)
	pl := plan(t, m, tgt, s)
	os.WriteFile(dest, []byte("edited by hand\n"), 0o644)
	_, err := m.Apply(context.Background(), tgt, s, pl)
	if !errors.Is(err, module.ErrStale) {
		t.Fatalf("apply after a hand edit: err = %v, want ErrStale", err)
	}
	if b, _ := os.ReadFile(dest); string(b) != "edited by hand\n" {
		t.Fatalf("stale apply overwrote the file: %q", b)
	}
	assertNoTemp(t, filepath.Dir(dest))
}

func TestValidateFailureLeavesFileUntouched(t *testing.T) {
	m, tgt, s, dest := setup(t, "broken\n", "grep -q rotate %s")
	os.WriteFile(dest, []byte("rotate 5\n"), 0o644)
	pl := plan(t, m, tgt, s)
	_, err := m.Apply(context.Background(), tgt, s, pl)
	if err == nil || !strings.Contains(err.Error(), "validate failed") {
		t.Fatalf("err = %v, want validate failure", err)
	}
	if b, _ := os.ReadFile(dest); string(b) != "rotate 5\n" {
		t.Fatalf("file changed after failed validation: %q", b)
	}
	assertNoTemp(t, filepath.Dir(dest))
}

// TestTruncatedUploadLeavesNoPartialFile feeds the install script less than
// the planned content, as a dropped connection would. With a validator that
// fails on the truncated content (it runs before the upload's hash is
// checked), the failure is still reported as the upload's, not the
// content's.
func TestTruncatedUploadLeavesNoPartialFile(t *testing.T) {
	for _, tc := range []struct{ name, content, validate string }{
		{"no validator", strings.Repeat("line\n", 1000), ""},
		{"validator fails on the truncated content", strings.Repeat("line\n", 999) + "rotate 5\n", "grep -q rotate %s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, tgt, s, dest := setup(t, tc.content, tc.validate)
			os.WriteFile(dest, []byte("old\n"), 0o644)
			pl := plan(t, m, tgt, s)
			p := s.Params.(*Params)
			script := installScript(p, data{Hash: pl.Outputs["sha256"].(string)}, pl.Fingerprint["sha256"], "20260101000000", "0123456789abcdef")
			res, err := (&moduletest.LocalRunner{}).Run(context.Background(), script, module.RunOpts{Stdin: strings.NewReader(strings.Repeat("line\n", 10))})
			if err != nil {
				t.Fatal(err)
			}
			if res.ExitCode != exitCorrupt || !strings.Contains(string(res.Stderr), "upload incomplete") {
				t.Fatalf("exit = %d (%s), want %d: upload incomplete", res.ExitCode, res.Stderr, exitCorrupt)
			}
			if b, _ := os.ReadFile(dest); string(b) != "old\n" {
				t.Fatalf("partial upload replaced the file: %q", b)
			}
			assertNoTemp(t, filepath.Dir(dest))
		})
	}
}

func TestBackup(t *testing.T) {
	m, tgt, s, dest := setup(t, "new\n", "")
	s.Params.(*Params).Backup = true
	os.WriteFile(dest, []byte("old\n"), 0o644)
	if _, err := m.Apply(context.Background(), tgt, s, plan(t, m, tgt, s)); err != nil {
		t.Fatal(err)
	}
	baks, _ := filepath.Glob(dest + ".*.nksrun-backup~")
	if len(baks) != 1 {
		t.Fatalf("backups = %v", baks)
	}
	if b, _ := os.ReadFile(baks[0]); string(b) != "old\n" {
		t.Fatalf("backup = %q", b)
	}
}

func TestSensitiveHidesContent(t *testing.T) {
	m, tgt, s, _ := setup(t, "password=hunter2\n", "")
	s.Params.(*Params).Sensitive = true
	pl := plan(t, m, tgt, s)
	if strings.Contains(pl.Diff, "hunter2") || strings.Contains(string(pl.Data), "hunter2") {
		t.Fatalf("sensitive content leaked into the plan: %+v %s", pl, pl.Data)
	}
}

func TestValidateParams(t *testing.T) {
	c := "x"
	tests := []struct {
		p    Params
		want string
	}{
		{Params{Dest: "etc/x", Content: &c}, "clean absolute path"},
		{Params{Dest: "/etc/../x", Content: &c}, "clean absolute path"},
		{Params{Dest: "/etc/x"}, "exactly one of src or content"},
		{Params{Dest: "/etc/x", Src: "a", Content: &c}, "exactly one of src or content"},
		{Params{Dest: "/etc/x", Content: &c, Mode: "rw-r--r--"}, "octal"},
		{Params{Dest: "/etc/x", Content: &c, Owner: "root;rm"}, "not a user name"},
		{Params{Dest: "/etc/x", Content: &c, Validate: "logrotate -d"}, "%s exactly once"},
		{Params{Dest: "/etc/x", Content: &c, Mode: "644"}, ""},
	}
	for _, tc := range tests {
		err := Module{}.Validate(&tc.p)
		if got := fmt.Sprint(err); (tc.want == "" && err != nil) || (tc.want != "" && !strings.Contains(got, tc.want)) {
			t.Errorf("Validate(%+v) = %v, want %q", tc.p, err, tc.want)
		}
	}
}

func assertNoTemp(t *testing.T, dir string) {
	t.Helper()
	left, _ := filepath.Glob(filepath.Join(dir, ".nksrun-*"))
	if len(left) > 0 {
		t.Fatalf("temp files left behind: %v", left)
	}
}

// TestLeftoverTempCleanup: a temp file of an upload killed by SIGKILL is
// seen by the plan and removed by the next install once it is an hour old.
func TestLeftoverTempCleanup(t *testing.T) {
	m, tgt, s, dest := setup(t, "new\n", "")
	old := filepath.Join(filepath.Dir(dest), ".nksrun-docker.abc123~")
	fresh := filepath.Join(filepath.Dir(dest), ".nksrun-docker.def456~")
	for _, f := range []string{old, fresh} {
		if err := os.WriteFile(f, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	hourAgo := time.Now().Add(-2 * time.Hour)
	os.Chtimes(old, hourAgo, hourAgo)
	pl := plan(t, m, tgt, s)
	if !strings.Contains(string(pl.Data), `"cleanup":true`) {
		t.Fatalf("plan did not see the leftovers: %s", pl.Data)
	}
	if _, err := m.Apply(context.Background(), tgt, s, pl); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Errorf("old leftover not removed: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("a recent temp file (maybe a running upload) was removed: %v", err)
	}
}

// TestApplyRefusesMalformedPlanValues: values from a plan that reach the
// root shell are format-checked before any command runs (a crafted
// fingerprint once ran `id` as root).
func TestApplyRefusesMalformedPlanValues(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(p *Params, pl *module.Planned)
	}{
		{"fingerprint with a command", func(_ *Params, pl *module.Planned) { pl.Fingerprint["sha256"] = "x' ]; touch /tmp/pwned; [ '" }},
		{"payload digest with a command", func(_ *Params, pl *module.Planned) {
			pl.Data = json.RawMessage(`{"content":"bmV3Cg==","sha256":"$(touch /tmp/pwned)"}`)
		}},
		{"mode with a command", func(p *Params, _ *module.Planned) { p.Mode = "0644; touch /tmp/pwned" }},
		{"relative dest", func(p *Params, _ *module.Planned) { p.Dest = "../../etc/shadow" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, tgt, s, dest := setup(t, "new\n", "")
			runner := &moduletest.LocalRunner{}
			tgt.Node.Runner = runner
			pl := plan(t, m, tgt, s)
			before := runner.Calls.Load()
			tc.edit(s.Params.(*Params), &pl)
			if _, err := m.Apply(context.Background(), tgt, s, pl); err == nil {
				t.Fatal("apply accepted a malformed plan value")
			}
			if runner.Calls.Load() != before {
				t.Error("a command ran on the node before the value was refused")
			}
			if _, err := os.Stat(dest); err == nil {
				t.Error("dest was written")
			}
		})
	}
}
