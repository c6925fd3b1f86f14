package cli_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	yaml "go.yaml.in/yaml/v3"
	"golang.org/x/crypto/ssh"

	"nksrun/cmd/nksrun/cli"
	"nksrun/testdata/testbed"
)

func runOK(t *testing.T, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if code := cli.Run(context.Background(), args, strings.NewReader(""), &out, &errb); code != 0 {
		t.Fatalf("nksrun %v: exit %d: %s", args, code, errb.String())
	}
	return out.String()
}

func TestCronLine(t *testing.T) {
	dir := t.TempDir()
	out := runOK(t, "cron", "--schedule", "15 3 * * 1-5", "-i", "key with space.pem", "--metrics-file", filepath.Join(dir, "100%.prom"), "../../../runbooks/logrotate.yaml")
	var line string
	for _, l := range strings.Split(out, "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			if line != "" {
				t.Fatalf("more than one crontab line:\n%s", out)
			}
			line = l
		}
	}
	if !strings.HasPrefix(line, "15 3 * * 1-5 ") {
		t.Fatalf("line: %q", line)
	}
	rb, _ := filepath.Abs("../../../runbooks/logrotate.yaml")
	key, _ := filepath.Abs("key with space.pem")
	for _, want := range []string{
		" apply --auto-approve --lock-file /", " --timeout 1h0m0s ", " --log-format json --log-file /",
		" '--identity=" + key + "' ", rb + " > ", `100\%.prom`, " 2>&1",
	} {
		if !strings.Contains(line, want) {
			t.Errorf("crontab line lacks %q:\n%s", want, line)
		}
	}
	if strings.Contains(strings.ReplaceAll(line, `\%`, ""), "%") {
		t.Errorf("unescaped %% in the crontab line: %s", line)
	}
	var errb bytes.Buffer
	if code := cli.Run(context.Background(), []string{"cron", "--schedule", "daily", "../../../runbooks/logrotate.yaml"}, nil, &bytes.Buffer{}, &errb); code != cli.ExitUsage {
		t.Errorf("bad schedule: exit %d", code)
	}
}

// rules of the printed manifest, by kind/namespace.
func manifestRules(t *testing.T, manifest string) map[string][]map[string]any {
	t.Helper()
	out := map[string][]map[string]any{}
	dec := yaml.NewDecoder(strings.NewReader(manifest))
	for {
		var doc map[string]any
		if err := dec.Decode(&doc); err != nil {
			break
		}
		kind, _ := doc["kind"].(string)
		if kind != "ClusterRole" && kind != "Role" {
			continue
		}
		md := doc["metadata"].(map[string]any)
		key := kind
		if ns, ok := md["namespace"].(string); ok {
			key += "/" + ns
		}
		for _, r := range doc["rules"].([]any) {
			out[key] = append(out[key], r.(map[string]any))
		}
	}
	return out
}

// hasRule: a rule on every object of the resource (no resourceNames)
// with exactly verbs.
func hasRule(rules []map[string]any, group, resource string, verbs ...string) bool {
	for _, r := range rules {
		if _, named := r["resourceNames"]; named || r["apiGroups"].([]any)[0] != group || r["resources"].([]any)[0] != resource {
			continue
		}
		have := map[string]bool{}
		for _, v := range r["verbs"].([]any) {
			have[v.(string)] = true
		}
		ok := len(have) == len(verbs)
		for _, v := range verbs {
			ok = ok && have[v]
		}
		if ok {
			return true
		}
	}
	return false
}

// hasNamedRule: a rule on exactly that object (resourceNames) with exactly verbs.
func hasNamedRule(rules []map[string]any, group, resource, name string, verbs ...string) bool {
	for _, r := range rules {
		names, _ := r["resourceNames"].([]any)
		if r["apiGroups"].([]any)[0] != group || r["resources"].([]any)[0] != resource || len(names) != 1 || names[0] != name {
			continue
		}
		have := map[string]bool{}
		for _, v := range r["verbs"].([]any) {
			have[v.(string)] = true
		}
		ok := len(have) == len(verbs)
		for _, v := range verbs {
			ok = ok && have[v]
		}
		if ok {
			return true
		}
	}
	return false
}

