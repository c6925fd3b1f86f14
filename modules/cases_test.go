package modules

import (
	"os"
	"path/filepath"
	"testing"

	"nksrun/engine/module"
	"nksrun/engine/module/optest"
	"nksrun/testdata/testbed"

	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/restmapper"
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

// TestClusterModuleCases runs the cases of the Kubernetes modules against
// the testbed's real API server (client-go's fake dynamic client cannot do
// the server-side dry run they plan with; see optest.RunCluster). It needs
// root, like every testbed test, and fails instead of skipping with CI set.
//
//	go test ./modules/ -run TestClusterModuleCases
func TestClusterModuleCases(t *testing.T) {
	if testing.Short() && os.Getenv("CI") == "" { // CI always runs the end-to-end tests
		t.Skip("needs the testbed API server; not with -short")
	}
	tb := testbed.New(t, testbed.Options{N: 1})
	c := &module.Cluster{Clientset: tb.Client, Dynamic: tb.Dynamic,
		Mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(tb.Client.Discovery()))}
	for _, name := range []string{"k8s_patch", "set_image", "rollout_restart"} {
		f, ok := Registry()[name]
		if !ok {
			t.Fatalf("no module %s", name)
		}
		t.Run(name, func(t *testing.T) { optest.RunCluster(t, c, f(), name) })
	}
}
