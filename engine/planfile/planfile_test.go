package planfile_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"nksrun/engine/planfile"
	"nksrun/engine/plans"
	"nksrun/engine/plans/planstest"
	"strings"
	"testing"
	"time"
)

func savedPlan(t *testing.T) (*plans.Plan, []byte) {
	t.Helper()
	p, _ := planstest.Golden()
	// Numbers and nesting that a Go round trip could change.
	p.Runbooks[0].Params["ratio"] = 0.1
	p.Runbooks[0].Params["big"] = int64(1) << 60
	if err := planfile.Seal(p); err != nil {
		t.Fatal(err)
	}
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return p, append(b, '\n')
}

func TestReadPlanRoundTrip(t *testing.T) {
	p, b := savedPlan(t)
	got, err := planfile.Read(b, 24*time.Hour, p.CreatedAt.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if got.Checksum != p.Checksum || len(got.Runbooks) != 2 {
		t.Fatalf("read back %+v", got)
	}
	// Reformatting (whitespace only) is not an edit.
	var compact bytes.Buffer
	if err := json.Compact(&compact, b); err != nil {
		t.Fatal(err)
	}
	if _, err := planfile.Read(compact.Bytes(), 0, time.Now()); err != nil {
		t.Errorf("compacted plan refused: %v", err)
	}
}

func TestReadPlanRefusesEdits(t *testing.T) {
	p, b := savedPlan(t)
	now := p.CreatedAt.Add(time.Minute)
	for name, edit := range map[string]func(string) string{
		"changed value":  func(s string) string { return strings.Replace(s, "rotate 10", "rotate 99", 1) },
		"changed number": func(s string) string { return strings.Replace(s, `"retries": 3`, `"retries": 3.0`, 1) },
		"changed params": func(s string) string { return strings.Replace(s, `"/etc/logrotate.d/docker"`, `"/etc/passwd"`, 1) },
		"added field": func(s string) string {
			return strings.Replace(s, `"format_version": 1,`, `"format_version": 1, "extra": true,`, 1)
		},
		"changed status": func(s string) string {
			return strings.Replace(s, `"status": "skipped"`, `"status": "changes"`, 1)
		},
		"older created_at": func(s string) string {
			return strings.Replace(s, "2025-03-01T09:30:00Z", "2025-03-01T09:31:00Z", 1)
		},
		"no checksum": func(s string) string {
			return strings.Replace(s, `"checksum": "`+p.Checksum+`"`, `"checksum": ""`, 1)
		},
	} {
		t.Run(name, func(t *testing.T) {
			edited := edit(string(b))
			if edited == string(b) {
				t.Fatal("edit did not apply")
			}
			_, err := planfile.Read([]byte(edited), 0, now)
			if !errors.Is(err, planfile.ErrPlanEdited) {
				t.Errorf("err = %v, want planfile.ErrPlanEdited", err)
			}
		})
	}
}

func TestReadPlanAgeAndVersion(t *testing.T) {
	p, b := savedPlan(t)
	if _, err := planfile.Read(b, time.Hour, p.CreatedAt.Add(2*time.Hour)); !errors.Is(err, planfile.ErrPlanExpired) {
		t.Errorf("2h old plan with 1h limit: err = %v, want planfile.ErrPlanExpired", err)
	}
	if _, err := planfile.Read(b, 0, p.CreatedAt.Add(1000*time.Hour)); err != nil {
		t.Errorf("max age 0 means no limit: %v", err)
	}
	if _, err := planfile.Read(b, time.Hour, p.CreatedAt.Add(-time.Hour)); !errors.Is(err, planfile.ErrPlanExpired) {
		t.Errorf("plan from the future: err = %v", err)
	}
	v2 := strings.Replace(string(b), `"format_version": 1`, `"format_version": 2`, 1)
	if _, err := planfile.Read([]byte(v2), 0, p.CreatedAt); err == nil || !strings.Contains(err.Error(), "format version 2") {
		t.Errorf("version 2: err = %v", err)
	}
	if _, err := planfile.Read([]byte(`{"runbooks": []}`), 0, p.CreatedAt); err == nil || !strings.Contains(err.Error(), "not a plan") {
		t.Errorf("not a plan: err = %v", err)
	}
}
