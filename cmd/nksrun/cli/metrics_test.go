package cli_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"nksrun/cmd/nksrun/cli"
)

// planMetrics runs a plan that fails before any host (no kubeconfig): it
// still writes its runbooks' series (success 0, exit code 1).
func planMetrics(t *testing.T, metrics string, runbooks ...string) {
	t.Helper()
	args := []string{"plan", "--kubeconfig", filepath.Join(t.TempDir(), "missing"), "--metrics-file", metrics}
	for _, rb := range runbooks {
		args = append(args, "../../../runbooks/"+rb+".yaml")
	}
	var out, errb bytes.Buffer
	if code := cli.Run(context.Background(), args, strings.NewReader(""), &out, &errb); code != cli.ExitError {
		t.Errorf("plan %v: exit %d: %s", runbooks, code, errb.String())
	}
}

func seriesOf(t *testing.T, path, metric string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, metric+"{") {
			out = append(out, l)
		}
	}
	return out
}

// Runbooks sharing one --metrics-file keep each other's series; a run
// replaces only its own (runbook, phase) series.
func TestMetricsKeepOtherRunbooks(t *testing.T) {
	dir := t.TempDir()
	m := filepath.Join(dir, "nksrun.prom")
	// Something else's series in the file survives too.
	if err := os.WriteFile(m, []byte("# HELP other_metric Not ours.\n# TYPE other_metric counter\nother_metric{x=\"1\"} 5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	planMetrics(t, m, "logrotate")
	planMetrics(t, m, "rpc-statd")
	planMetrics(t, m, "logrotate")
	got := seriesOf(t, m, "nksrun_last_run_exit_code")
	want := []string{
		`nksrun_last_run_exit_code{runbook="logrotate",phase="plan"} 1`,
		`nksrun_last_run_exit_code{runbook="rpc-statd",phase="plan"} 1`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("series:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	b, _ := os.ReadFile(m)
	for _, w := range []string{"other_metric{x=\"1\"} 5\n", "# TYPE other_metric counter\n", "# HELP nksrun_last_run_exit_code Exit code of the last run.\n"} {
		if !strings.Contains(string(b), w) {
			t.Errorf("metrics file lacks %q:\n%s", w, b)
		}
	}
	if n := strings.Count(string(b), "# TYPE nksrun_last_run_exit_code gauge\n"); n != 1 {
		t.Errorf("%d TYPE lines for one metric:\n%s", n, b)
	}
	// No temp file left where the textfile collector looks.
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.Name() != "nksrun.prom" && e.Name() != "nksrun.prom.lock" {
			t.Errorf("left in the collector's directory: %s", e.Name())
		}
	}
}

// Runs of different runbooks ending at once (each has its own lock now)
// lose none of each other's series.
func TestMetricsConcurrentRuns(t *testing.T) {
	m := filepath.Join(t.TempDir(), "nksrun.prom")
	rbs := []string{"logrotate", "rpc-statd", "cgroup-nokmem", "fsgroup-policy", "calico-ebpf-udp", "ghcr-migration"}
	var wg sync.WaitGroup
	for _, rb := range rbs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			planMetrics(t, m, rb)
		}()
	}
	wg.Wait()
	if got := seriesOf(t, m, "nksrun_last_run_success"); len(got) != len(rbs) {
		t.Errorf("%d series after %d concurrent runs:\n%s", len(got), len(rbs), strings.Join(got, "\n"))
	}
}
