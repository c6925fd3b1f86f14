package runbooks_test

// Shared helpers of the cluster runbooks' end-to-end tests live in this file.

import (
	"path/filepath"
	"testing"

	"nksrun/engine/runbook"
	"nksrun/modules"
)

var clusterRunbooks = []string{
	"dockerhub-ratelimit", "ghcr-migration", "cinder-csi-rescan", "fsgroup-policy", "calico-ebpf-udp",
	"calico-ebpf-istio", "calico-328-scale", "upgrade-finalizers", "calico-image-repo",
}

func loadRB(t testing.TB, name string) *runbook.Runbook {
	t.Helper()
	rb, err := runbook.Load(filepath.Join(".", name+".yaml"), modules.Registry())
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return rb
}

func TestClusterRunbooksLoad(t *testing.T) {
	for _, name := range clusterRunbooks {
		t.Run(name, func(t *testing.T) {
			if _, err := filepath.Abs(name + ".yaml"); err != nil {
				t.Fatal(err)
			}
			rb := loadRB(t, name)
			if rb.Description == "" {
				t.Errorf("%s: no description", name)
			}
		})
	}
}
