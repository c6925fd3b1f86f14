package moduletest_test

import (
	"os"
	"os/exec"
	"testing"

	"nksrun/engine/module"
	"nksrun/engine/module/moduletest"
	"nksrun/engine/module/runnertest"
)

// TestConformance runs the runner conformance suite against the local
// runner. As root its Sudo runs commands directly; otherwise through real
// `sudo -n`, and where that is not allowed Sudo must fail (NoSudo).
func TestConformance(t *testing.T) {
	var caps []runnertest.Capability
	if os.Geteuid() != 0 && exec.Command("sudo", "-n", "true").Run() != nil {
		caps = append(caps, runnertest.NoSudo)
	}
	runnertest.Run(t, func(t *testing.T) module.Runner { return &moduletest.LocalRunner{} }, caps...)
}
