package views

import (
	"bytes"
	"encoding/json"
	"nksrun/testdata/golden"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"nksrun/engine/planfile"
	"nksrun/engine/plans"
	"nksrun/engine/plans/planstest"
	"nksrun/engine/redact"
)

func TestRenderPlanGolden(t *testing.T) {
	p, secrets := planstest.Golden()
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
			if !bytes.Contains(got, []byte(redact.Redacted)) {
				t.Errorf("%s view: no %q marker: the secret param should be shown redacted", tc.format, redact.Redacted)
			}
			golden.Assert(t, filepath.Join("plan", tc.file), got)
		})
	}
}

// assertNoSecret checks the secret in clear, JSON-escaped and Markdown-escaped
// form, and its distinctive halves.
func assertNoSecret(t *testing.T, out []byte) {
	t.Helper()
	esc, _ := json.Marshal(planstest.Secret)
	for _, form := range []string{planstest.Secret, string(esc[1 : len(esc)-1]), strings.ReplaceAll(planstest.Secret, "|", `\|`), "hunter2", `pa\|ss`} {
		if bytes.Contains(out, []byte(form)) {
			t.Errorf("output contains the secret (as %q)", form)
		}
	}
}

// The Markdown view: one summary row per runbook, a table per runbook with
// a row per target and step, diffs in fences that a ``` inside cannot close.
func TestRenderMarkdownStructure(t *testing.T) {
	p, secrets := planstest.Golden()
	var buf bytes.Buffer
	if err := RenderPlan(&buf, p, FormatMarkdown, secrets); err != nil {
		t.Fatal(err)
	}
	md := buf.String()
	for _, want := range []string{
		"| `logrotate` | §1 | 4 | 1 | 1 | 1 | 1 | 1 | 0 | 0 |",
		"| `dockerhub-ratelimit` | §7.2 | 1 | 1 | 0 | 0 | 0 | 1 | 1 | 1 |",
		"#### w-node-0 (centos@10.0.0.10): changes",
		"| `config` | change | update /etc/logrotate.d/docker",
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
	p, _ := planstest.Golden()
	p.Runbooks = p.Runbooks[:1]
	if err := planfile.Seal(p); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := RenderPlan(&buf, p, FormatJSON, &redact.Secrets{}); err != nil {
		t.Fatal(err)
	}
	got, err := planfile.Read(buf.Bytes(), 0, time.Now())
	if err != nil {
		t.Fatalf("JSON view is not a readable plan: %v", err)
	}
	if got.Checksum != p.Checksum || len(got.Runbooks) != 1 || len(got.Runbooks[0].Targets) != 4 {
		t.Errorf("round trip lost data: %+v", got)
	}
	// With a secret redacted the checksum no longer matches: a redacted
	// view can never be applied by mistake.
	q, secrets := planstest.Golden()
	buf.Reset()
	if err := RenderPlan(&buf, q, FormatJSON, secrets); err != nil {
		t.Fatal(err)
	}
	if _, err := planfile.Read(buf.Bytes(), 0, time.Now()); err == nil {
		t.Error("a redacted JSON view was accepted as a plan")
	}
}

func TestRedactJSON(t *testing.T) {
	s := &redact.Secrets{}
	s.AddSecret(planstest.Secret)
	s.AddSecret("nested-field-value")
	in, _ := json.MarshalIndent(map[string]any{"a": "x " + planstest.Secret + " y", "nested-field-value": "nested-field-value", "b": []any{"plain", 2.5}}, "", "  ")
	out := RedactJSON(in, s)
	var v map[string]any
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("redacted JSON is invalid: %v\n%s", err, out)
	}
	// Values are redacted; keys are structure and stay as they are.
	if v["a"] != "x "+redact.Redacted+" y" || v["nested-field-value"] != redact.Redacted {
		t.Errorf("redacted = %v", v)
	}
	if plain := []byte(`{"k": "v \"q\" \\ \u00e9"}`); !bytes.Equal(RedactJSON(plain, s), plain) {
		t.Error("JSON without secrets was changed")
	}
}