func TestCronJobRBACPerRunbook(t *testing.T) {
	// logrotate works over SSH only: listing nodes is all it needs.
	rules := manifestRules(t, runOK(t, "cron", "--kubernetes", "../../../runbooks/logrotate.yaml"))
	if len(rules) != 1 || len(rules["ClusterRole"]) != 1 || !hasRule(rules["ClusterRole"], "", "nodes", "get", "list") {
		t.Errorf("logrotate RBAC: %v", rules)
	}
	// upgrade-finalizers patches the ClusterRoles it finds at run time:
	// no patch on every ClusterRole, read only (and a note); its namespaced
	// objects are patched in kube-system only.
	out := runOK(t, "cron", "--kubernetes", "../../../runbooks/upgrade-finalizers.yaml")
	rules = manifestRules(t, out)
	for _, res := range []string{"clusterroles", "clusterrolebindings"} {
		if !hasRule(rules["ClusterRole"], "rbac.authorization.k8s.io", res, "get", "list") {
			t.Errorf("upgrade-finalizers %s: want get, list only: %v", res, rules["ClusterRole"])
		}
	}
	if !strings.Contains(out, "# NOTE: step clusterroles (k8s_patch) changes clusterroles whose names are only known at run time") {
		t.Errorf("no note on the ClusterRoles the CronJob cannot change:\n%s", out)
	}
	if !hasRule(rules["Role/kube-system"], "apps", "deployments", "get", "list", "patch") {
		t.Errorf("upgrade-finalizers kube-system rules: %v", rules["Role/kube-system"])
	}
	// Facts that name their object read that object only.
	rules = manifestRules(t, runOK(t, "cron", "--kubernetes", "../../../runbooks/calico-image-repo.yaml"))
	if !hasNamedRule(rules["Role/kube-system"], "apps", "daemonsets", "calico-node", "get", "patch") {
		t.Errorf("calico-image-repo: DaemonSet fact not narrowed to calico-node: %v", rules["Role/kube-system"])
	}
	// Reboots: the Lease by name; create and list (a dead holder's
	// slot is told from a live one's) apart.
	rules = manifestRules(t, runOK(t, "cron", "--kubernetes", "../../../runbooks/cgroup-nokmem.yaml"))
	if !hasNamedRule(rules["Role/kube-system"], "coordination.k8s.io", "leases", "nksrun-reboot", "get", "update") || !hasRule(rules["Role/kube-system"], "coordination.k8s.io", "leases", "list", "create") {
		t.Errorf("cgroup-nokmem lease rules: %v", rules["Role/kube-system"])
	}
	// dockerhub-ratelimit: without credentials the fix never runs (read
	// only); with them, the Secret and ServiceAccount by name in the given
	// namespaces; with credentials but namespaces only known at run time,
	// refused (create on Secrets everywhere would be a way to any token).
	rules = manifestRules(t, runOK(t, "cron", "--kubernetes", "../../../runbooks/dockerhub-ratelimit.yaml"))
	for key, rs := range rules {
		for _, r := range rs {
			names, _ := r["resourceNames"].([]any)
			if r["resources"].([]any)[0] == "secrets" && (len(names) != 1 || names[0] != "dockerhub-pull" || hasVerb(r, "update", "create", "patch")) {
				t.Errorf("dockerhub-ratelimit without credentials: %s has %v (want read of dockerhub-pull only)", key, r)
			}
		}
	}
	rules = manifestRules(t, runOK(t, "cron", "--kubernetes", "--set", "username_env=HUB_USER", "--set", "password_env=HUB_TOKEN", "--set", "namespaces=team-a,team-b", "../../../runbooks/dockerhub-ratelimit.yaml"))
	for _, ns := range []string{"team-a", "team-b"} {
		rs := rules["Role/"+ns]
		if !hasNamedRule(rs, "", "secrets", "dockerhub-pull", "get", "update") || !hasRule(rs, "", "secrets", "create") ||
			!hasRule(rs, "", "serviceaccounts", "get", "create", "patch") {
			t.Errorf("dockerhub-ratelimit Role in %s: %v", ns, rs)
		}
	}
	// ghcr-migration rewrites images in every namespace unless told one:
	// said in a note, and --set namespace confines it to a Role.
	out = runOK(t, "cron", "--kubernetes", "../../../runbooks/ghcr-migration.yaml")
	if !strings.Contains(out, "# NOTE: step rewrite (set_image) may change deployments, daemonsets, statefulsets, cronjobs, jobs in every namespace") {
		t.Errorf("no note on cluster-wide workload patching:\n%s", out)
	}
	rules = manifestRules(t, runOK(t, "cron", "--kubernetes", "--set", "namespace=apps", "../../../runbooks/ghcr-migration.yaml"))
	if !hasRule(rules["Role/apps"], "apps", "deployments", "get", "list", "patch") || hasRule(rules["ClusterRole"], "apps", "deployments", "get", "list", "patch") {
		t.Errorf("ghcr-migration --set namespace=apps: %v", rules)
	}
	// A kind known only at run time: refused, never a wildcard.
	code, _, stderr := run(t, nil, "cron", "--kubernetes", "testdata/runtime-kind.yaml")
	if code != cli.ExitUsage || !strings.Contains(stderr, "kind is only known at run time") {
		t.Errorf("runtime kind: exit %d: %s", code, stderr)
	}
	code, _, stderr = run(t, nil, "cron", "--kubernetes", "--set", "username_env=HUB_USER", "--set", "password_env=HUB_TOKEN", "../../../runbooks/dockerhub-ratelimit.yaml")
	if code != cli.ExitUsage || !strings.Contains(stderr, "--set namespaces=") {
		t.Errorf("dockerhub-ratelimit with credentials, namespaces unknown: exit %d: %s", code, stderr)
	}
	// No runbook gets a wildcard; only ghcr-migration reads Secrets
	// cluster-wide (the old host's pull credentials, values never kept),
	// and its manifest says so.
	for _, rb := range []string{"logrotate", "dockerhub-ratelimit", "closed-network-images", "ghcr-migration", "cgroup-nokmem", "rpc-statd", "cinder-csi-rescan", "fsgroup-policy", "calico-ebpf-udp", "calico-ebpf-istio", "calico-328-scale", "upgrade-finalizers", "calico-image-repo"} {
		out := runOK(t, "cron", "--kubernetes", "../../../runbooks/"+rb+".yaml")
		for key, rs := range manifestRules(t, out) {
			for _, r := range rs {
				for _, g := range append(append([]any{}, r["apiGroups"].([]any)...), r["resources"].([]any)...) {
					if g == "*" {
						t.Errorf("%s %s: wildcard rule %v", rb, key, r)
					}
				}
				names, _ := r["resourceNames"].([]any)
				if r["resources"].([]any)[0] == "secrets" && key == "ClusterRole" && len(names) == 0 && rb != "ghcr-migration" {
					t.Errorf("%s: cluster-wide access to Secrets: %v", rb, r)
				}
			}
		}
	}
}

