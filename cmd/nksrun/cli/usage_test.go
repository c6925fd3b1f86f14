package cli

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"nksrun/engine/planfile"
	"nksrun/engine/plans/planstest"
	"nksrun/engine/redact"
	"nksrun/inventory"

	"golang.org/x/crypto/ssh"
)

// TestUsageErrorsBeforeContact: every usage mistake exits 64 with one
// message, before the cluster is looked up (--kubeconfig /nonexistent would
// otherwise fail with exit 1), and a mistyped name gets a suggestion.
func TestUsageErrorsBeforeContact(t *testing.T) {
	home := isolate(t)
	kc := []string{"--kubeconfig", "/nonexistent"}
	tests := []struct {
		args   []string
		stderr string
	}{
		{[]string{"plna"}, `unknown command "plna"; did you mean "plan"?`},
		{[]string{"help", "aply"}, `did you mean "apply"?`},
		{[]string{"plan", "--outptu", "json", "logrotate"}, "unknown flag: --outptu; did you mean --output?"},
		{[]string{"plan", "--kubecnofig", "x", "logrotate"}, "did you mean --kubeconfig?"},
		{[]string{"plan", "-o", "jsno", "logrotate"}, `-o/--output "jsno": want text, markdown, json, yaml (did you mean "json"?)`},
		{[]string{"plan", "--format", "yml", "logrotate"}, `-o/--output "yml"`},
		{[]string{"plan", "-o", "plan.json", "logrotate"}, "the plan file is --out FILE"},
		{[]string{"inventory", "-o", "markdown"}, `-o/--output "markdown": want text, json, yaml`},
		{[]string{"doctor", "-o", "html"}, `-o/--output "html"`},
		{[]string{"apply", "-o", "xml", "logrotate"}, `-o/--output "xml"`},
		{[]string{"show", "-o", "xml", "p.json"}, `-o/--output "xml"`},
		{[]string{"version", "-o", "markdown"}, `-o/--output "markdown"`},
		{[]string{"plan", "--forks", "0", "logrotate"}, "--forks 0: want at least 1"},
		{[]string{"apply", "--forks", "-1", "logrotate"}, "--forks -1: want at least 1"},
		{[]string{"plan", "--host-key-policy", "yolo", "logrotate"}, "--host-key-policy"},
		{[]string{"plan", "--log-format", "xml", "logrotate"}, `--log-format "xml"`},
		{[]string{"apply", "--on-stale", "maybe", "logrotate"}, `--on-stale "maybe"`},
		{[]string{"plan", "--max-failures", "-2", "logrotate"}, "--max-failures -2"},
		{[]string{"plan", "--connect-timeout", "0s", "logrotate"}, "--connect-timeout 0s"},
		{[]string{"plan", "--limit", "a,,b", "logrotate"}, `--limit "a,,b": empty pattern`},
		{[]string{"plan", "--limit", "[", "logrotate"}, `--limit "["`},
		{[]string{"plan", "-l", "a=(", "logrotate"}, `-l/--selector "a=("`},
		{[]string{"plan", "--set", "x", "logrotate"}, `--set "x": want name=value`},
		{[]string{"plan", "logrotat"}, `no runbook "logrotat"`},
		{[]string{"plan", "--out", home, "logrotate"}, "is a directory"},
		{[]string{"cat", "logrotat"}, `did you mean "logrotate"?`},
		{[]string{"completion", "tcsh"}, `shell "tcsh"`},
		{[]string{"config", "edit"}, "want: config view"},
	}
	for _, tc := range tests {
		args := append(append([]string(nil), tc.args[:1]...), append(kc, tc.args[1:]...)...)
		if tc.args[0] == "plna" || tc.args[0] == "help" || tc.args[0] == "cat" || tc.args[0] == "completion" || tc.args[0] == "version" || tc.args[0] == "show" {
			args = tc.args
		}
		code, out, errs := run(args...)
		if code != ExitUsage || !strings.Contains(errs, tc.stderr) || out != "" {
			t.Errorf("nksrun %s\n exit %d (want 64)\n stdout: %s\n stderr: %s", strings.Join(args, " "), code, out, errs)
		}
		if n := strings.Count("\n"+errs, "\nnksrun"); n != 1 {
			t.Errorf("nksrun %s: error printed more than once:\n%s", strings.Join(args, " "), errs)
		}
	}
	// A config file with an unknown key is a usage mistake too.
	cfg := filepath.Join(home, ".config", "nksrun", "config.yaml")
	_ = os.MkdirAll(filepath.Dir(cfg), 0o755)
	_ = os.WriteFile(cfg, []byte("kubeconfg: /x\n"), 0o644)
	if code, _, errs := run("plan", "logrotate"); code != ExitUsage || !strings.Contains(errs, `unknown key "kubeconfg"; did you mean "kubeconfig"?`) {
		t.Errorf("config with an unknown key: exit %d, %s", code, errs)
	}
	// ... but it does not keep help and version from working.
	for _, args := range [][]string{{"version"}, {"help", "plan"}, {"cat", "logrotate"}} {
		if code, _, errs := run(args...); code != 0 {
			t.Errorf("nksrun %v with a broken config file: exit %d %s", args, code, errs)
		}
	}
}

