package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func run(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := Run(context.Background(), args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

// TestCommandLine covers what needs no cluster: exit codes of validate,
// list, help and usage mistakes, and that a bad runbook is rejected with its
// position before anything else happens.
func TestCommandLine(t *testing.T) {
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
		{args: []string{"version"}, code: ExitOK, stdout: "nksrun "},
		{args: []string{"plan", "--help"}, code: ExitOK, stdout: "--detailed-exitcode"},
		{args: []string{"apply", "--help"}, code: ExitOK, stdout: "Examples:"},
		{args: []string{"frobnicate"}, code: ExitUsage, stderr: `unknown command "frobnicate"`},
		{args: []string{"plan", "--no-such-flag", "x.yaml"}, code: ExitUsage, stderr: "unknown flag: --no-such-flag"},
		{args: []string{"plan"}, code: ExitUsage, stderr: "no runbook given"},
		{args: []string{"plan", "--set", "novalue", "../../../runbooks/logrotate.yaml"}, code: ExitUsage, stderr: `--set "novalue": want name=value`},
		{args: []string{"apply", "../../../runbooks/logrotate.yaml"}, code: ExitError, stderr: "pass --auto-approve"},
		{args: []string{}, code: ExitUsage, stdout: "Commands:"},
	}
	for _, tc := range tests {
		code, out, errs := run(tc.args...)
		if code != tc.code || !strings.Contains(out, tc.stdout) || !strings.Contains(errs, tc.stderr) || (tc.noStdout && out != "") {
			t.Errorf("nksrun %s\n exit %d (want %d)\n stdout: %s\n stderr: %s", strings.Join(tc.args, " "), code, tc.code, out, errs)
		}
	}
}