// run runs the CLI in-process and returns exit code, stdout and stderr.
func run(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
	var out, errb bytes.Buffer
	code := cli.Run(context.Background(), args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

// crontabLine is the one line of cron's output that is not a comment.
func crontabLine(t *testing.T, out string) string {
	t.Helper()
	var line string
	for _, l := range strings.Split(out, "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			if line != "" {
				t.Fatalf("more than one crontab line:\n%s", out)
			}
			line = l
		}
	}
	return line
}

func TestCronSchedule(t *testing.T) {
	for _, c := range []struct {
		schedule string
		ok       bool
		kube     bool // only for the CronJob (where it differs)
	}{
		{"0 0 * * *", true, false},
		{"*/5 * * * *", true, false},
		{"15 3 * * 1-5", true, false},
		{"0,30 8-18/2 1,15 jan-jun,dec mon-fri", true, false},
		{"0 0 * * SUN", true, false},
		{"0 0 1 */3 *", true, false},
		{"59 23 31 12 6", true, false},
		{"@daily", true, false},
		{"@hourly", true, false},
		{"@weekly", true, false},
		{"@annually", true, false},
		{"0 0 * * 7", true, false}, // cron: Sunday
		{"0 0 * * 7", false, true}, // the CronJob controller: 0-6 only
		{"61 * * * *", false, false},
		{"* 24 * * *", false, false},
		{"0 0 0 * *", false, false},
		{"0 0 * 13 *", false, false},
		{"0 0 * * 8", false, false},
		{"0 0 * * * *", false, false},
		{"0 0 * *", false, false},
		{"daily", false, false},
		{"@reboot", false, false},
		{"@every 1h", false, false},
		{"*/0 * * * *", false, false},
		{"*/61 * * * *", false, false},
		{"5/15 * * * *", false, false},
		{"30-10 * * * *", false, false},
		{"1,,2 * * * *", false, false},
		{"? * * * *", false, false},
		{"0 0 L * *", false, false},
		{"0 0 * foo *", false, false},
		{"-1 * * * *", false, false},
		{"+1 * * * *", false, false},
		{"0 0 * jan-foo *", false, false},
	} {
		args := []string{"cron", "--schedule", c.schedule}
		if c.kube {
			args = append(args, "--kubernetes")
		}
		code, out, stderr := run(t, nil, append(args, "../../../runbooks/logrotate.yaml")...)
		if c.ok {
			if code != 0 || !strings.HasPrefix(crontabLine(t, out), c.schedule+" ") {
				t.Errorf("--schedule %q: exit %d, want 0 with the schedule in the line: %s%s", c.schedule, code, stderr, out)
			}
			continue
		}
		if code != cli.ExitUsage || !strings.Contains(stderr, "--schedule") {
			t.Errorf("--schedule %q (kubernetes %v): exit %d, want %d naming --schedule: %s", c.schedule, c.kube, code, cli.ExitUsage, stderr)
		}
	}
}