// TestOutputFormats: -o works on every command that prints data, and the
// saved plan is --out (not -o).
func TestOutputFormats(t *testing.T) {
	home := isolate(t)
	p, _ := planstest.Golden()
	p.Runbooks = p.Runbooks[:1]
	if err := planfile.Seal(p); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(p)
	planPath := filepath.Join(home, "plan.json")
	if err := os.WriteFile(planPath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"version", "-o", "json"}, `"version":`},
		{[]string{"version", "-o", "yaml"}, "version: "},
		{[]string{"list", "-o", "json"}, `"origin": "built-in"`},
		{[]string{"list", "--output", "yaml"}, "origin: built-in"},
		{[]string{"validate", "-o", "json", "logrotate"}, `"name": "logrotate"`},
		{[]string{"show", "-o", "markdown", planPath}, "## nksrun plan"},
		{[]string{"show", "-o", "yaml", planPath}, "format_version: 1"},
		{[]string{"show", "--format", "json", planPath}, `"format_version": 1`},
		{[]string{"show", planPath}, "Targets: 1 with changes"},
		{[]string{"config", "view", "-o", "json"}, `"settings"`},
	}
	for _, tc := range tests {
		code, out, errs := run(tc.args...)
		if code != ExitOK || !strings.Contains(out, tc.want) {
			t.Errorf("nksrun %s: exit %d\n stdout: %s\n stderr: %s", strings.Join(tc.args, " "), code, out, errs)
		}
	}
	if code, out, errs := run("plan", "--help"); code != 0 || !strings.Contains(out, "--out string") || !strings.Contains(out, "-o, --output string") || strings.Contains(out, "--format") {
		t.Errorf("plan --help: %d\n%s%s", code, out, errs)
	}
}

