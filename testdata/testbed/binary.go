package testbed

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// NksrunBinary builds nksrun once per test process, for tests that run it
// as a process (to signal or kill it). The binary is removed with the
// process's temp files by the OS, not by a test's cleanup, because several
// tests share it.
func NksrunBinary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "nksrun-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "nksrun")
		if out, err := exec.Command("go", "build", "-o", binPath, "nksrun/cmd/nksrun").CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build: %v: %s", err, out)
		}
	})
	if binErr != nil {
		t.Fatalf("building nksrun: %v", binErr)
	}
	return binPath
}
