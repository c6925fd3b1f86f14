package engine

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"nksrun/engine/module"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden/plan")

// goldenSecret is a secret param value with characters that JSON and
// Markdown escape, so a redactor working on rendered text would miss it.
const goldenSecret = `hunter2<&>"pa|ss`

// goldenPlan is a fixed plan covering every view feature: two runbooks,
// node and cluster targets, change/no-op/skip/unknown/finding actions, a
// diff containing a code fence, unreachable and failed targets, and a secret
// param that also appears in a summary and a diff.
func goldenPlan() (*Plan, *Secrets) {
	s := &Secrets{}
	s.AddSecret(goldenSecret)
	p := &Plan{
		FormatVersion: PlanFormatVersion,
		Tool:          "v0.1.0-test",
		CreatedAt:     time.Date(2025, 3, 1, 9, 30, 0, 0, time.UTC),
		Runbooks: []RunbookPlan{
			{
				Name: "logrotate", Title: "Keep the docker container logrotate config identical", Section: "1",
				Path: "/opt/nksrun/runbooks/logrotate.yaml", Source: "name: logrotate\n# ...\n",
				SourceHash: "3f1a8e0c5b7d2a4e6f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6",
				Params:     map[string]any{"dest": "/etc/logrotate.d/docker", "config": "files/docker-logrotate.conf"},
				Targets: []TargetPlan{
					{Kind: TargetNode, Name: "w-node-2", Address: "10.0.0.12", User: "ubuntu", Port: 22, Status: StatusSkipped, Reason: "runtime is not docker"},
					{Kind: TargetNode, Name: "w-node-0", Address: "10.0.0.10", User: "centos", Port: 22, Status: StatusChanges, Steps: []StepPlan{{
						ID: "config", Module: "file_sync", Params: json.RawMessage(`{"dest":"/etc/logrotate.d/docker","src":"files/docker-logrotate.conf","mode":"0644"}`),
						Planned: module.Planned{
							Action: module.Change, Summary: "update /etc/logrotate.d/docker (9f86d081 0644 root:root)",
							Reason:      "content differs (sha256 2c26b46b, want 9f86d081)",
							Diff:        "--- /etc/logrotate.d/docker\n+++ /etc/logrotate.d/docker\n@@ -1,3 +1,4 @@\n /var/lib/docker/containers/*/*.log {\n-  rotate 5\n+  rotate 10\n+  # ``` not a fence\n   copytruncate\n",
							Fingerprint: map[string]string{"sha256": "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"},
							Data:        json.RawMessage(`{"sha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}`),
						},
					}}},
					{Kind: TargetNode, Name: "w-node-1", Address: "10.0.0.11", User: "rocky", Port: 22, Status: StatusOK, Steps: []StepPlan{{
						ID: "config", Module: "file_sync",
						Planned: module.Planned{Action: module.NoOp, Summary: "/etc/logrotate.d/docker in sync (sha256 9f86d081)", Fingerprint: map[string]string{"sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}},
					}}},
					{Kind: TargetNode, Name: "w-node-3", Address: "10.0.0.13", User: "centos", Port: 22, Status: StatusUnreachable, Reason: "dial tcp 10.0.0.13:22: connect: no route to host"},
				},
			},
			{
				Name: "dockerhub-ratelimit", Title: "Docker Hub pull rate limit | image pull secret", Section: "7.2",
				Path: "/opt/nksrun/runbooks/dockerhub-ratelimit.yaml", Source: "name: dockerhub-ratelimit\n",
				SourceHash: "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90",
				Params:     map[string]any{"namespaces": []any{"default", "web"}, "password": goldenSecret, "retries": 3},
				Targets: []TargetPlan{{Kind: TargetCluster, Name: "cluster", Status: StatusChanges, Steps: []StepPlan{
					{ID: "diagnose", Module: "report", Planned: module.Planned{Action: module.Finding, Summary: "pull rate limit hit", Findings: []module.FindingInfo{{
						Severity: "warning", Title: "3 pods failed to pull: toomanyrequests",
						Evidence:       []string{"web/api-7d9f: Failed to pull image \"nginx:1.25\": toomanyrequests", "login used password " + goldenSecret},
						Recommendation: "create an image pull secret (step secret)",
					}}}},
					{ID: "secret", Module: "pull_secret", Planned: module.Planned{
						Action: module.Change, Summary: "create Secret web/dockerhub-pull", Reason: "missing",
						Diff:        "--- web/dockerhub-pull (absent)\n+++ web/dockerhub-pull\n+data:\n+  .dockerconfigjson: (secret, 120 bytes)\n+# auth " + goldenSecret + "\n",
						Fingerprint: map[string]string{"web/dockerhub-pull": "absent"},
					}},
					{ID: "restart", Module: "rollout_restart", Planned: module.Planned{Action: module.Unknown, Summary: "restart Deployment web/api", Reason: "depends on whether the secret step changes something"}},
					{ID: "calico", Module: "k8s_patch", Planned: module.Planned{Action: module.Skip, Summary: "skipped", Reason: "when: params.retries > 5 is false"}},
				}}},
			},
		},
	}
	if err := p.Seal(); err != nil {
		panic(err)
	}
	return p, s
}

func TestRenderPlanGolden(t *testing.T) {
	p, secrets := goldenPlan()
	for _, tc := range []struct{ format, file string }{
		{FormatMarkdown, "plan.md"},
		{FormatJSON, "plan.json"},
		{FormatText, "plan.txt"},
	} {
		t.Run(tc.format, func(t *testing.T) {
			var buf bytes.Buffer
			if err := RenderPlan(&buf, p, tc.format, secrets); err != nil {
				t.Fatal(err)
			}
			got := buf.Bytes()
			assertNoSecret(t, got)
			if !bytes.Contains(got, []byte(Redacted)) {
				t.Errorf("%s view: no %q marker: the secret param should be shown redacted", tc.format, Redacted)
			}
			path := filepath.Join("..", "testdata", "golden", "plan", tc.file)
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./engine -run Golden -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s view differs from %s (go test ./engine -run Golden -update to accept):\n%s", tc.format, path, lineDiff(string(want), string(got)))
			}
		})
	}
}

// assertNoSecret checks the secret in clear, JSON-escaped and Markdown-escaped
// form, and its distinctive halves.
func assertNoSecret(t *testing.T, out []byte) {
	t.Helper()
	esc, _ := json.Marshal(goldenSecret)
	for _, form := range []string{goldenSecret, string(esc[1 : len(esc)-1]), strings.ReplaceAll(goldenSecret, "|", `\|`), "hunter2", `pa\|ss`} {
		if bytes.Contains(out, []byte(form)) {
			t.Errorf("output contains the secret (as %q)", form)
		}
	}
}

func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for i := 0; i < max(len(w), len(g)); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			b.WriteString("line " + strconv.Itoa(i+1) + ":\n  want: " + wl + "\n  got:  " + gl + "\n")
		}
	}
	return b.String()
}

