package gather

import (
	"context"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"

	"nksrun/engine/module"
	"nksrun/engine/module/moduletest"
	"nksrun/engine/runbook"
)

func TestRunProbesOneRoundTrip(t *testing.T) {
	probes := []module.Probe{
		{Key: "plain", Command: "echo hello"},
		{Key: "noeol", Command: "printf 'no newline'", Sudo: true},
		{Key: "empty", Command: "true"},
		{Key: "fails", Command: "echo partial; exit 3", Sudo: true},
		{Key: "userfails", Command: "echo user partial; exit 4"},
		// Output that looks like a frame must not confuse the parser.
		{Key: "forged", Command: "printf '%s\\n' '--nksrun-000000000000000000000000 1' 'x rc=0'"},
		{Key: "multi", Command: "printf 'a\\n\\nb\\n'"},
		{Key: "stderr", Command: "echo out; echo err >&2"},
	}
	r := &moduletest.LocalRunner{}
	got, err := Run(context.Background(), r, probes)
	if err != nil {
		t.Fatal(err)
	}
	if r.Calls.Load() != 1 {
		t.Fatalf("probes took %d execs, want 1", r.Calls.Load())
	}
	want := map[string]module.ProbeResult{
		"plain":     {Output: []byte("hello\n")},
		"noeol":     {Output: []byte("no newline")},
		"empty":     {Output: []byte{}},
		"fails":     {Output: []byte("partial\n"), ExitCode: 3},
		"userfails": {Output: []byte("user partial\n"), ExitCode: 4},
		"forged":    {Output: []byte("--nksrun-000000000000000000000000 1\nx rc=0\n")},
		"multi":     {Output: []byte("a\n\nb\n")},
		"stderr":    {Output: []byte("out\n")},
	}
	for k, w := range want {
		g := got[k]
		if string(g.Output) != string(w.Output) || g.ExitCode != w.ExitCode {
			t.Errorf("%s = %q rc=%d, want %q rc=%d", k, g.Output, g.ExitCode, w.Output, w.ExitCode)
		}
	}
}

// fakeRunner answers one exec with canned output and keeps what it was sent.
type fakeRunner struct {
	res     func(command string, opts module.RunOpts) module.RunResult
	command string
	opts    module.RunOpts
}

func (f *fakeRunner) Run(_ context.Context, command string, opts module.RunOpts) (module.RunResult, error) {
	f.command, f.opts = command, opts
	return f.res(command, opts), nil
}

// Probes that asked not to be root ride on the root exec as its user
// script: no sudo of their own (each cost a node about 5 ms of CPU and an
// auth log line), and when sudo refuses, the error says so.
func TestUserProbesRideWithoutSudo(t *testing.T) {
	probes := []module.Probe{
		{Key: "root", Command: "id -u", Sudo: true},
		{Key: "user", Command: "df -P /"},
	}
	f := &fakeRunner{res: func(string, module.RunOpts) module.RunResult { return module.RunResult{} }}
	_, _ = Run(context.Background(), f, probes)
	if !f.opts.Sudo || !strings.Contains(f.opts.UserScript, "df -P /") || strings.Contains(f.opts.UserScript, "sudo") {
		t.Fatalf("user probe not in the user script: opts %+v", f.opts)
	}
	if strings.Contains(f.command, "df -P") || strings.Contains(f.command, "sudo") || !strings.Contains(f.command, "id -u") {
		t.Fatalf("root script: %q", f.command)
	}

	// sudo refused: the user part printed its frame, the root part never ran.
	refused := &fakeRunner{res: func(_ string, o module.RunOpts) module.RunResult {
		b := o.UserScript[strings.Index(o.UserScript, "--nksrun-"):]
		boundary := b[:strings.IndexByte(b, ' ')]
		return module.RunResult{
			Stdout:   []byte(boundary + " 0\n/dev/sda 1 2 3\n\n" + boundary + " rc=0\n"),
			Stderr:   []byte("sudo: a password is required\n"),
			ExitCode: 1,
		}
	}}
	_, err := Run(context.Background(), refused, probes)
	if err == nil || !strings.Contains(err.Error(), "sudo: a password is required") {
		t.Fatalf("refused sudo: err = %v, want the sudo message", err)
	}

	// Only user probes: no sudo at all.
	f = &fakeRunner{res: func(string, module.RunOpts) module.RunResult { return module.RunResult{} }}
	_, _ = Run(context.Background(), f, probes[1:])
	if f.opts.Sudo || f.opts.UserScript != "" || !strings.Contains(f.command, "df -P /") {
		t.Fatalf("user-only probes: command %q opts %+v", f.command, f.opts)
	}

	// Where probes must ride on a root command (verify after a change),
	// a user probe goes through sudo -u the login user.
	script, _ := Script(probes)
	if !strings.Contains(script, `sudo -n -u "${SUDO_USER:-$(id -un)}" -- sh -c 'df -P /'`) {
		t.Fatalf("root script for a user probe: %q", script)
	}
}