// Without --schedule each runbook gets its own time of night, the same one
// every time it is printed, so that the runbooks of a cluster do not all
// start at once.
func TestCronDefaultScheduleSpreads(t *testing.T) {
	paths, err := filepath.Glob("../../../runbooks/*.yaml")
	if err != nil || len(paths) < 13 {
		t.Fatalf("runbooks: %v %v", paths, err)
	}
	seen := map[string]string{}
	for _, p := range paths {
		line := crontabLine(t, runOK(t, "cron", p))
		f := strings.Fields(line)
		sched := strings.Join(f[:5], " ")
		if f[2] != "*" || f[3] != "*" || f[4] != "*" {
			t.Errorf("%s: default %q is not daily", p, sched)
		}
		if h, err := strconv.Atoi(f[1]); err != nil || h > 5 {
			t.Errorf("%s: default hour %q is not at night (0-5)", p, f[1])
		}
		if prev, ok := seen[sched]; ok {
			t.Errorf("%s and %s both default to %q", prev, p, sched)
		}
		seen[sched] = p
		if again := crontabLine(t, runOK(t, "cron", p)); !strings.HasPrefix(again, sched+" ") {
			t.Errorf("%s: default schedule not stable: %q then %q", p, sched, again)
		}
	}
}

// cron accepts plan/apply's connection and selection flags and passes each
// one given into the line (paths absolute) or the CronJob's args.
func TestCronPassesFlags(t *testing.T) {
	inv, _ := filepath.Abs("inv.yaml")
	kh, _ := filepath.Abs("kh")
	line := crontabLine(t, runOK(t, "cron", "--context", "prod", "--limit", "web-*", "--limit", "!web-3", "--host-key-policy", "accept-new",
		"--user", "rocky", "--jump", "ops@bastion:2222", "--forks", "20", "--include-not-ready", "--connect-timeout", "3s",
		"--command-timeout", "2m", "--max-failures", "2", "--inventory", "inv.yaml", "--known-hosts", "kh", "../../../runbooks/logrotate.yaml"))
	for _, want := range []string{
		" --context=prod ", " '--limit=web-*' ", " '--limit=!web-3' ", " --host-key-policy=accept-new ", " --user=rocky ",
		" --jump=ops@bastion:2222 ", " --forks=20 ", " --include-not-ready ", " --connect-timeout=3s ", " --command-timeout=2m0s ",
		" --max-failures=2 ", " --inventory=" + inv + " ", " --known-hosts=" + kh + " ",
	} {
		if !strings.Contains(line, want) {
			t.Errorf("crontab line lacks %q:\n%s", want, line)
		}
	}
	// Flags not given are not written (the run's defaults apply).
	for _, not := range []string{"--host-key-policy=strict", "--forks=256", "--kubeconfig"} {
		if strings.Contains(runOK(t, "cron", "../../../runbooks/logrotate.yaml"), not) {
			t.Errorf("line carries %q though it was not given", not)
		}
	}

	args := cronJobArgs(t, runOK(t, "cron", "--kubernetes", "--limit", "magnum.openstack.org/nodegroup=default-worker",
		"--host-key-policy", "strict", "--forks", "10", "--jump", "bastion", "--set", "dest=/etc/logrotate.d/docker-nks", "../../../runbooks/logrotate.yaml"))
	joined := strings.Join(args, " ")
	for _, want := range []string{"--limit=magnum.openstack.org/nodegroup=default-worker", "--host-key-policy=strict", "--forks=10", "--jump=bastion", "--set dest=/etc/logrotate.d/docker-nks"} {
		if !strings.Contains(joined, want) {
			t.Errorf("CronJob args lack %q: %v", want, args)
		}
	}

	// --log-file and --log-format are the runs': cron itself writes no
	// log line there (nor on stderr).
	logFile := filepath.Join(t.TempDir(), "logs", "lr.log")
	code, out, stderr := run(t, nil, "cron", "--log-file", logFile, "--log-format", "text", "../../../runbooks/logrotate.yaml")
	if code != 0 || stderr != "" || !strings.Contains(crontabLine(t, out), " --log-format text --log-file "+logFile+" ") {
		t.Errorf("cron --log-file: exit %d, stderr %q\n%s", code, stderr, out)
	}
	if _, err := os.Stat(filepath.Dir(logFile)); err == nil {
		t.Errorf("cron wrote into the runs' log directory")
	}
	if code, _, stderr := run(t, nil, "cron", "--log-format", "json", "../../../runbooks/logrotate.yaml"); code != 0 || stderr != "" {
		t.Errorf("cron --log-format json: exit %d, stderr %q", code, stderr)
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--log-format", "xml"}, "--log-format"},
		{[]string{"--host-key-policy", "yolo"}, "--host-key-policy"},
		{[]string{"--forks", "0"}, "--forks"},
		{[]string{"--kubernetes", "--kubeconfig", "k"}, "--kubeconfig does not apply to --kubernetes"},
		{[]string{"--kubernetes", "-i", "k.pem"}, "--identity does not apply to --kubernetes"},
		{[]string{"--kubernetes", "--lock-file", "l"}, "--lock-file does not apply to --kubernetes"},
		{[]string{"--no-such-flag"}, "unknown flag"},
	} {
		code, _, stderr := run(t, nil, append(append([]string{"cron"}, c.args...), "../../../runbooks/logrotate.yaml")...)
		if code != cli.ExitUsage || !strings.Contains(stderr, c.want) {
			t.Errorf("cron %v: exit %d, want %d with %q: %s", c.args, code, cli.ExitUsage, c.want, stderr)
		}
	}
}