// TestBuiltinRunbooks: the runbooks are in the binary; from a directory
// without runbooks a name works, --runbook-dir and NKSRUN_RUNBOOK_DIR
// override it, list says where each comes from, cat starts a variant.
func TestBuiltinRunbooks(t *testing.T) {
	home := isolate(t)
	t.Chdir(t.TempDir())
	if code, out, errs := run("validate", "logrotate", "cgroup-nokmem.yaml"); code != 0 || !strings.Contains(out, "(logrotate, guide §1") || !strings.Contains(out, "(cgroup-nokmem, guide §5") {
		t.Fatalf("validate built-ins from an empty directory: %d\n%s%s", code, out, errs)
	}
	code, out, _ := run("list")
	if code != 0 || strings.Count(out, "built-in") != 13 {
		t.Errorf("list: want 13 built-in runbooks:\n%s", out)
	}
	// The built-in YAML, byte for byte.
	want, _ := os.ReadFile(filepath.Join(repoRoot(t), "runbooks", "logrotate.yaml"))
	if _, out, _ := run("cat", "logrotate"); out != string(want) {
		t.Error("cat logrotate is not the built-in YAML")
	}
	// A local variant in a directory, with the files it uses.
	dir := filepath.Join(home, "my")
	if code, out, errs := run("cat", "logrotate", "--to", dir); code != 0 || !strings.Contains(out, "files/docker-logrotate.conf") {
		t.Fatalf("cat --to: %d\n%s%s", code, out, errs)
	}
	local := filepath.Join(dir, "logrotate.yaml")
	for _, args := range [][]string{{"validate", "--runbook-dir", dir, "logrotate"}, {"validate", "logrotate"}} {
		if len(args) == 2 {
			t.Setenv("NKSRUN_RUNBOOK_DIR", dir)
		}
		if code, out, errs := run(args...); code != 0 || !strings.HasPrefix(out, local+": ok") {
			t.Errorf("nksrun %v: want the local copy %s:\n%s%s", args, local, out, errs)
		}
	}
	code, out, _ = run("list")
	if code != 0 || strings.Count(out, "built-in") != 12 || !strings.Contains(out, "logrotate              "+displayPath(local)) {
		t.Errorf("list with a runbook dir: want logrotate from %s:\n%s", local, out)
	}
	// A path is a path, whatever the runbook dir holds.
	if code, out, _ := run("validate", filepath.Join(repoRoot(t), "runbooks", "logrotate.yaml")); code != 0 || strings.Contains(out, dir) {
		t.Errorf("validate PATH used the runbook dir:\n%s", out)
	}
}

func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtimeCaller()
	return filepath.Join(filepath.Dir(file), "..", "..", "..")
}

