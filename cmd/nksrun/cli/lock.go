package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// acquireLocks takes an exclusive flock so two applies of the same runbook
// (cron and an operator, or two cron runs) never overlap, while different
// runbooks scheduled at the same minute both run: by default there is one
// lock per runbook (RUNBOOK.lock in defaultLockDir). An explicit
// --lock-file is one lock for the whole run, whatever its runbooks. The
// kernel drops a flock when the process dies, even by SIGKILL, so a killed
// run never blocks the next one. The reboot module additionally holds a
// Lease in the cluster, which also covers runs from different machines.
func acquireLocks(explicit string, runbooks []string) (func(), error) {
	var paths []string
	if explicit != "" {
		paths = []string{explicit}
	} else {
		dir, err := defaultLockDir()
		if err != nil {
			return nil, err
		}
		seen := map[string]bool{}
		for _, rb := range runbooks {
			p := filepath.Join(dir, lockName(rb))
			if !seen[p] {
				seen[p] = true
				paths = append(paths, p)
			}
		}
		if len(paths) == 0 { // nothing named (an empty saved plan): still one lock
			paths = []string{filepath.Join(dir, "apply.lock")}
		}
		// The same order in every process; the locks are taken without
		// waiting, so this is for stable messages rather than deadlocks.
		sort.Strings(paths)
	}
	var unlocks []func()
	release := func() {
		for i := len(unlocks) - 1; i >= 0; i-- {
			unlocks[i]()
		}
	}
	for _, p := range paths {
		unlock, err := acquireLock(p)
		if err != nil {
			release()
			return nil, err
		}
		unlocks = append(unlocks, unlock)
	}
	return release, nil
}

// lockName is the default lock file of a runbook: its name, with anything
// that could leave the directory replaced.
func lockName(runbook string) string {
	return safeFileName(runbook) + ".lock"
}

func safeFileName(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || (c == '.' && i > 0)) {
			b[i] = '_'
		}
	}
	if len(b) == 0 {
		return "_"
	}
	return string(b)
}

// defaultLockDir is where locks (and cron's logs) live when no path is given:
// the user's cache directory ($XDG_CACHE_HOME or ~/.cache), else the
// per-user runtime directory ($XDG_RUNTIME_DIR, then /run/user/UID). Never
// a shared directory such as /tmp, where another user could plant a
// symlink or hold the lock.
func defaultLockDir() (string, error) {
	if d, err := os.UserCacheDir(); err == nil && filepath.IsAbs(d) {
		return filepath.Join(d, "nksrun"), nil
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "nksrun"), nil
	}
	run := filepath.Join("/run/user", strconv.Itoa(os.Geteuid()))
	if fi, err := os.Lstat(run); err == nil && fi.IsDir() {
		return filepath.Join(run, "nksrun"), nil
	}
	return "", fmt.Errorf("lock: no private directory for the lock: HOME, XDG_CACHE_HOME and XDG_RUNTIME_DIR are unset and %s does not exist; pass --lock-file PATH (in a directory only you can write)", run)
}

// acquireLock takes the lock at path. The directory must be a real
// directory (not a symlink), owned by this user and not writable by group
// or others; the lock file is opened relative to that directory with
// O_NOFOLLOW, so a symlink planted as the lock file is refused instead of
// followed (and its target truncated). A missing directory is made with
// mode 0700.
func acquireLock(path string) (func(), error) {
	// Dir, not Split: a trailing slash ("link/") would make the kernel
	// follow the last component whatever O_NOFOLLOW says.
	dir, base := filepath.Dir(path), filepath.Base(path)
	if base == "" || base == "." || base == ".." || base == "/" {
		return nil, fmt.Errorf("lock: %q is not a file name", path)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	dfd, err := syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) || errors.Is(err, syscall.ENOTDIR) {
			return nil, fmt.Errorf("lock: directory %s is a symbolic link or not a directory: refusing it (use a real directory only you can write)", dir)
		}
		return nil, fmt.Errorf("lock: directory %s: %w", dir, err)
	}
	defer syscall.Close(dfd)
	var st syscall.Stat_t
	if err := syscall.Fstat(dfd, &st); err != nil {
		return nil, fmt.Errorf("lock: directory %s: %w", dir, err)
	}
	if int(st.Uid) != os.Geteuid() {
		return nil, fmt.Errorf("lock: directory %s is owned by uid %d, not by you (uid %d): refusing it (another user could replace the lock)", dir, st.Uid, os.Geteuid())
	}
	if st.Mode&0o022 != 0 {
		return nil, fmt.Errorf("lock: directory %s is writable by group or others (mode %04o): refusing it (another user could replace the lock); chmod go-w it or pass --lock-file elsewhere", dir, st.Mode&0o7777)
	}
	// O_NONBLOCK: a FIFO planted in place of the lock must not hang the run.
	fd, err := syscall.Openat(dfd, base, syscall.O_RDWR|syscall.O_CREAT|syscall.O_NOFOLLOW|syscall.O_CLOEXEC|syscall.O_NONBLOCK, 0o600)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, fmt.Errorf("lock: %s is a symbolic link: refusing to follow it (nksrun never follows a symlink for its lock; remove it)", path)
		}
		return nil, fmt.Errorf("lock: %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock: %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("lock: %s is not a regular file (%s): refusing it", path, fi.Mode().Type())
	}
	if err := syscall.Flock(fd, syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder := make([]byte, 32)
		n, _ := f.ReadAt(holder, 0)
		f.Close()
		who := ""
		if pid := strings.TrimSpace(string(holder[:n])); pid != "" {
			who = " (pid " + pid + ")"
		}
		return nil, exitError{ExitLocked, fmt.Sprintf("nksrun apply: another run holds the lock %s%s; exiting without doing anything (exit %d)", path, who, ExitLocked)}
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return func() {
		_ = f.Truncate(0)
		_ = syscall.Flock(fd, syscall.LOCK_UN)
		f.Close()
	}, nil
}