// cronJob is the CronJob document of a cron --kubernetes manifest.
func cronJob(t *testing.T, manifest string) map[string]any {
	t.Helper()
	dec := yaml.NewDecoder(strings.NewReader(manifest))
	for {
		var doc map[string]any
		if err := dec.Decode(&doc); err != nil {
			t.Fatalf("no CronJob in the manifest (%v):\n%s", err, manifest)
		}
		if doc["kind"] == "CronJob" {
			return doc
		}
	}
}

func container(t *testing.T, manifest string) map[string]any {
	t.Helper()
	cj := cronJob(t, manifest)
	spec := cj["spec"].(map[string]any)["jobTemplate"].(map[string]any)["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
	return spec["containers"].([]any)[0].(map[string]any)
}

func cronJobArgs(t *testing.T, manifest string) []string {
	t.Helper()
	var out []string
	for _, a := range container(t, manifest)["args"].([]any) {
		out = append(out, a.(string))
	}
	return out
}

// A secret param never reaches a command line: --set of it is refused by
// cron; --set-file and NKSRUN_SET_<NAME> are referenced, not copied; the
// CronJob reads it from a Secret (secretKeyRef) whose template has no value.
func TestCronSecretParams(t *testing.T) {
	const secret = "s3cr3t-token-value-4711"
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rb := "testdata/secret-param.yaml"
	noEnv := map[string]string{"NKSRUN_SET_TOKEN": ""}
	os.Unsetenv("NKSRUN_SET_TOKEN")

	for _, args := range [][]string{
		{"cron", "--set", "token=" + secret, rb},
		{"cron", "--kubernetes", "--set", "token=" + secret, rb},
	} {
		code, out, stderr := run(t, nil, args...)
		if code != cli.ExitUsage || !strings.Contains(stderr, "secret param") || !strings.Contains(stderr, "--set-file token=PATH") {
			t.Errorf("%v: exit %d, want %d saying what to use instead: %s", args[:len(args)-2], code, cli.ExitUsage, stderr)
		}
		if strings.Contains(out+stderr, secret) {
			t.Errorf("%v printed the secret", args)
		}
	}
	// A required secret that is not given: say how to give it.
	if code, _, stderr := run(t, nil, "cron", rb); code != cli.ExitUsage || !strings.Contains(stderr, "--set-file token=PATH") || !strings.Contains(stderr, "NKSRUN_SET_TOKEN") {
		t.Errorf("missing secret: exit %d: %s", code, stderr)
	}

	// --set-file: the line names the file.
	code, out, stderr := run(t, nil, "cron", "--set-file", "token="+tokenFile, "--set", "mode=fast", rb)
	line := crontabLine(t, out)
	if code != 0 || !strings.Contains(line, " --set-file token="+tokenFile+" ") || !strings.Contains(line, " --set mode=fast ") || strings.Contains(out+stderr, secret) {
		t.Errorf("--set-file: exit %d, %s\n%s", code, stderr, out)
	}
	// A secret file others can read gets a warning.
	if err := os.Chmod(tokenFile, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, stderr := run(t, nil, "cron", "--set-file", "token="+tokenFile, rb); !strings.Contains(stderr, "readable by group or others") {
		t.Errorf("no warning for a world-readable secret file: %q", stderr)
	}

	// From the environment: nothing in the line, a note that cron needs it.
	code, out, stderr = run(t, map[string]string{"NKSRUN_SET_TOKEN": secret}, "cron", rb)
	if code != 0 || strings.Contains(out+stderr, secret) || !strings.Contains(out, "# The secret param token is read from NKSRUN_SET_TOKEN") || strings.Contains(crontabLine(t, out), "token") {
		t.Errorf("env: exit %d, %s\n%s", code, stderr, out)
	}

	// The CronJob: secretKeyRef, a template without value, args without it.
	for _, env := range []map[string]string{noEnv, {"NKSRUN_SET_TOKEN": secret}} {
		args := []string{"cron", "--kubernetes", "--namespace", "ops", rb}
		if env["NKSRUN_SET_TOKEN"] == "" {
			os.Unsetenv("NKSRUN_SET_TOKEN")
			args = []string{"cron", "--kubernetes", "--namespace", "ops", "--set-file", "token=" + tokenFile, "--set", "mode=fast", rb}
		}
		code, manifest, stderr := run(t, env, args...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, stderr)
		}
		if strings.Contains(manifest+stderr, secret) {
			t.Errorf("the manifest carries the secret:\n%s", manifest)
		}
		c := container(t, manifest)
		envs, _ := c["env"].([]any)
		if len(envs) != 2 || envs[0].(map[string]any)["name"] != "GOMEMLIMIT" {
			t.Fatalf("container env: %v", c["env"])
		}
		e := envs[1].(map[string]any)
		ref := e["valueFrom"].(map[string]any)["secretKeyRef"].(map[string]any)
		if e["name"] != "NKSRUN_SET_TOKEN" || ref["name"] != "nksrun-secret-param-params" || ref["key"] != "token" || ref["optional"] != false {
			t.Errorf("env: %v", e)
		}
		for _, a := range cronJobArgs(t, manifest) {
			if strings.Contains(a, "token") {
				t.Errorf("CronJob arg %q names the secret param", a)
			}
		}
		for _, want := range []string{"#   kubectl -n ops create secret generic nksrun-secret-param-params --from-file=token=token.txt", "#     name: nksrun-secret-param-params", `#     token: ""`} {
			if !strings.Contains(manifest, want) {
				t.Errorf("manifest lacks %q:\n%s", want, manifest)
			}
		}
	}
	// Credentials a module reads from the environment: --secret-env.
	code, manifest, stderr := run(t, nil, "cron", "--kubernetes", "--secret-env", "HUB_TOKEN", "--set", "username_env=HUB_USER", "--set", "password_env=HUB_TOKEN",
		"--set", "namespaces=team-a", "../../../runbooks/dockerhub-ratelimit.yaml")
	if code != 0 {
		t.Fatalf("--secret-env: exit %d: %s", code, stderr)
	}
	envs, _ := container(t, manifest)["env"].([]any)
	if len(envs) != 2 || envs[1].(map[string]any)["name"] != "HUB_TOKEN" ||
		envs[1].(map[string]any)["valueFrom"].(map[string]any)["secretKeyRef"].(map[string]any)["key"] != "HUB_TOKEN" ||
		!strings.Contains(manifest, `#     HUB_TOKEN: ""`) {
		t.Errorf("--secret-env HUB_TOKEN: env %v\n%s", envs, manifest)
	}
	for _, args := range [][]string{
		{"cron", "--secret-env", "HUB_TOKEN", "../../../runbooks/dockerhub-ratelimit.yaml"},
		{"cron", "--kubernetes", "--secret-env", "HUB-TOKEN", "../../../runbooks/dockerhub-ratelimit.yaml"},
		{"cron", "--kubernetes", "--secret-env", "NKSRUN_SET_TOKEN", rb},
	} {
		if code, _, stderr := run(t, nil, args...); code != cli.ExitUsage || !strings.Contains(stderr, "--secret-env") {
			t.Errorf("%v: exit %d: %s", args, code, stderr)
		}
	}

	// Without any value given, the CronJob still takes it from the Secret.
	os.Unsetenv("NKSRUN_SET_TOKEN")
	if code, manifest, stderr := run(t, nil, "cron", "--kubernetes", rb); code != 0 || !strings.Contains(manifest, "secretKeyRef") {
		t.Errorf("CronJob without a value given: exit %d: %s", code, stderr)
	}
}

// plan and apply take params from --set-file and NKSRUN_SET_<NAME>. The
// runbook skips its node (before any SSH) exactly when the token arrived.
func TestPlanParamsFromFileAndEnv(t *testing.T) {
	const token = "the-right-token-value"
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	kh := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(kh, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "test")
	if err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "id")
	if err := os.WriteFile(key, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"plan", "--inventory", "testdata/static.yaml", "-i", key, "--known-hosts", kh}
	os.Unsetenv("NKSRUN_SET_TOKEN")
	for _, c := range []struct {
		name    string
		env     map[string]string
		args    []string
		code    int
		skipped bool
	}{
		{"--set-file", nil, []string{"--set-file", "token=" + tokenFile}, 0, true},
		{"environment", map[string]string{"NKSRUN_SET_TOKEN": token}, nil, 0, true},
		{"--set-file over the environment", map[string]string{"NKSRUN_SET_TOKEN": "some-other-value"}, []string{"--set-file", "token=" + tokenFile}, 0, true},
		{"wrong value: the node is not skipped", map[string]string{"NKSRUN_SET_TOKEN": "some-other-value"}, nil, cli.ExitError, false},
		{"--set and --set-file for one param", nil, []string{"--set", "token=x", "--set-file", "token=" + tokenFile}, cli.ExitUsage, false},
		{"missing file", nil, []string{"--set-file", "token=" + filepath.Join(dir, "nope")}, cli.ExitUsage, false},
		{"no name", nil, []string{"--set-file", tokenFile}, cli.ExitUsage, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.env == nil {
				os.Unsetenv("NKSRUN_SET_TOKEN")
			}
			code, out, stderr := run(t, c.env, append(append(append([]string(nil), base...), c.args...), "testdata/secret-param.yaml")...)
			if code != c.code || strings.Contains(out, "skipped: token received") != c.skipped {
				t.Errorf("exit %d (want %d), skipped %v (want %v):\n%s%s", code, c.code, !c.skipped, c.skipped, out, stderr)
			}
			if strings.Contains(out+stderr, token) {
				t.Errorf("the token was printed:\n%s%s", out, stderr)
			}
		})
	}
	// A saved plan's params are fixed. (A plan of a runbook with a secret
	// param cannot be saved: it records params; logrotate's node is simply
	// unreachable, the plan file is written all the same.)
	planFile := filepath.Join(dir, "plan.json")
	if code, _, stderr := run(t, nil, append(append([]string(nil), base...), "--out", planFile, "../../../runbooks/logrotate.yaml")...); code != cli.ExitError {
		t.Fatalf("plan --out: exit %d: %s", code, stderr)
	}
	if code, _, stderr := run(t, nil, "apply", "--set-file", "always="+tokenFile, planFile); code != cli.ExitUsage || !strings.Contains(stderr, "saved plan") {
		t.Errorf("apply PLAN --set-file: exit %d: %s", code, stderr)
	}
}