func TestParseFact(t *testing.T) {
	tests := []struct {
		parse string
		out   string
		rc    int
		want  any
		err   bool
	}{
		{"", "  3.10.0 \n", 0, "3.10.0", false},
		{"text", "x", 1, nil, false},
		{"lines", "a\n\n b \n", 0, []any{"a", "b"}, false},
		{"int", " 85\n", 0, 85, false},
		{"int", "eighty", 0, nil, true},
		{"json", `{"a":[1,2]}`, 0, map[string]any{"a": []any{1.0, 2.0}}, false},
		{"json", `{`, 0, nil, true},
		{"kv", "ID=\"rocky\"\nVERSION_ID=8.10\nnoise\n", 0, map[string]any{"ID": "rocky", "VERSION_ID": "8.10"}, false},
		{"exitcode", "", 3, 3, false},
	}
	for _, tc := range tests {
		got, err := parseFact("f", runbook.Fact{Parse: tc.parse}, module.ProbeResult{Output: []byte(tc.out), ExitCode: tc.rc})
		if (err != nil) != tc.err || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parse %q of %q (rc %d) = %#v, %v; want %#v (err %v)", tc.parse, tc.out, tc.rc, got, err, tc.want, tc.err)
		}
	}
}

func TestIdentityMismatch(t *testing.T) {
	node := map[string]any{"bootID": "b-1", "machineID": "M-1", "systemUUID": "ABC-DEF"}
	for _, tc := range []struct {
		name string
		host map[string]any
		want string // substring; "" = same machine
	}{
		{"same machine", map[string]any{"bootID": "b-1", "machineID": "M-1", "productUUID": "abc-def"}, ""},
		{"host reports nothing (no dmi, old kernel)", map[string]any{"bootID": "", "machineID": "", "productUUID": ""}, ""},
		{"another machine", map[string]any{"bootID": "b-2", "machineID": "M-2"}, "boot id: Node says b-1, host says b-2; machine id: Node says M-1, host says M-2"},
		{"uuid differs", map[string]any{"bootID": "b-1", "machineID": "M-1", "productUUID": "xyz"}, "system uuid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := IdentityMismatch(node, tc.host)
			if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
				t.Errorf("IdentityMismatch = %q, want %q", got, tc.want)
			}
		})
	}
	if got := IdentityMismatch(map[string]any{}, map[string]any{"bootID": "x"}); got != "" {
		t.Errorf("a Node without identity fields refused a host: %q", got)
	}
}

// TestHostFactsFromBuiltins runs the host.* script with a real sh and checks
// each value against what the machine says.
func TestHostFactsFromBuiltins(t *testing.T) {
	res, err := Run(context.Background(), &moduletest.LocalRunner{}, BuiltinProbes)
	if err != nil {
		t.Fatal(err)
	}
	h := HostFacts(res)
	read := func(p string) string {
		b, _ := os.ReadFile(p)
		return strings.TrimSpace(string(b))
	}
	uname, _ := exec.Command("uname", "-r").Output()
	for name, want := range map[string]string{
		"bootID":    read("/proc/sys/kernel/random/boot_id"),
		"cmdline":   read("/proc/cmdline"),
		"kernel":    strings.TrimSpace(string(uname)),
		"machineID": read("/etc/machine-id"),
	} {
		if h[name] != want {
			t.Errorf("host.%s = %q, want %q", name, h[name], want)
		}
	}
	if h["os"] == "" {
		t.Error("host.os is empty")
	}
	if len(h) != len(hostFields) {
		t.Errorf("host facts %v", h)
	}
}
