// Package moduletest helps test modules and the engine without a node.
package moduletest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"nksrun/engine/module"
)

// LocalRunner runs commands with the local /bin/sh, so the shell code
// modules and the engine send to nodes is tested against a real shell and
// file system. It keeps the module.Runner contract that the SSH transport
// keeps (engine/module/runnertest checks both):
//
//   - Sudo: when the test process is root (as the end-to-end tests are), the
//     command runs directly, as root, which is what `sudo -n` gives on a
//     node. Otherwise it runs through the real `sudo -n --`; without
//     passwordless sudo that fails with an error. It never quietly runs a
//     Sudo command as the unprivileged user.
//   - Timeout (RunOpts.Timeout, else CommandTimeout, else 10 minutes) and
//     ctx cancellation end the command's whole process group (TERM, then
//     KILL after 2 s) and return an error matching module.ErrCommandTimeout
//     or the context's error.
//   - stdout+stderr are capped (RunOpts.MaxOutput, else MaxOutput, else
//     module.DefaultMaxOutput); going over ends the command and returns
//     *module.OutputLimitError.
//   - A command killed by signal n exits 128+n, as over SSH.
//
// Calls counts the commands it ran.
type LocalRunner struct {
	Calls atomic.Int64
	// CommandTimeout is the default per-command limit (0: 10 minutes).
	CommandTimeout time.Duration
	// MaxOutput is the default output cap (0: module.DefaultMaxOutput).
	MaxOutput int64
}

var _ module.Runner = (*LocalRunner)(nil)

// ErrNoSudo is returned for a Sudo command when the test is not root and
// `sudo -n` refuses.
var ErrNoSudo = errors.New("local runner: Sudo needs the test to run as root or passwordless sudo")

const killGrace = 2 * time.Second

func (l *LocalRunner) Run(ctx context.Context, command string, opts module.RunOpts) (module.RunResult, error) {
	l.Calls.Add(1)
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = l.CommandTimeout
	}
	if timeout <= 0 {
		timeout = 10 * time.Minute
	}
	limit := opts.MaxOutput
	if limit <= 0 {
		limit = l.MaxOutput
	}
	if limit <= 0 {
		limit = module.DefaultMaxOutput
	}
	errTimeout := fmt.Errorf("%w after %v", module.ErrCommandTimeout, timeout)
	ctx, cancel := context.WithTimeoutCause(ctx, timeout, errTimeout)
	defer cancel()

	viaSudo := opts.Sudo && os.Geteuid() != 0
	var cmd *exec.Cmd
	switch {
	case opts.UserScript != "":
		// As the SSH transport does: the user script in a subshell of the
		// (unprivileged) shell, then the command in its place.
		run := `exec sh -c "$2"`
		if viaSudo {
			run = `exec sudo -n -- sh -c "$2"`
		}
		cmd = exec.Command("sh", "-c", `( eval "$1" ) </dev/null; `+run, "sh", opts.UserScript, command)
	case viaSudo:
		cmd = exec.Command("sudo", "-n", "--", "sh", "-c", command)
	default:
		cmd = exec.Command("sh", "-c", command)
	}
	// Its own process group, so that ending it ends its children too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stdin = opts.Stdin
	budget := &budget{limit: limit, over: make(chan struct{})}
	stdout, stderr := &capped{b: budget}, &capped{b: budget}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	// Children that outlive the shell keep the pipes open; once the group
	// has been killed, do not wait for them longer than this.
	cmd.WaitDelay = killGrace + time.Second
	if err := cmd.Start(); err != nil {
		return module.RunResult{}, fmt.Errorf("local runner: %w", err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()

	var err, stopErr error
	select {
	case err = <-waited:
	case <-ctx.Done():
		if cause := context.Cause(ctx); errors.Is(cause, module.ErrCommandTimeout) {
			stopErr = cause
		} else {
			stopErr = fmt.Errorf("command canceled: %w", cause)
		}
	case <-budget.over:
		stopErr = &module.OutputLimitError{Limit: limit}
	}
	if stopErr != nil {
		endGroup(cmd.Process.Pid, viaSudo, waited)
		return module.RunResult{Stdout: stdout.bytes(), Stderr: stderr.bytes()}, stopErr
	}

	res := module.RunResult{Stdout: stdout.bytes(), Stderr: stderr.bytes()}
	select {
	case <-budget.over:
		// It exited just as it went over: nothing left to end.
		return res, &module.OutputLimitError{Limit: limit}
	default:
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		res.ExitCode, err = ee.ExitCode(), nil
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			res.ExitCode = 128 + int(ws.Signal())
		}
	}
	if err != nil {
		return res, fmt.Errorf("local runner: %w", err)
	}
	if viaSudo && res.ExitCode == 1 && sudoRefused(res.Stderr) {
		return res, fmt.Errorf("%w: %s", ErrNoSudo, res.Stderr)
	}
	return res, nil
}

func sudoRefused(stderr []byte) bool {
	s := string(stderr)
	return len(s) > 6 && s[:6] == "sudo: "
}

// endGroup ends process group pgid: TERM, then KILL if it is still there
// after killGrace. Through sudo when the group runs as root and the test
// does not.
func endGroup(pgid int, viaSudo bool, waited <-chan error) {
	signal := func(sig syscall.Signal) {
		if viaSudo {
			_ = exec.Command("sudo", "-n", "--", "kill", "-s", sigName(sig), "--", fmt.Sprint(-pgid)).Run()
			return
		}
		_ = syscall.Kill(-pgid, sig)
	}
	signal(syscall.SIGTERM)
	t := time.NewTimer(killGrace)
	defer t.Stop()
	select {
	case <-waited:
		// The shell is gone; its children may not be.
		signal(syscall.SIGKILL)
	case <-t.C:
		signal(syscall.SIGKILL)
		<-waited
	}
}

func sigName(s syscall.Signal) string {
	if s == syscall.SIGKILL {
		return "KILL"
	}
	return "TERM"
}

// budget is what stdout and stderr of one command share.
type budget struct {
	mu    sync.Mutex
	limit int64
	used  int64
	over  chan struct{}
}

type capped struct {
	b   *budget
	buf []byte
}

var errOver = errors.New("output limit reached")

func (c *capped) Write(p []byte) (int, error) {
	b := c.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.limit - b.used; int64(len(p)) > room {
		n := int(max(room, 0))
		c.buf = append(c.buf, p[:n]...)
		b.used += int64(n)
		select {
		case <-b.over:
		default:
			close(b.over)
		}
		// The copy goroutine stops; the command then blocks on a full
		// pipe (or dies of SIGPIPE) until it is ended.
		return n, errOver
	}
	c.buf = append(c.buf, p...)
	b.used += int64(len(p))
	return len(p), nil
}

func (c *capped) bytes() []byte {
	c.b.mu.Lock()
	defer c.b.mu.Unlock()
	return append([]byte(nil), c.buf...)
}

var _ io.Writer = (*capped)(nil)
