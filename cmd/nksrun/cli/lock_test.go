package cli_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"nksrun/cmd/nksrun/cli"
)

// applyNoCluster runs apply up to the point where it needs the cluster (the
// kubeconfig does not exist): it takes the lock first, so the exit code
// says whether the lock was taken (1: it went on and failed on the
// kubeconfig), held (3) or refused (1 with a lock error).
func applyNoCluster(t *testing.T, extra []string, runbooks ...string) (int, string) {
	t.Helper()
	args := append([]string{"apply", "--auto-approve", "--kubeconfig", filepath.Join(t.TempDir(), "missing")}, extra...)
	for _, rb := range runbooks {
		args = append(args, "../../../runbooks/"+rb+".yaml")
	}
	var out, errb bytes.Buffer
	code := cli.Run(context.Background(), args, strings.NewReader(""), &out, &errb)
	t.Logf("nksrun %s → exit %d: %s", strings.Join(args, " "), code, errb.String())
	return code, errb.String()
}

func holdLock(t *testing.T, path string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := flock(f); err != nil {
		t.Fatal(err)
	}
}

// One lock per runbook by default: two different runbooks at the same
// minute both run, the same runbook twice still exits 3.
func TestLockPerRunbook(t *testing.T) {
	cache := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", cache)
	holdLock(t, filepath.Join(cache, "nksrun", "logrotate.lock"))

	if code, stderr := applyNoCluster(t, nil, "rpc-statd"); code != cli.ExitError || strings.Contains(stderr, "lock") {
		t.Errorf("another runbook while logrotate runs: exit %d, want 1 from the missing kubeconfig (not the lock): %s", code, stderr)
	}
	if code, stderr := applyNoCluster(t, nil, "logrotate"); code != cli.ExitLocked || !strings.Contains(stderr, filepath.Join(cache, "nksrun", "logrotate.lock")) {
		t.Errorf("the same runbook twice: exit %d, want %d naming the lock: %s", code, cli.ExitLocked, stderr)
	}
	// A run of several runbooks takes each one's lock.
	if code, _ := applyNoCluster(t, nil, "rpc-statd", "logrotate"); code != cli.ExitLocked {
		t.Errorf("rpc-statd + logrotate while logrotate runs: exit %d, want %d", code, cli.ExitLocked)
	}
	// An explicit --lock-file is one lock for everything.
	shared := filepath.Join(t.TempDir(), "shared.lock")
	holdLock(t, shared)
	if code, _ := applyNoCluster(t, []string{"--lock-file", shared}, "rpc-statd"); code != cli.ExitLocked {
		t.Errorf("explicit lock held: exit %d, want %d", code, cli.ExitLocked)
	}
}

// A lock file that is a symlink to a victim file is refused: the victim
// keeps its content and the run stops with a clear error before anything.
func TestLockSymlinkRefused(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(t.TempDir(), "victim")
	const content = "precious data\n"
	if err := os.WriteFile(victim, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	lock := filepath.Join(dir, "apply.lock")
	if err := os.Symlink(victim, lock); err != nil {
		t.Fatal(err)
	}
	code, stderr := applyNoCluster(t, []string{"--lock-file", lock}, "logrotate")
	if code != cli.ExitError || !strings.Contains(stderr, "symbolic link") || !strings.Contains(stderr, lock) {
		t.Errorf("symlinked lock: exit %d, want 1 with a symlink error naming %s: %s", code, lock, stderr)
	}
	if strings.Contains(stderr, "kubeconfig") {
		t.Errorf("the run went on past the refused lock: %s", stderr)
	}
	if b, err := os.ReadFile(victim); err != nil || string(b) != content {
		t.Errorf("victim changed: %q, %v", b, err)
	}

	// The same through the default location: $XDG_CACHE_HOME/nksrun/RUNBOOK.lock.
	cache := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", cache)
	if err := os.MkdirAll(filepath.Join(cache, "nksrun"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(cache, "nksrun", "logrotate.lock")); err != nil {
		t.Fatal(err)
	}
	if code, stderr := applyNoCluster(t, nil, "logrotate"); code != cli.ExitError || !strings.Contains(stderr, "symbolic link") {
		t.Errorf("symlinked default lock: exit %d: %s", code, stderr)
	}
	if b, _ := os.ReadFile(victim); string(b) != content {
		t.Errorf("victim changed through the default lock: %q", b)
	}
}

// The lock's directory must be a real directory of this user that nobody
// else can write.
func TestLockDirectoryChecks(t *testing.T) {
	real := t.TempDir()
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	open := t.TempDir()
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	sticky := t.TempDir()
	if err := os.Chmod(sticky, os.ModeSticky|0o777); err != nil { // like /tmp
		t.Fatal(err)
	}
	other := t.TempDir()
	if os.Geteuid() == 0 {
		if err := os.Chown(other, 12345, 12345); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		name, dir, want string
	}{
		{"symlinked directory", link, "symbolic link"},
		{"world-writable directory", open, "writable by group or others"},
		{"sticky shared directory", sticky, "writable by group or others"},
		{"directory of another user", other, "owned by uid"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.name == "directory of another user" && os.Geteuid() != 0 {
				t.Skip("needs root to make a directory owned by another user")
			}
			lock := filepath.Join(c.dir, "apply.lock")
			code, stderr := applyNoCluster(t, []string{"--lock-file", lock}, "logrotate")
			if code != cli.ExitError || !strings.Contains(stderr, c.want) {
				t.Errorf("exit %d, want 1 with %q: %s", code, c.want, stderr)
			}
			if _, err := os.Lstat(filepath.Join(real, "apply.lock")); err == nil {
				t.Errorf("a lock file was created through the symlinked directory")
			}
		})
	}
}

// Without HOME there is no /tmp fallback: $XDG_RUNTIME_DIR, then
// /run/user/UID, else a clear error.
func TestLockWithoutHome(t *testing.T) {
	t.Setenv("HOME", "")
	t.Setenv("XDG_CACHE_HOME", "")
	rt := t.TempDir()
	t.Setenv("XDG_RUNTIME_DIR", rt)
	holdLock(t, filepath.Join(rt, "nksrun", "logrotate.lock"))
	if code, stderr := applyNoCluster(t, nil, "logrotate"); code != cli.ExitLocked || !strings.Contains(stderr, rt) {
		t.Errorf("lock under $XDG_RUNTIME_DIR: exit %d: %s", code, stderr)
	}

	t.Setenv("XDG_RUNTIME_DIR", "")
	// The old fallback was $TMPDIR/nksrun/apply.lock, where anyone could
	// plant a symlink to a file of the user's and have it truncated.
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("keep me\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(tmp, "nksrun"), 0o777); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"apply.lock", "logrotate.lock"} {
		if err := os.Symlink(victim, filepath.Join(tmp, "nksrun", name)); err != nil {
			t.Fatal(err)
		}
	}
	run := filepath.Join("/run/user", strconv.Itoa(os.Geteuid()))
	if _, err := os.Stat(run); err == nil {
		t.Skipf("%s exists: the no-place case cannot be shown here", run)
	}
	code, stderr := applyNoCluster(t, nil, "logrotate")
	if code != cli.ExitError || !strings.Contains(stderr, "--lock-file") || strings.Contains(stderr, "kubeconfig") {
		t.Errorf("no HOME, no runtime dir: exit %d, want 1 asking for --lock-file: %s", code, stderr)
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep me\n" {
		t.Errorf("the file behind the planted $TMPDIR lock changed: %q", b)
	}
}
