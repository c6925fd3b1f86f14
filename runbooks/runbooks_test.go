package runbooks_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"nksrun/engine/runbook"
	"nksrun/modules"
)

// TestEveryRunbookLoads loads and validates every runbook in this directory
// and checks what every runbook must carry: its guide section, a description
// and, unless diagnose-only, a verify block.
func TestEveryRunbookLoads(t *testing.T) {
	files, err := filepath.Glob("*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no runbooks: %v", err)
	}
	sections := map[string]string{}
	for _, f := range files {
		rb, err := runbook.Load(f, modules.Registry())
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		if want := strings.TrimSuffix(f, ".yaml"); rb.Name != want {
			t.Errorf("%s: name %q, want %q (the file name)", f, rb.Name, want)
		}
		if prev, ok := sections[rb.Section]; ok {
			t.Errorf("%s and %s both claim guide section %s", prev, f, rb.Section)
		}
		sections[rb.Section] = f
		if strings.TrimSpace(rb.Description) == "" {
			t.Errorf("%s: no description", f)
		}
		changes := false
		for _, s := range rb.Steps {
			if s.Module != "report" {
				changes = true
			}
		}
		if changes && len(rb.Verify) == 0 {
			t.Errorf("%s changes things but has no verify", f)
		}
		if _, err := os.Stat(f); err != nil {
			t.Error(err)
		}
	}
	// One runbook per guide section, §1 to §13.
	for i := 1; i <= 13; i++ {
		if _, ok := sections[itoa(i)]; !ok {
			t.Errorf("no runbook for guide section %d", i)
		}
	}
}

func itoa(i int) string {
	return strconv.Itoa(i)
}