// TestConfigPrecedence: flag > environment > config file > ~/.ssh/config
// (Host *) > default, shown with sources by config view.
func TestConfigPrecedence(t *testing.T) {
	home := isolate(t)
	cfg := filepath.Join(home, ".config", "nksrun", "config.yaml")
	_ = os.MkdirAll(filepath.Dir(cfg), 0o755)
	if err := os.WriteFile(cfg, []byte("kubeconfig: ~/file/kubeconfig\nforks: 10\nuser: fileuser\nidentity: [/file/id1, /file/id2]\nhost_key_policy: accept-new\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sshCfg := filepath.Join(home, "ssh_config")
	t.Setenv("NKSRUN_SSH_CONFIG", sshCfg)
	_ = os.WriteFile(sshCfg, []byte("Host bastion\n  User nobody\n  Port 2200\nHost *\n  User sshuser\n  Port 2222\n  IdentityFile ~/.ssh/nks.pem\n  ProxyJump ops@bastion:22\n  UserKnownHostsFile ~/.ssh/nks_known_hosts\n"), 0o644)
	t.Setenv("NKSRUN_FORKS", "20")
	t.Setenv("NKSRUN_CONTEXT", "envctx")
	code, out, errs := run("config", "view", "-o", "json", "--forks", "30")
	if code != 0 {
		t.Fatalf("config view: %d %s", code, errs)
	}
	var v struct {
		Settings []configRow `json:"settings"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatal(err)
	}
	got := map[string]configRow{}
	for _, r := range v.Settings {
		got[r.Key] = r
	}
	sshSrc := displayPath(sshCfg) + " (Host *)"
	for _, w := range []struct{ key, value, source string }{
		{"forks", "30", "flag --forks"},
		{"context", "envctx", "env NKSRUN_CONTEXT"},
		{"kubeconfig", filepath.Join(home, "file", "kubeconfig"), "file " + displayPath(cfg)},
		{"user", "fileuser", "file " + displayPath(cfg)},
		{"identity", "/file/id1,/file/id2", "file " + displayPath(cfg)},
		{"host_key_policy", "accept-new", "file " + displayPath(cfg)},
		{"port", "2222", sshSrc},
		{"jump", "ops@bastion:22", sshSrc},
		{"known_hosts", filepath.Join(home, ".ssh", "nks_known_hosts"), sshSrc},
		{"connect_timeout", "10s", "default"},
	} {
		if r := got[w.key]; r.Value != w.value || r.Source != w.source {
			t.Errorf("%s = %q from %q, want %q from %q", w.key, r.Value, r.Source, w.value, w.source)
		}
	}
	// The environment beats the file; text view names the unhonoured parts.
	t.Setenv("NKSRUN_USER", "envuser")
	_, out, _ = run("config", "view")
	if !regexp.MustCompile(`\nuser +envuser +env NKSRUN_USER `).MatchString(out) || !strings.Contains(out, "Not honoured from ~/.ssh/config") {
		t.Errorf("config view:\n%s", out)
	}
	// A bad value from the environment is a usage error naming its source.
	t.Setenv("NKSRUN_FORKS", "many")
	if code, _, errs := run("plan", "logrotate"); code != ExitUsage || !strings.Contains(errs, "env NKSRUN_FORKS") {
		t.Errorf("bad NKSRUN_FORKS: %d %s", code, errs)
	}
}

// TestCompletion: scripts for bash, zsh and fish ask the binary, which
// offers commands, flags, -o values and runbook names.
func TestCompletion(t *testing.T) {
	isolate(t)
	for _, sh := range []string{"bash", "zsh", "fish"} {
		if code, out, _ := run("completion", sh); code != 0 || !strings.Contains(out, "nksrun __complete") {
			t.Errorf("completion %s:\n%s", sh, out)
		}
	}
	for _, tc := range []struct {
		words []string
		want  []string
		not   string
	}{
		{nil, []string{"plan", "apply", "doctor", "completion"}, "__complete"},
		{[]string{"plan"}, []string{"logrotate", "cgroup-nokmem", "--output", "--out", "--selector", "--limit"}, "--format"},
		{[]string{"plan", "-o"}, []string{"text", "markdown", "json", "yaml"}, "logrotate"},
		{[]string{"inventory", "--output"}, []string{"text", "json", "yaml"}, "markdown"},
		{[]string{"apply", "--host-key-policy"}, []string{"strict", "accept-new", "insecure"}, ""},
		{[]string{"help"}, []string{"plan", "doctor"}, ""},
		{[]string{"cat"}, []string{"logrotate"}, ""},
		{[]string{"plan", "--inventory", "../../../testdata/inventory/static.yaml", "--limit"}, []string{"bastion-side-1", "bastion-side-2"}, "logrotate"},
	} {
		code, out, errs := run(append([]string{"__complete"}, tc.words...)...)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		for _, w := range tc.want {
			if !contains(lines, w) {
				t.Errorf("complete %v: lacks %q (exit %d):\n%s%s", tc.words, w, code, out, errs)
			}
		}
		if tc.not != "" && contains(lines, tc.not) {
			t.Errorf("complete %v: offers %q", tc.words, tc.not)
		}
	}
}

func contains(list []string, s string) bool {
	for _, l := range list {
		if l == s {
			return true
		}
	}
	return false
}

func TestLimitPatterns(t *testing.T) {
	var hosts []inventory.Host
	for _, h := range []struct{ name, group string }{{"w-node-1", "a"}, {"w-node-2", "a"}, {"w-node-3", "b"}, {"m-node-1", "b"}} {
		hosts = append(hosts, inventory.Host{Name: h.name, Labels: map[string]string{"group": h.group}})
	}
	tests := []struct {
		limit    []string
		selector string
		want     string
		err      string
	}{
		{nil, "", "w-node-1 w-node-2 w-node-3 m-node-1", ""},
		{[]string{"w-node-1,w-node-3"}, "", "w-node-1 w-node-3", ""},
		{[]string{"w-*,!w-node-2"}, "", "w-node-1 w-node-3", ""},
		{[]string{"!w-node-2"}, "", "w-node-1 w-node-3 m-node-1", ""},
		{[]string{"group=a", "m-node-1"}, "", "w-node-1 w-node-2 m-node-1", ""},
		{[]string{"group in (a,b),!group=b"}, "", "w-node-1 w-node-2", ""},
		{nil, "group=b", "w-node-3 m-node-1", ""},
		{[]string{"w-*"}, "group=b", "w-node-3", ""},
		{nil, "group=b,group!=b", "", "matches no node"},
		{[]string{"!w-node-9"}, "", "", "'!w-node-9' matches no node"},
		{[]string{"x-*"}, "", "", "matches no node"},
		{[]string{"w-*,!w-*"}, "", "", "leaves no node"},
	}
	for _, tc := range tests {
		got, err := selectHosts(hosts, tc.limit, tc.selector)
		var names []string
		for _, h := range got {
			names = append(names, h.Name)
		}
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("limit %q -l %q: err %v, want %q", tc.limit, tc.selector, err, tc.err)
			}
			continue
		}
		if err != nil || strings.Join(names, " ") != tc.want {
			t.Errorf("limit %q -l %q: %v %v, want %s", tc.limit, tc.selector, names, err, tc.want)
		}
	}
}

func TestSuggest(t *testing.T) {
	cands := []string{"plan", "apply", "show", "validate", "list", "inventory", "doctor", "config"}
	for in, want := range map[string]string{"plna": "plan", "aply": "apply", "docter": "doctor", "inv": "inventory", "xyzzy": "", "lis": "list", "validte": "validate"} {
		if got := suggest(in, cands); got != want {
			t.Errorf("suggest(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestVersionFromBuildInfo: without -ldflags the version and commit come
// from what `go build` recorded.
func TestVersionFromBuildInfo(t *testing.T) {
	bi := &debug.BuildInfo{GoVersion: "go1.26", Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.time", Value: "2026-12-01T10:00:00Z"}, {Key: "vcs.modified", Value: "true"}}}
	for _, tc := range []struct {
		ld, module, want string
	}{
		{"dev", "(devel)", "dev-0123456789ab-dirty"},
		{"dev", "v1.2.3", "v1.2.3"},
		{"v2.0.0", "v1.2.3", "v2.0.0"},
	} {
		bi.Main.Version = tc.module
		if got := fromBuildInfo(bi, tc.ld); got.Version != tc.want || got.Commit != "0123456789abcdef0123" {
			t.Errorf("ld %s module %s: %+v, want version %s", tc.ld, tc.module, got, tc.want)
		}
	}
	if got := fromBuildInfo(nil, "dev"); got.Version != "dev" {
		t.Errorf("no build info: %+v", got)
	}
}

func runtimeCaller() (uintptr, string, int, bool) { return runtime.Caller(1) }

// TestErrorsOnceAndEventsOnlyWithVerbose: with stdout and stderr not a
// terminal, the plan on stdout says what happened to each node (grouped,
// one prefix); stderr has the one closing error, per-node events only
// with -v. Two nodes on closed local ports make them unreachable.
func TestErrorsOnceAndEventsOnlyWithVerbose(t *testing.T) {
	home := isolate(t)
	_, priv, _ := ed25519.GenerateKey(nil)
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(home, "id")
	_ = os.WriteFile(key, pem.EncodeToMemory(block), 0o600)
	inv := filepath.Join(home, "inv.yaml")
	_ = os.WriteFile(inv, []byte("hosts:\n  - {name: n1, address: 127.0.0.1, port: 1, user: root, facts: {runtime: docker}}\n  - {name: n2, address: 127.0.0.2, port: 1, user: root, facts: {runtime: docker}}\n"), 0o644)
	args := []string{"plan", "--inventory", inv, "-i", key, "--known-hosts", filepath.Join(home, "kh"), "logrotate"}
	code, out, errs := run(args...)
	if code != ExitError {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	if !strings.Contains(out, "x unreachable on 2 nodes: no answer at all (dial tcp {address}:1: connect: connection refused); not retried\n      nodes: n1, n2\n") {
		t.Errorf("unreachable nodes not grouped with one prefix:\n%s", out)
	}
	if strings.Contains(out, "unreachable: node") || strings.Contains(out, "unreachable: dial") {
		t.Errorf("repeated prefix:\n%s", out)
	}
	if errs != "nksrun plan: some targets failed or were unreachable (see the plan)\n" {
		t.Errorf("stderr should be the one closing error, got:\n%s", errs)
	}
	_, _, errs = run(append([]string{"plan", "-v"}, args[1:]...)...)
	if !strings.Contains(errs, "host_result logrotate n1: unreachable") || !strings.Contains(errs, "host_result logrotate n2: unreachable") {
		t.Errorf("-v: want per-node events on stderr:\n%s", errs)
	}
	if got := dedupePrefixes("gathering facts: gathering facts: exit 1: sudo"); got != "gathering facts: exit 1: sudo" {
		t.Errorf("dedupePrefixes = %q", got)
	}
}

// TestRunbookArg: command lines printed for the operator name built-in and
// runbook-dir runbooks by name (they survive an upgrade), files by path.
func TestRunbookArg(t *testing.T) {
	home := isolate(t)
	dir, err := builtinDir()
	if err != nil {
		t.Fatal(err)
	}
	a := &app{}
	a.opts.runbookDir = "my"
	t.Chdir(home)
	for path, want := range map[string]string{
		filepath.Join(dir, "logrotate.yaml"):        "logrotate",
		filepath.Join("my", "rpc-statd.yaml"):       "rpc-statd",
		filepath.Join(home, "my", "rpc-statd.yaml"): "rpc-statd",
		filepath.Join(home, "other", "x.yaml"):      filepath.Join("other", "x.yaml"),
	} {
		if got := a.runbookArg(path); got != want {
			t.Errorf("runbookArg(%s) = %s, want %s", path, got, want)
		}
	}
}

// TestDoctorViews: the doctor table in every format; node text escaped,
// the recommendation after the table, FIX verbatim.
func TestDoctorViews(t *testing.T) {
	rows := []doctorRow{
		{Section: "1", Runbook: "logrotate", Problem: "logrotate | config", Status: "found", Evidence: []string{"w-1: update \x1b]52;c;eA==\x07"}, Fix: "nksrun apply --kubeconfig /k logrotate"},
		{Section: "7.2", Runbook: "dockerhub-ratelimit", Problem: "rate limit", Status: "found", Evidence: []string{"cluster: 3 pods"}, Advice: "create a pull secret"},
	}
	for format, wants := range map[string][]string{
		"text":     {"§1       logrotate | config", "nksrun apply --kubeconfig /k logrotate\n", `\x1b]52`, "§7.2: create a pull secret\n"},
		"markdown": {"| §1 | logrotate \\| config | found |", "`nksrun apply --kubeconfig /k logrotate` |", "- §7.2: create a pull secret"},
		"json":     {`"fix": "nksrun apply --kubeconfig /k logrotate"`, `"advice": "create a pull secret"`},
		"yaml":     {"fix: nksrun apply --kubeconfig /k logrotate", "section: \"7.2\""},
	} {
		var buf bytes.Buffer
		a := &app{stdout: &buf, secrets: &redact.Secrets{}}
		a.opts.format = format
		if err := a.renderDoctor(rows); err != nil {
			t.Fatal(err)
		}
		for _, w := range wants {
			if !strings.Contains(buf.String(), w) {
				t.Errorf("%s: lacks %q:\n%s", format, w, buf.String())
			}
		}
		if format != "json" && strings.Contains(buf.String(), "\x1b") {
			t.Errorf("%s: raw escape from a node:\n%q", format, buf.String())
		}
	}
}

// TestCronNamesBuiltinRunbooks: the crontab line for a built-in runbook
// names it, not the cache directory it was written to.
func TestCronNamesBuiltinRunbooks(t *testing.T) {
	isolate(t)
	code, out, errs := run("cron", "logrotate")
	if code != 0 || !strings.Contains(out, " logrotate > ") || strings.Contains(out, "/runbooks/") {
		t.Errorf("cron logrotate: exit %d\n%s%s", code, out, errs)
	}
}
