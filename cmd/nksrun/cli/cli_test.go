package cli

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// isolate gives a test its own config, cache and runbook directory
// environment: no setting of the machine leaks into it.
func isolate(t *testing.T) string {
	t.Helper()
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(home, ".config"))
	t.Setenv("XDG_CACHE_HOME", filepath.Join(home, ".cache"))
	for _, st := range settingsTable {
		t.Setenv(st.env, "")
	}
	t.Setenv("NKSRUN_CONFIG", "")
	t.Setenv("NKSRUN_SSH_CONFIG", filepath.Join(home, "no-ssh-config"))
	return home
}

func run(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := Run(context.Background(), args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

// TestCommandLine covers what needs no cluster: exit codes of validate,
// list, help and usage mistakes, and that a bad runbook is rejected with its
// position before anything else happens.
func TestCommandLine(t *testing.T) {
	isolate(t)
	tests := []struct {
		args     []string
		code     int
		stdout   string
		stderr   string
		noStdout bool
	}{
		{args: []string{"validate", "../../../runbooks/logrotate.yaml"}, code: ExitOK, stdout: "logrotate.yaml: ok (logrotate, guide §1"},
		{args: []string{"validate", "../../../testdata/runbooks/bad/unknown-key.yaml"}, code: ExitError, stderr: `unknown-key.yaml:6:5: unknown key "modul"`, noStdout: true},
		{args: []string{"validate", "../../../runbooks/logrotate.yaml", "../../../testdata/runbooks/bad/bad-expr.yaml", "../../../testdata/runbooks/bad/syntax.yaml"}, code: ExitError, stderr: "bad-expr.yaml:7:24: expression: unexpected token EOF"},
		// A bad runbook fails plan before the cluster is even looked up.
		{args: []string{"plan", "--kubeconfig", "/nonexistent", "../../../testdata/runbooks/bad/unknown-module.yaml"}, code: ExitError, stderr: `unknown module "file_synk"`},
		{args: []string{"list", "../../../runbooks"}, code: ExitOK, stdout: "§13"},
		{args: []string{"help", "plan"}, code: ExitOK, stdout: "Usage: nksrun plan"},
		{args: []string{"--version"}, code: ExitOK, stdout: "nksrun "},
		{args: []string{"version"}, code: ExitOK, stdout: "nksrun "},
		{args: []string{"plan", "--help"}, code: ExitOK, stdout: "--detailed-exitcode"},
		{args: []string{"apply", "--help"}, code: ExitOK, stdout: "Examples:"},
		{args: []string{"frobnicate"}, code: ExitUsage, stderr: `unknown command "frobnicate"`},
		{args: []string{"plan", "--no-such-flag", "x.yaml"}, code: ExitUsage, stderr: "unknown flag: --no-such-flag"},
		{args: []string{"plan"}, code: ExitUsage, stderr: "no runbook given"},
		{args: []string{"list"}, code: ExitOK, stdout: "built-in"},
		{args: []string{"plan", "--set", "novalue", "../../../runbooks/logrotate.yaml"}, code: ExitUsage, stderr: `--set "novalue": want name=value`},
		{args: []string{"apply", "../../../runbooks/logrotate.yaml"}, code: ExitError, stderr: "pass --auto-approve"},
		{args: []string{}, code: ExitUsage, stderr: "Commands:", noStdout: true},
	}
	for _, tc := range tests {
		code, out, errs := run(tc.args...)
		if code != tc.code || !strings.Contains(out, tc.stdout) || !strings.Contains(errs, tc.stderr) || (tc.noStdout && out != "") {
			t.Errorf("nksrun %s\n exit %d (want %d)\n stdout: %s\n stderr: %s", strings.Join(tc.args, " "), code, tc.code, out, errs)
		}
	}
}