// The printed crontab line, run as cron would (sh -c, another directory),
// gets the secret param from the file it names; the secret is in neither
// the line nor the run's output.
func TestCronLineWithSecretRuns(t *testing.T) {
	if testing.Short() && os.Getenv("CI") == "" {
		t.Skip("builds the binary")
	}
	const token = "the-right-token-value"
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	kh := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(kh, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "test")
	if err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "id")
	if err := os.WriteFile(key, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(testbed.NksrunBinary(t), "cron", "--schedule", "@daily", "--inventory", "testdata/static.yaml", "-i", key, "--known-hosts", kh,
		"--set-file", "token="+tokenFile, "--log-file", filepath.Join(dir, "logs", "secret.log"), "--lock-file", filepath.Join(dir, "secret.lock"),
		"testdata/secret-param.yaml").Output()
	if err != nil {
		t.Fatal(err)
	}
	line := crontabLine(t, string(out))
	if strings.Contains(string(out), token) {
		t.Fatalf("the token is in the cron output:\n%s", out)
	}
	cmd := exec.Command("/bin/sh", "-c", strings.TrimPrefix(line, "@daily "))
	cmd.Dir = "/"
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("crontab command: %v %s", err, b)
	}
	last, err := os.ReadFile(filepath.Join(dir, "logs", "secret.last.txt"))
	if err != nil {
		t.Fatal(err)
	}
	logs, _ := os.ReadFile(filepath.Join(dir, "logs", "secret.log"))
	if !strings.Contains(string(last), "skipped: token received") || strings.Contains(string(last)+string(logs), token) {
		t.Errorf("the run did not get the token from the file, or printed it:\n%s\n%s", last, logs)
	}
}

func hasVerb(r map[string]any, verbs ...string) bool {
	for _, v := range r["verbs"].([]any) {
		for _, w := range verbs {
			if v == w {
				return true
			}
		}
	}
	return false
}