// The Markdown view: one summary row per runbook, a table per runbook with
// a row per target and step, diffs in fences that a ``` inside cannot close.
func TestRenderMarkdownStructure(t *testing.T) {
	p, secrets := goldenPlan()
	var buf bytes.Buffer
	if err := RenderPlan(&buf, p, FormatMarkdown, secrets); err != nil {
		t.Fatal(err)
	}
	md := buf.String()
	for _, want := range []string{
		"| `logrotate` | §1 | 4 | 1 | 1 | 1 | 1 | 1 | 0 | 0 |",
		"| `dockerhub-ratelimit` | §7.2 | 1 | 1 | 0 | 0 | 0 | 1 | 1 | 1 |",
		"| w-node-0 (centos@10.0.0.10) | changes | `config` | change |",
		"````diff\n", // the diff holds ``` so the fence is longer
		"Docker Hub pull rate limit \\| image pull secret", // | escaped in a heading is harmless, in a cell required
		"Plan checksum `" + p.Checksum + "`",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q", want)
		}
	}
}

// JSON is the saved-plan schema: the view of a sealed plan without secrets
// is byte for byte what plan -o writes, so it can be applied.
func TestRenderJSONIsThePlanFile(t *testing.T) {
	p, _ := goldenPlan()
	p.Runbooks = p.Runbooks[:1]
	if err := p.Seal(); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := RenderPlan(&buf, p, FormatJSON, &Secrets{}); err != nil {
		t.Fatal(err)
	}
	got, err := ReadPlan(buf.Bytes(), 0, time.Now())
	if err != nil {
		t.Fatalf("JSON view is not a readable plan: %v", err)
	}
	if got.Checksum != p.Checksum || len(got.Runbooks) != 1 || len(got.Runbooks[0].Targets) != 4 {
		t.Errorf("round trip lost data: %+v", got)
	}
	// With a secret redacted the checksum no longer matches: a redacted
	// view can never be applied by mistake.
	q, secrets := goldenPlan()
	buf.Reset()
	if err := RenderPlan(&buf, q, FormatJSON, secrets); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadPlan(buf.Bytes(), 0, time.Now()); err == nil {
		t.Error("a redacted JSON view was accepted as a plan")
	}
}

func TestRedactJSON(t *testing.T) {
	s := &Secrets{}
	s.AddSecret(goldenSecret)
	in, _ := json.MarshalIndent(map[string]any{"a": "x " + goldenSecret + " y", goldenSecret: 1, "b": []any{"plain", 2.5}}, "", "  ")
	out := RedactJSON(in, s)
	assertNoSecret(t, out)
	var v map[string]any
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("redacted JSON is invalid: %v\n%s", err, out)
	}
	if v["a"] != "x "+Redacted+" y" || v[Redacted] != 1.0 {
		t.Errorf("redacted = %v", v)
	}
	if plain := []byte(`{"k": "v \"q\" \\ \u00e9"}`); !bytes.Equal(RedactJSON(plain, s), plain) {
		t.Error("JSON without secrets was changed")
	}
}
