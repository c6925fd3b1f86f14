package cli_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"nksrun/cmd/nksrun/cli"
)

// eventSchema is the JSON log schema of README "Cron" → "JSON log", version
// 1: field → JSON type. Lines may not carry other fields.
var eventSchema = map[string]string{
	"v": "integer", "time": "time", "type": "string", "run": "string", "cluster": "string",
	"phase": "string", "runbook": "string", "target": "string", "step": "string", "module": "string",
	"status": "string", "message": "string",
	"command": "string", "version": "string", "pid": "integer",
	"exit_code": "integer", "duration_seconds": "number", "counts": "counts",
}

var (
	eventRequired = []string{"v", "time", "type", "run"}
	eventTypes    = map[string]bool{"run_start": true, "phase_start": true, "host_result": true, "change": true, "finding": true, "progress": true, "run_end": true}
	eventPhases   = map[string]bool{"plan": true, "recheck": true, "apply": true}
	perType       = map[string][]string{
		"run_start":   {"command", "version", "pid"},
		"phase_start": {"phase"},
		"host_result": {"phase", "runbook", "target", "status"},
		"change":      {"phase", "runbook", "target", "step", "module"},
		"finding":     {"target", "step", "module", "status"},
		"run_end":     {"status", "exit_code", "duration_seconds"},
	}
	endStatuses = map[string]bool{"ok": true, "changes": true, "error": true, "locked": true, "usage": true}
)

// validateEvent checks one decoded log line against the schema.
func validateEvent(m map[string]any) error {
	for k, v := range m {
		typ, ok := eventSchema[k]
		if !ok {
			return fmt.Errorf("field %q is not in the schema", k)
		}
		switch typ {
		case "string":
			if _, ok := v.(string); !ok {
				return fmt.Errorf("%s: want a string, got %T", k, v)
			}
		case "integer":
			f, ok := v.(float64)
			if !ok || f != float64(int64(f)) {
				return fmt.Errorf("%s: want an integer, got %v", k, v)
			}
		case "number":
			if _, ok := v.(float64); !ok {
				return fmt.Errorf("%s: want a number, got %T", k, v)
			}
		case "time":
			s, _ := v.(string)
			if _, err := time.Parse(time.RFC3339Nano, s); err != nil || !strings.HasSuffix(s, "Z") {
				return fmt.Errorf("%s: want an RFC 3339 UTC time, got %v", k, v)
			}
		case "counts":
			c, ok := v.(map[string]any)
			if !ok {
				return fmt.Errorf("%s: want an object, got %T", k, v)
			}
			for st, n := range c {
				if f, ok := n.(float64); !ok || f != float64(int64(f)) || f < 0 {
					return fmt.Errorf("counts.%s: want a count, got %v", st, n)
				}
			}
		}
	}
	for _, k := range eventRequired {
		if _, ok := m[k]; !ok {
			return fmt.Errorf("required field %q missing", k)
		}
	}
	if m["v"] != 1.0 {
		return fmt.Errorf("v = %v, want 1", m["v"])
	}
	typ, _ := m["type"].(string)
	if !eventTypes[typ] {
		return fmt.Errorf("unknown type %q", typ)
	}
	if ph, ok := m["phase"].(string); ok && !eventPhases[ph] {
		return fmt.Errorf("unknown phase %q", ph)
	}
	for _, k := range perType[typ] {
		if _, ok := m[k]; !ok {
			return fmt.Errorf("%s event without %q", typ, k)
		}
	}
	if typ == "run_end" && !endStatuses[m["status"].(string)] {
		return fmt.Errorf("run_end status %q", m["status"])
	}
	return nil
}

// Without a cluster or nodes: a run that fails still logs run_start and
// run_end with its exit code, both valid, and a usage error logs nothing.
func TestJSONLogFailedRun(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "sub", "nksrun.log") // the directory is created
	var out, errb bytes.Buffer
	code := cli.Run(context.Background(), []string{"plan", "--log-format", "json", "--log-file", log, "--kubeconfig", filepath.Join(dir, "missing"), "../../../runbooks/logrotate.yaml"},
		strings.NewReader(""), &out, &errb)
	if code != cli.ExitError {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	lines := readLog(t, log)
	if len(lines) != 2 {
		t.Fatalf("%d lines: %v", len(lines), lines)
	}
	for _, l := range lines {
		if err := validateEvent(l); err != nil {
			t.Errorf("%v: %v", l, err)
		}
	}
	if lines[0]["type"] != "run_start" || lines[0]["command"] != "plan" || lines[1]["type"] != "run_end" ||
		lines[1]["status"] != "error" || lines[1]["exit_code"] != 1.0 || lines[0]["run"] != lines[1]["run"] {
		t.Errorf("lines: %v", lines)
	}
	if !strings.Contains(lines[1]["message"].(string), "kubeconfig") {
		t.Errorf("run_end message: %v", lines[1]["message"])
	}

	// JSON on stderr when there is no --log-file.
	errb.Reset()
	cli.Run(context.Background(), []string{"plan", "--log-format", "json", "--kubeconfig", filepath.Join(dir, "missing"), "../../../runbooks/logrotate.yaml"},
		strings.NewReader(""), &out, &errb)
	first, _, _ := strings.Cut(errb.String(), "\n")
	if !strings.HasPrefix(first, `{"v":1,`) {
		t.Errorf("stderr does not start with a JSON line: %q", errb.String())
	}
}

// The lock: a second holder gets exit 3 at once, with the holder's pid.
func TestLockHeldExitsAtOnce(t *testing.T) {
	dir := t.TempDir()
	lock := filepath.Join(dir, "apply.lock")
	f, err := os.OpenFile(lock, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := flock(f); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	begin := time.Now()
	code := cli.Run(context.Background(), []string{"apply", "--auto-approve", "--lock-file", lock, "--kubeconfig", filepath.Join(dir, "missing"), "../../../runbooks/logrotate.yaml"},
		strings.NewReader(""), &out, &errb)
	took := time.Since(begin)
	t.Logf("exit %d after %s: %s", code, took, errb.String())
	if code != cli.ExitLocked || !strings.Contains(errb.String(), "another run holds the lock") {
		t.Errorf("exit %d, stderr %q", code, errb.String())
	}
}