// TestRedactedPlanCopiesOnlyForSecrets: without a registered secret the
// views render the plan itself (not even a trip through JSON, which at 1,000 nodes
// cost about 10 MB while apply held every connection); with one, a copy
// without it.
func TestRedactedPlanCopiesOnlyForSecrets(t *testing.T) {
	p, _ := planstest.Golden()
	for name, s := range map[string]*redact.Secrets{"nil": nil, "empty": {}} {
		if got, err := redactedPlan(p, s); err != nil || got != p {
			t.Errorf("%s secrets: got a copy (%v)", name, err)
		}
		if n := testing.AllocsPerRun(10, func() { _, _ = redactedPlan(p, s) }); n != 0 {
			t.Errorf("%s secrets: %v allocations, want none (no trip through JSON)", name, n)
		}
	}
	at := slices.IndexFunc(p.Runbooks, func(rp plans.RunbookPlan) bool { return rp.Params["password"] == planstest.Secret })
	if at < 0 {
		t.Fatal("the golden plan holds no secret param to redact")
	}
	s := &redact.Secrets{}
	s.AddSecret(planstest.Secret)
	got, err := redactedPlan(p, s)
	if err != nil || got == p {
		t.Fatalf("with a secret: got the plan itself (%v)", err)
	}
	if v := got.Runbooks[at].Params["password"]; v != redact.Redacted {
		t.Errorf("the copy's secret param is %q", v)
	}
	if p.Runbooks[at].Params["password"] != planstest.Secret {
		t.Error("redacting changed the plan itself")
	}
}

// TestSecretsCannotRewriteTheReview reproduces the attack where a tenant's
// Secret values ("status", "changes", "runbook", "unreachable", ...) were
// registered with the redactor and blanked the plan: the views must still
// show every status, action and count of the plan.
func TestSecretsCannotRewriteTheReview(t *testing.T) {
	p, _ := planstest.Golden()
	s := &redact.Secrets{}
	for _, v := range []string{"status", "changes", "runbook", "change", "unreachable", "logrotate", "file_sync", "w-node-0", "cluster", "Plan"} {
		s.AddSecret(v)
	}
	var text, md, js bytes.Buffer
	for _, r := range []struct {
		format string
		buf    *bytes.Buffer
	}{{FormatText, &text}, {FormatMarkdown, &md}, {FormatJSON, &js}} {
		if err := RenderPlan(r.buf, p, r.format, s); err != nil {
			t.Fatal(err)
		}
	}
	c := p.Counts()
	if c.Change == 0 || c.Unreachable == 0 {
		t.Fatalf("fixture has no change or unreachable target: %+v", c)
	}
	var clean bytes.Buffer
	if err := RenderPlan(&clean, p, FormatText, &redact.Secrets{}); err != nil {
		t.Fatal(err)
	}
	// Free text may lose a long secret's value to "(redacted)"; what the
	// plan says it will do (the summary and every action and status) may not.
	structural := func(out string) []string {
		var keep []string
		for _, l := range strings.Split(out, "\n") {
			f := strings.Fields(l)
			if strings.HasPrefix(l, "Plan:") {
				keep = append(keep, l)
			} else if len(f) > 1 && strings.Contains("~=-?!", f[0]) {
				keep = append(keep, f[0]+" "+f[1])
			}
		}
		return keep
	}
	if got, want := structural(text.String()), structural(clean.String()); strings.Join(got, "|") != strings.Join(want, "|") || len(want) < 5 {
		t.Errorf("text view's actions and summary changed by secrets:\n got %q\nwant %q", got, want)
	}
	var back plans.Plan
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if got := back.Counts(); got != c {
		t.Errorf("JSON view counts %+v, plan has %+v", got, c)
	}
	if !strings.Contains(md.String(), "unreachable") {
		t.Error("markdown lost the unreachable status")
	}
}
