package cli

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// countingServer is an address that counts the connections made to it:
// what must be refused before any contact leaves it at 0.
func countingServer(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var n atomic.Int64
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Close() // no TLS: a client that got here sees an error
		}
	}()
	return "https://" + l.Addr().String(), &n
}

// deadServer is an API server address where nothing listens.
func deadServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "https://" + addr
}

// writeKubeconfig writes a kubeconfig with one context per server, named
// by the map's keys.
func writeKubeconfig(t *testing.T, servers map[string]string) string {
	t.Helper()
	cfg := clientcmdapi.NewConfig()
	for name, server := range servers {
		cfg.Clusters[name] = &clientcmdapi.Cluster{Server: server, InsecureSkipTLSVerify: true}
		cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: "t"}
		cfg.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name}
		cfg.CurrentContext = name
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// Several contexts where they cannot mean anything are usage errors,
// before any cluster is contacted.
func TestManyContextsRefused(t *testing.T) {
	isolate(t)
	srv, contacts := countingServer(t)
	kc := writeKubeconfig(t, map[string]string{"prod-a": srv, "prod-b": srv})
	rb := "../../../runbooks/logrotate.yaml"
	two := []string{"--kubeconfig", kc, "--context", "prod-a", "--context", "prod-b"}
	all := []string{"--kubeconfig", kc, "--all-contexts"}
	cat := func(parts ...[]string) []string {
		var out []string
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	empty := filepath.Join(t.TempDir(), "empty-kubeconfig")
	if err := os.WriteFile(empty, []byte("apiVersion: v1\nkind: Config\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{cat([]string{"apply"}, two, []string{rb}), "apply works on one cluster at a time: review and apply each cluster's plan"},
		{cat([]string{"apply"}, all, []string{rb}), "apply works on one cluster at a time"},
		{cat([]string{"inventory"}, two), "inventory works on one cluster at a time"},
		{cat([]string{"status"}, all), "status works on one cluster at a time"},
		{cat([]string{"unlock"}, two), "unlock works on one cluster at a time"},
		{cat([]string{"cron"}, two, []string{rb}), "cron works on one cluster at a time"},
		{cat([]string{"plan"}, two, []string{"--all-contexts", rb}), "--context and --all-contexts: give one or the other"},
		{cat([]string{"plan", "--kubeconfig", kc, "--context", "prod-a", "--context", "prod-a", rb}), `--context "prod-a" given twice`},
		{cat([]string{"plan"}, two, []string{"--out", filepath.Join(t.TempDir(), "p.json"), rb}), "--out saves one cluster's plan"},
		{cat([]string{"plan"}, all, []string{"--inventory", "../../../testdata/inventory/static.yaml", rb}), "--inventory is one static set of nodes"},
		{cat([]string{"plan", "--kubeconfig", kc, "--context", "prod-a", "--context", "prod-bb", rb}), `no context "prod-bb" (did you mean "prod-b"?) in the kubeconfig (it has: prod-a, prod-b)`},
		{cat([]string{"doctor", "--kubeconfig", kc, "--context", "prod-a", "--context", "staging"}), `no context "staging" in the kubeconfig`},
		{cat([]string{"doctor", "--kubeconfig", empty, "--all-contexts"}), "--all-contexts: the kubeconfig has no contexts"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, out, errs := run(tc.args...)
			if code != ExitUsage || !strings.Contains(errs, tc.want) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, errs, ExitUsage, tc.want)
			}
			if out != "" {
				t.Errorf("stdout: %q", out)
			}
		})
	}
	if n := contacts.Load(); n != 0 {
		t.Errorf("%d connection(s) to the API server: refusals must come before any contact", n)
	}
}

// One context, as a flag or from the environment, is today's single-cluster
// run; --all-contexts overrides the configured default context.
func TestContextFlagsParse(t *testing.T) {
	isolate(t)
	for _, tc := range []struct {
		args []string
		env  string
		many bool
		ctx  []string
	}{
		{args: nil, ctx: nil},
		{args: []string{"--context", "a"}, ctx: []string{"a"}},
		{env: "a", ctx: []string{"a"}},
		{args: []string{"--context", "b"}, env: "a", ctx: []string{"b"}},
		{args: []string{"--context", "a", "--context", "b"}, many: true, ctx: []string{"a", "b"}},
		{args: []string{"--all-contexts"}, env: "a", many: true, ctx: nil},
	} {
		t.Setenv("NKSRUN_CONTEXT", tc.env)
		a := &app{}
		cmd := findCommand("plan")
		fs := newFlagSet(cmd, &a.opts)
		a.fs = fs
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		if err := a.configure(cmd, fs); err != nil {
			t.Fatal(err)
		}
		if err := a.validate(cmd, fs); err != nil {
			t.Fatalf("%v env %q: %v", tc.args, tc.env, err)
		}
		if a.opts.many() != tc.many || strings.Join(a.opts.contexts, ",") != strings.Join(tc.ctx, ",") {
			t.Errorf("%v env %q: many=%v contexts=%q, want %v %q", tc.args, tc.env, a.opts.many(), a.opts.contexts, tc.many, tc.ctx)
		}
	}
	// Only plan and doctor show --all-contexts.
	for cmd, want := range map[string]bool{"plan": true, "doctor": true, "apply": false, "inventory": false} {
		_, out, _ := run("help", cmd)
		if strings.Contains(out, "--all-contexts") != want {
			t.Errorf("help %s shows --all-contexts: %v, want %v", cmd, !want, want)
		}
	}
}

