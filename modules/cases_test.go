package modules

import (
	"os"
	"path/filepath"
	"testing"

	"nksrun/engine/module"
	"nksrun/engine/module/optest"
)

// TestModuleCases runs the data-driven cases of testdata/modules/<module>
// (see engine/module/optest): params and node state in; action, fingerprint,
// summary, diff and apply script out (golden); every change applied to a
// simulated node and planned again, which must be a no-op.
//
//	go test ./modules/ -run TestModuleCases            # all
//	go test ./modules/ -run 'TestModuleCases/grub_arg' # one module
//	go test ./modules/ -run TestModuleCases -update    # rewrite the goldens
func TestModuleCases(t *testing.T) {
	// Modules that must have cases; the cluster modules' cases need an API
	// server and run in TestClusterModuleCases.
	for _, name := range []string{"file_sync", "grub_arg", "systemd_restart", "report"} {
		if _, err := os.Stat(filepath.Join(optest.Dir(), name)); err != nil {
			t.Errorf("module %s has no cases: %v", name, err)
		}
	}
	for name, f := range Registry() {
		m := f()
		if m.Scope() == module.ScopeCluster {
			continue
		}
		if _, err := os.Stat(filepath.Join(optest.Dir(), name)); err != nil {
			continue
		}
		t.Run(name, func(t *testing.T) { optest.Run(t, m, name) })
	}
}
