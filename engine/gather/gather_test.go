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
		{Key: "noeol", Command: "printf 'no newline'"},
		{Key: "empty", Command: "true"},
		{Key: "fails", Command: "echo partial; exit 3"},
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
		"plain":  {Output: []byte("hello\n")},
		"noeol":  {Output: []byte("no newline")},
		"empty":  {Output: []byte{}},
		"fails":  {Output: []byte("partial\n"), ExitCode: 3},
		"forged": {Output: []byte("--nksrun-000000000000000000000000 1\nx rc=0\n")},
		"multi":  {Output: []byte("a\n\nb\n")},
		"stderr": {Output: []byte("out\n")},
	}
	for k, w := range want {
		g := got[k]
		if string(g.Output) != string(w.Output) || g.ExitCode != w.ExitCode {
			t.Errorf("%s = %q rc=%d, want %q rc=%d", k, g.Output, g.ExitCode, w.Output, w.ExitCode)
		}
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
