package cli_test

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	yaml "go.yaml.in/yaml/v3"

	"nksrun/cmd/nksrun/cli"
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
		" -i '" + key + "' ", rb + " > ", `100\%.prom`, " 2>&1",
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

func hasRule(rules []map[string]any, group, resource string, verbs ...string) bool {
	for _, r := range rules {
		if r["apiGroups"].([]any)[0] != group || r["resources"].([]any)[0] != resource {
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
		return ok
	}
	return false
}

func TestCronJobRBACPerRunbook(t *testing.T) {
	// logrotate works over SSH only: listing nodes is all it needs.
	rules := manifestRules(t, runOK(t, "cron", "--kubernetes", "../../../runbooks/logrotate.yaml"))
	if len(rules) != 1 || len(rules["ClusterRole"]) != 1 || !hasRule(rules["ClusterRole"], "", "nodes", "get", "list") {
		t.Errorf("logrotate RBAC: %v", rules)
	}
	// upgrade-finalizers patches objects found at run time: the kinds come
	// from the literal step parameters, namespaced ones in a Role.
	rules = manifestRules(t, runOK(t, "cron", "--kubernetes", "../../../runbooks/upgrade-finalizers.yaml"))
	if !hasRule(rules["ClusterRole"], "rbac.authorization.k8s.io", "clusterroles", "get", "list", "patch") {
		t.Errorf("upgrade-finalizers cluster rules: %v", rules["ClusterRole"])
	}
	for key, rs := range rules {
		for _, r := range rs {
			for _, g := range r["apiGroups"].([]any) {
				if g == "*" {
					t.Errorf("%s: wildcard rule %v", key, r)
				}
			}
			for _, res := range r["resources"].([]any) {
				if res == "secrets" && key == "ClusterRole" {
					t.Errorf("cluster-wide access to Secrets: %v", r)
				}
			}
		}
	}
}