// The exit code over all clusters: an error anywhere wins, then changes.
func TestWorstExit(t *testing.T) {
	for _, tc := range []struct {
		codes []int
		want  int
	}{
		{nil, ExitOK},
		{[]int{ExitOK}, ExitOK},
		{[]int{ExitOK, ExitOK}, ExitOK},
		{[]int{ExitOK, ExitChanges}, ExitChanges},
		{[]int{ExitChanges, ExitOK}, ExitChanges},
		{[]int{ExitChanges, ExitError}, ExitError},
		{[]int{ExitError, ExitChanges}, ExitError},
		{[]int{ExitError, ExitOK, ExitChanges}, ExitError},
		{[]int{ExitOK, ExitError}, ExitError},
	} {
		if got := worstExit(tc.codes); got != tc.want {
			t.Errorf("worstExit(%v) = %d, want %d", tc.codes, got, tc.want)
		}
	}
}

// Clusters whose API server does not answer are each that cluster's error
// in one grouped report: exit 1, every cluster named, the JSON shape
// {clusters, totals}, JSON log lines carrying the cluster.
func TestManyContextsUnreachable(t *testing.T) {
	isolate(t)
	kc := writeKubeconfig(t, map[string]string{"prod-a": deadServer(t), "prod-b": deadServer(t)})
	kh := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(kh, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	key, _ := writeKey(t, t.TempDir(), "id_ed25519")
	code, out, errs := run("plan", "--kubeconfig", kc, "--all-contexts", "--known-hosts", kh, "-i", key, "-o", "json", "--detailed-exitcode", "../../../runbooks/logrotate.yaml")
	if code != ExitError || !strings.Contains(errs, "cluster prod-a, prod-b: not planned") {
		t.Fatalf("exit %d, stderr %s", code, errs)
	}
	var got struct {
		Clusters []struct {
			Context, Server, Error string
			Plan                   any
		}
		Totals struct{ Clusters, Errors int }
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(got.Clusters) != 2 || got.Clusters[0].Context != "prod-a" || got.Clusters[1].Context != "prod-b" || got.Totals.Errors != 2 {
		t.Fatalf("report: %s", out)
	}
	for _, c := range got.Clusters {
		if c.Plan != nil || !strings.Contains(c.Error, "listing nodes") || !strings.HasPrefix(c.Server, "https://127.0.0.1:") {
			t.Errorf("cluster %s: %+v", c.Context, c)
		}
	}
	code, out, _ = run("doctor", "--kubeconfig", kc, "--context", "prod-b", "--context", "prod-a", "--known-hosts", kh, "-i", key, "../../../runbooks/logrotate.yaml")
	if code != ExitError || !strings.Contains(out, "=== cluster prod-b (127.0.0.1:") || strings.Index(out, "prod-b") > strings.Index(out, "prod-a") {
		t.Errorf("doctor: exit %d, the clusters in the order given:\n%s", code, out)
	}
	if !strings.Contains(out, "Clusters: 0 with a problem found, 0 with none, 2 not diagnosed (of 2).") {
		t.Errorf("doctor summary:\n%s", out)
	}
	// A context whose cluster entry is missing says so, as its own error.
	cfg, err := clientcmd.LoadFromFile(kc)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Contexts["broken"] = &clientcmdapi.Context{Cluster: "gone", AuthInfo: "prod-a"}
	if err := clientcmd.WriteToFile(*cfg, kc); err != nil {
		t.Fatal(err)
	}
	code, out, _ = run("plan", "--kubeconfig", kc, "--all-contexts", "--known-hosts", kh, "-i", key, "../../../runbooks/logrotate.yaml")
	if code != ExitError || !strings.Contains(out, "=== cluster broken ===\n\nerror: kubeconfig: context \"broken\" names cluster \"gone\", which the kubeconfig does not have\n") {
		t.Errorf("broken context: exit %d\n%s", code, out)
	}
}

// The config file's contexts: section sets SSH settings per context: for a
// one-cluster run its context's apply (flags and environment still win); a
// key a context cannot set is refused with a suggestion.
func TestContextSettings(t *testing.T) {
	home := isolate(t)
	cfg := filepath.Join(home, "nksrun.yaml")
	t.Setenv("NKSRUN_CONFIG", cfg)
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(cfg, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("user: top\ncontexts:\n  prod-a:\n    user: alice\n    identity: [~/a.pem]\n    known_hosts: ~/kh-a\n  prod-b:\n    jump: ops@bastion-b\n")
	view := func(args ...string) map[string]configRow {
		t.Helper()
		code, out, errs := run(append([]string{"config", "view", "-o", "json"}, args...)...)
		if code != 0 {
			t.Fatalf("config view %v: %d %s", args, code, errs)
		}
		var v struct{ Settings []configRow }
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatal(err)
		}
		rows := map[string]configRow{}
		for _, r := range v.Settings {
			rows[r.Key] = r
		}
		return rows
	}
	src := "file " + displayPath(cfg)
	for _, tc := range []struct {
		args                     []string
		env                      string
		user, userSrc, kh, khSrc string
	}{
		{nil, "", "top", src, "", "default"},
		{[]string{"--context", "prod-a"}, "", "alice", src + " (contexts.prod-a)", filepath.Join(home, "kh-a"), src + " (contexts.prod-a)"},
		{[]string{"--context", "prod-a", "--user", "bob"}, "", "bob", "flag --user", filepath.Join(home, "kh-a"), src + " (contexts.prod-a)"},
		{[]string{"--context", "prod-a"}, "carol", "carol", "env NKSRUN_USER", filepath.Join(home, "kh-a"), src + " (contexts.prod-a)"},
		{[]string{"--context", "prod-b"}, "", "top", src, "", "default"},
	} {
		t.Setenv("NKSRUN_USER", tc.env)
		rows := view(tc.args...)
		if r := rows["user"]; r.Value != tc.user || r.Source != tc.userSrc {
			t.Errorf("%v: user %q from %q, want %q from %q", tc.args, r.Value, r.Source, tc.user, tc.userSrc)
		}
		if r := rows["known_hosts"]; r.Value != tc.kh || r.Source != tc.khSrc {
			t.Errorf("%v: known_hosts %q from %q, want %q from %q", tc.args, r.Value, r.Source, tc.kh, tc.khSrc)
		}
	}
	t.Setenv("NKSRUN_USER", "")
	write("contexts:\n  prod-a:\n    usr: alice\n")
	if code, _, errs := run("plan", "logrotate"); code != ExitUsage || !strings.Contains(errs, `contexts.prod-a: unknown key "usr"`) || !strings.Contains(errs, `did you mean "user"?`) {
		t.Errorf("unknown key in contexts: %d %s", code, errs)
	}
	write("contexts:\n  prod-a:\n    port: 2222\n")
	if code, _, errs := run("plan", "logrotate"); code != ExitUsage || !strings.Contains(errs, "a context may set user, identity, known_hosts, jump") {
		t.Errorf("key a context cannot set: %d %s", code, errs)
	}
}

// A many-cluster plan writes one series set per cluster, labelled with
// it; a one-cluster run's unlabelled series and each cluster's are kept
// apart when runs share the file.
func TestManyContextsMetrics(t *testing.T) {
	isolate(t)
	kc := writeKubeconfig(t, map[string]string{"prod-a": deadServer(t), "prod-b": deadServer(t)})
	key, _ := writeKey(t, t.TempDir(), "id_ed25519")
	kh := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(kh, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	m := filepath.Join(t.TempDir(), "nksrun.prom")
	rb := "../../../runbooks/logrotate.yaml"
	if code, _, errs := run("plan", "--kubeconfig", kc, "--all-contexts", "-i", key, "--known-hosts", kh, "--metrics-file", m, rb); code != ExitError {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if code, _, errs := run("plan", "--kubeconfig", kc, "--context", "prod-a", "-i", key, "--known-hosts", kh, "--metrics-file", m, rb); code != ExitError {
		t.Fatalf("exit %d: %s", code, errs)
	}
	b, err := os.ReadFile(m)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "nksrun_last_run_success{") {
			got = append(got, l)
		}
	}
	want := []string{
		`nksrun_last_run_success{cluster="prod-a",runbook="logrotate",phase="plan"} 0`,
		`nksrun_last_run_success{cluster="prod-b",runbook="logrotate",phase="plan"} 0`,
		`nksrun_last_run_success{runbook="logrotate",phase="plan"} 0`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("series:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
