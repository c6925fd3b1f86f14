package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"nksrun/cmd/nksrun/cli"
)

// TestE2EQuickStartConfig follows the README's quick start: each
// connection setting written once in the config file (with ~/ paths), then
// plain `nksrun inventory` and `nksrun plan logrotate` from any directory
// reach the cluster and the nodes; a flag still beats the file.
func TestE2EQuickStartConfig(t *testing.T) {
	e := newE2E(t)
	e.reset(t)
	home := t.TempDir()
	nks := filepath.Join(home, "nks")
	if err := os.MkdirAll(nks, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, target := range map[string]string{"kubeconfig.yaml": e.tb.Kubeconfig, "keypair.pem": e.tb.KeyPath, "known_hosts": e.tb.KnownHosts} {
		if err := os.Symlink(target, filepath.Join(nks, name)); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("HOME", home)
	t.Setenv("XDG_CONFIG_HOME", "")
	t.Setenv("XDG_CACHE_HOME", "")
	t.Setenv("KUBECONFIG", "")
	t.Setenv("NKSRUN_CONFIG", "")
	t.Setenv("NKSRUN_SSH_CONFIG", filepath.Join(home, "none"))
	cfg := filepath.Join(home, ".config", "nksrun", "config.yaml")
	_ = os.MkdirAll(filepath.Dir(cfg), 0o755)
	if err := os.WriteFile(cfg, []byte("kubeconfig: ~/nks/kubeconfig.yaml\nidentity: [~/nks/keypair.pem]\nknown_hosts: ~/nks/known_hosts\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(t.TempDir())
	if code, out, errs := nksrun(t, "inventory"); code != 0 || strings.Count(out, "\n") != len(e.tb.Nodes)+1 {
		t.Fatalf("inventory with the config file: exit %d\n%s\n%s", code, out, errs)
	}
	code, out, errs := nksrun(t, "plan", "--detailed-exitcode", "logrotate")
	if code != cli.ExitChanges || !strings.Contains(out, "changes on 3 nodes") {
		t.Fatalf("plan logrotate with the config file: exit %d, want 2\n%s\n%s", code, out, errs)
	}
	// apply by name from here too (the testbed's kernels need no nokmem:
	// every node is skipped, nothing to do, exit 0).
	code, out, errs = nksrun(t, "apply", "--auto-approve", "--lock-file", e.lockFile, "cgroup-nokmem")
	if code != 0 || !strings.Contains(out, "runbook cgroup-nokmem (guide §5)") {
		t.Errorf("apply cgroup-nokmem from an empty directory: exit %d\n%s\n%s", code, out, errs)
	}
	// A flag beats the file.
	if code, _, errs := nksrun(t, "plan", "--kubeconfig", filepath.Join(home, "missing"), "logrotate"); code != cli.ExitError || !strings.Contains(errs, "missing") {
		t.Errorf("--kubeconfig did not override the file: exit %d %s", code, errs)
	}
}
