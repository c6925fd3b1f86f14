package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"nksrun/engine/module"
	"nksrun/engine/shell"
)

var (
	_ module.Runner      = (*Conn)(nil)
	_ module.Reconnector = (*Conn)(nil)
)

// Conn is the run-long connection to one node. Run may be called
// concurrently; at most Config.MaxSessions sessions are open at once.
type Conn struct {
	d    *Dialer
	host Host
	addr string
	sem  chan struct{}
	// killSem bounds the extra sessions that end stopped commands, so they
	// stay within sshd's MaxSessions (10) next to the MaxSessions (8) of
	// Run: two spare channels.
	killSem chan struct{}

	mu     sync.Mutex
	client *ssh.Client // nil while reconnecting
	closed bool
	// shell is the root shell (Config.RootShell), nil until the first sudo
	// command and after it ended; guarded by mu. shellMu is held by the
	// one command using it.
	shell   *rootShell
	shellMu sync.Mutex
	// redialMu serialises redials of a connection found dead by Run.
	redialMu sync.Mutex

	// beforeShellWrite, set by tests only (before the first Run), runs in
	// the goroutine that writes a command to the root shell, before it
	// writes: a test holds the write back until the shell has ended.
	beforeShellWrite func(*rootShell)
}

// Host returns the node this Conn talks to, with defaults filled in.
func (c *Conn) Host() Host { return c.host }

func (c *Conn) wrap(err error) error { return &Error{Node: c.host.Name, Addr: c.addr, Err: err} }

// Close closes the connection; later Runs fail with ErrClosed. A root
// shell is ended first, waiting (boundedly) for it to exit.
func (c *Conn) Close() error {
	c.mu.Lock()
	cl, sh := c.client, c.shell
	c.client, c.shell, c.closed = nil, nil, true
	c.mu.Unlock()
	if sh != nil {
		sh.close(shellExitWait)
	}
	if cl != nil {
		return c.d.closeClient(cl)
	}
	return nil
}

// Reconnect drops the connection and dials again until it succeeds or ctx
// ends (the reboot module's wait for a node to come back). Host key
// failures end it at once: a node that comes back with another key is
// exactly what must not be trusted.
func (c *Conn) Reconnect(ctx context.Context) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return c.wrap(ErrClosed)
	}
	old := c.client
	c.client = nil
	c.mu.Unlock()
	if old != nil {
		c.d.closeClient(old)
	}

	backoff := 250 * time.Millisecond
	var last error // the last failure that was not caused by ctx ending
	for {
		client, err := c.d.connect(ctx, c.host, c.addr, 1, false)
		if err == nil {
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.closed {
				c.d.closeClient(client)
				return c.wrap(ErrClosed)
			}
			c.client = client
			return nil
		}
		if errors.Is(err, ErrHostKeyChanged) || errors.Is(err, ErrHostKeyUnknown) || errors.Is(err, ErrHostKeyRevoked) {
			return err
		}
		if ctx.Err() == nil {
			var e *Error
			if errors.As(err, &e) {
				err = e.Err
			}
			last = err
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
			case <-t.C:
			}
			backoff = min(2*backoff, 5*time.Second)
		}
		if ctx.Err() != nil {
			if last == nil {
				return c.wrap(fmt.Errorf("reconnect gave up: %w", context.Cause(ctx)))
			}
			return c.wrap(fmt.Errorf("reconnect gave up: %w (last attempt: %v)", context.Cause(ctx), last))
		}
	}
}

// redial replaces a dead client with one new connection (one attempt, under
// the dial and handshake limits). Concurrent callers that saw the same dead
// client share the new one.
func (c *Conn) redial(ctx context.Context, dead *ssh.Client) (*ssh.Client, error) {
	c.redialMu.Lock()
	defer c.redialMu.Unlock()
	c.mu.Lock()
	cur, closed := c.client, c.closed
	c.mu.Unlock()
	if closed {
		return nil, c.wrap(ErrClosed)
	}
	if cur != nil && cur != dead {
		return cur, nil
	}
	c.d.closeClient(dead)
	client, err := c.d.connect(ctx, c.host, c.addr, 1, false)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		c.d.closeClient(client)
		return nil, c.wrap(ErrClosed)
	}
	c.client = client
	return client, nil
}

// Run runs command through `sh -c` on the node (as root through `sudo -n`
// when opts.Sudo), streaming opts.Stdin to it. A non-zero exit is returned
// in RunResult.ExitCode, not as an error. Errors are *Error wrapping
// ErrCommandTimeout, the context's error, ErrConnectionLost, ErrClosed,
// ErrSudoPassword or ErrSudoTTY.
//
// With Config.RootShell, a sudo command goes through the connection's root
// shell when it is free (see rootshell.go), else through a session of its
// own, as every command does without it.
func (c *Conn) Run(ctx context.Context, command string, opts module.RunOpts) (module.RunResult, error) {
	if c.d.rootShell() && opts.Sudo && opts.UserScript == "" {
		input, ok, stdin := shellInput(opts.Stdin)
		if ok && c.shellMu.TryLock() {
			defer c.shellMu.Unlock()
			return c.runInShell(ctx, command, opts, input)
		}
		opts.Stdin = stdin // what was read to decide, then the rest
	}
	// Waiting for a session slot is not charged to the command's timeout,
	// only to the caller's context.
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return module.RunResult{}, c.wrap(fmt.Errorf("command canceled before it started: %w", context.Cause(ctx)))
	}
	defer func() { <-c.sem }()

	client, err := c.current()
	if err != nil {
		return module.RunResult{}, err
	}
	ctx, cancel, stopped := c.commandContext(ctx, opts)
	defer cancel()
	sess, client, err := c.openSession(ctx, client, stopped)
	if err != nil {
		return module.RunResult{}, err
	}
	defer sess.Close()

	budget, stdout, stderr := c.outputs(opts)
	errFilter := newPgidFilter(stderr)
	sess.Stdout, sess.Stderr = stdout, errFilter
	var stdin *stdinCopy
	if opts.Stdin != nil {
		pipe, err := sess.StdinPipe()
		if err != nil {
			return module.RunResult{}, c.wrap(fmt.Errorf("stdin: %w", err))
		}
		stdin = &stdinCopy{src: opts.Stdin, dst: pipe, done: make(chan struct{})}
	}
	// No pty: a prompt (sudo, ssh host keys of a nested ssh) reads EOF and
	// fails instead of waiting forever.
	if err := sess.Start(wrapCommand(command, opts.Sudo, opts.UserScript)); err != nil {
		return module.RunResult{}, c.wrap(fmt.Errorf("%w: start command: %v", ErrConnectionLost, err))
	}
	if stdin != nil {
		go stdin.run()
	}

	waited := make(chan error, 1)
	ended := make(chan struct{})
	go func() { waited <- sess.Wait(); close(ended) }()
	var stopErr error
	select {
	case err = <-waited:
	case <-ctx.Done():
		stopErr = stopped()
	case <-budget.over:
		stopErr = c.wrap(&module.OutputLimitError{Limit: budget.limit})
	}
	if stopErr != nil {
		// Closing the session is not enough: sshd does not signal a command
		// whose channel closed, and a signal request reaches only the
		// session's first process, which under sudo belongs to root. So the
		// command's process group is ended from a second session.
		stopErr = c.endRemote(ctx, client, errFilter, ended, opts.Sudo, stopErr)
		sess.Close()
		return module.RunResult{Stdout: stdout.bytes(), Stderr: stderr.bytes()}, stopErr
	}
	errFilter.flush()
	code, lost := exitStatus(err)
	res, err := c.result(budget, stdout, stderr, code, lost, opts.Sudo)
	if err == nil && stdin != nil {
		if rerr := stdin.readError(); rerr != nil {
			return res, c.wrap(fmt.Errorf("reading stdin for the command: %w", rerr))
		}
	}
	return res, err
}

// current is the connection's client, or why there is none.
func (c *Conn) current() (*ssh.Client, error) {
	c.mu.Lock()
	client, closed := c.client, c.closed
	c.mu.Unlock()
	switch {
	case closed:
		return nil, c.wrap(ErrClosed)
	case client == nil:
		return nil, c.wrap(fmt.Errorf("%w: reconnect in progress", ErrConnectionLost))
	}
	return client, nil
}

// commandContext is ctx limited by the command's timeout, and stopped, the
// error for a command that ctx ended.
func (c *Conn) commandContext(ctx context.Context, opts module.RunOpts) (context.Context, context.CancelFunc, func() error) {
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = c.d.cfg.CommandTimeout
	}
	errTimeout := fmt.Errorf("%w after %v", ErrCommandTimeout, timeout)
	ctx, cancel := context.WithTimeoutCause(ctx, timeout, errTimeout)
	stopped := func() error {
		cause := context.Cause(ctx)
		if errors.Is(cause, ErrCommandTimeout) {
			return c.wrap(cause)
		}
		return c.wrap(fmt.Errorf("command canceled: %w", cause))
	}
	return ctx, cancel, stopped
}

// openSession opens a session on client. When the connection turns out dead
// before anything ran, it dials once more and opens the session there; the
// client returned is the one the session is on.
func (c *Conn) openSession(ctx context.Context, client *ssh.Client, stopped func() error) (*ssh.Session, *ssh.Client, error) {
	sess, err := newSession(ctx, client)
	if err != nil && ctx.Err() == nil {
		// The connection died before the command started (the node was
		// rebooted by another nksrun process, or an idle connection was
		// dropped): nothing ran, so one fresh connection and one more try
		// are safe, even for commands that are not idempotent.
		fresh, rerr := c.redial(ctx, client)
		if rerr != nil {
			var e *Error
			if errors.As(rerr, &e) {
				rerr = e.Err
			}
			return nil, nil, c.wrap(fmt.Errorf("%w (%v), and reconnecting failed: %w", ErrConnectionLost, err, rerr))
		}
		client = fresh // the clean-up session of a stopped command goes here too
		sess, err = newSession(ctx, fresh)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, stopped()
		}
		return nil, nil, c.wrap(fmt.Errorf("%w: open session: %v", ErrConnectionLost, err))
	}
	return sess, client, nil
}

// outputs are a command's output budget and its two capped streams.
func (c *Conn) outputs(opts module.RunOpts) (*outputCap, *cappedBuffer, *cappedBuffer) {
	limit := opts.MaxOutput
	if limit <= 0 {
		limit = c.d.cfg.MaxOutput
	}
	budget := newOutputCap(limit)
	return budget, &cappedBuffer{c: budget}, &cappedBuffer{c: budget}
}

// result is a finished command's result: its exit code, or lost, why its
// session ended without one. sudo: the command ran through sudo just now,
// so that sudo's refusal is told apart from the command's exit 1.
func (c *Conn) result(budget *outputCap, stdout, stderr *cappedBuffer, code int, lost error, sudo bool) (module.RunResult, error) {
	select {
	case <-budget.over:
		// The command exited just as it went over: nothing left to end.
		return module.RunResult{Stdout: stdout.bytes(), Stderr: stderr.bytes()}, c.wrap(&module.OutputLimitError{Limit: budget.limit})
	default:
	}
	res := module.RunResult{Stdout: stdout.final(), Stderr: stderr.final(), ExitCode: code}
	if lost != nil {
		// ExitMissingError, EOF: the channel ended without an exit status.
		return res, c.wrap(fmt.Errorf("%w while running command: %v", ErrConnectionLost, lost))
	}
	if sudo && res.ExitCode == 1 {
		if m := sudoFailure.FindSubmatch(res.Stderr); m != nil {
			if len(m[2]) > 0 {
				return res, c.wrap(ErrSudoTTY)
			}
			return res, c.wrap(ErrSudoPassword)
		}
	}
	return res, nil
}

// sudoFailure matches what `sudo -n` prints when it would have to prompt
// (group 1) or when sudoers has requiretty (group 2). It is anchored at the
// start of stderr: sudo fails before the command runs, so its line is first.
var sudoFailure = regexp.MustCompile(`^\s*sudo: (a password is required|a terminal is required|no tty present)|^\s*sudo: (sorry, you must have a tty)`)

// newSession opens a session, giving up when ctx ends: opening a channel
// waits for the peer's answer, which a hung node never sends.
func newSession(ctx context.Context, client *ssh.Client) (*ssh.Session, error) {
	type result struct {
		s   *ssh.Session
		err error
	}
	ch := make(chan result, 1)
	go func() {
		s, err := client.NewSession()
		ch <- result{s, err}
	}()
	select {
	case r := <-ch:
		return r.s, r.err
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.s != nil {
				r.s.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

// stdinCopy streams the caller's reader to the session and then closes the
// session's stdin (EOF for the command). Write errors are ignored: they
// only mean the command exited without reading everything, which its exit
// status already tells. Read errors are reported: the command saw a
// truncated input.
type stdinCopy struct {
	src  io.Reader
	dst  io.WriteCloser
	err  error
	done chan struct{}
}

func (s *stdinCopy) run() {
	_, _ = io.Copy(s.dst, readerOnly{s.src, &s.err})
	// s.err is set before Close, and the command sees EOF only after Close,
	// so a command that read to EOF and exited finds s.err settled.
	close(s.done)
	s.dst.Close()
}

func (s *stdinCopy) readError() error {
	select {
	case <-s.done:
		return s.err
	default:
		// The command exited before all of stdin was sent.
		return nil
	}
}

// readerOnly records read errors (other than EOF) of the wrapped reader.
type readerOnly struct {
	r   io.Reader
	err *error
}

func (r readerOnly) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		*r.err = err
	}
	return n, err
}

// wrapCommand makes the remote command string. The command always runs
// under `sh -c`, so its syntax is POSIX sh whatever the user's login shell
// is; with sudo it becomes `sudo -n -- sh -c '...'` (-n: fail instead of
// prompting).
//
// Around it, a small wrapper run as the login user reports the process
// group the command will run in, on the first line of stderr (pgidMarker;
// Run takes it off again), so that Run can end the whole group when the
// command is cancelled, times out or prints too much. It reports only a
// group it leads itself: sshd makes each session's first process a session
// and group leader (setsid), so that group holds exactly this command's
// processes, sudo and the root command under it included (sudo without a
// terminal keeps its command in its own group, as job control needs). The
// wrapper then execs sudo or sh in place, keeping its pid and so the group.
// Should it not lead its group (a server that does not setsid), it first
// makes one with `setsid` rather than report a group shared with others;
// without /proc or setsid the command runs all the same, unreported.
//
// A user script (RunOpts.UserScript) runs in the wrapper itself, as the
// login user, in a subshell with no stdin, before the exec: same group,
// same session, no sudo.
func wrapCommand(command string, sudo bool, userScript string) string {
	run := `exec sh -c "$1"`
	if sudo {
		run = `exec sudo -n -- sh -c "$1"`
	}
	if userScript == "" {
		w := groupWrapperWith(run)
		return "sh -c " + shell.Quote(w) + " " + shell.Quote(w) + " " + shell.Quote(command)
	}
	w := groupWrapperWith(`( eval "$3" ) </dev/null; ` + run)
	w = strings.Replace(w, `"$1" again;`, `"$1" again "$3";`, 1)
	return "sh -c " + shell.Quote(w) + " " + shell.Quote(w) + " " + shell.Quote(command) + " '' " + shell.Quote(userScript)
}

// groupWrapper is run as `sh -c W W CMD` ($0 is W itself, so that it can
// re-run itself under setsid; $2 marks that second run). RUN is replaced
// by the exec of the command.
const groupWrapper = `g=; read -r _ _ _ _ g _ </proc/$$/stat 2>/dev/null
if [ "$g" = "$$" ]; then printf '` + pgidMarker + `%s\n' "$g" >&2; RUN; fi
if [ -n "$g" ] && [ -z "$2" ] && command -v setsid >/dev/null 2>&1; then exec setsid sh -c "$0" "$0" "$1" again; fi
RUN`

// groupWrapperWith is groupWrapper running run.
func groupWrapperWith(run string) string { return strings.ReplaceAll(groupWrapper, "RUN", run) }

// killGroupCommand ends process group g: TERM, up to 2 s for it to go, then
// KILL. It runs as the user the command ran as (root through sudo). It says
// "sent" as soon as TERM went out and then goes on detached from its
// session's output, so Run need not wait for the KILL: sshd does not end a
// command whose channel closed, which here is what makes the KILL happen
// even if nksrun exits right after. (Zombies that the node's init has not
// reaped yet count as members for `kill -0`; they only cost the 2 s wait.)
func killGroupCommand(g int, sudo bool) string {
	s := fmt.Sprintf(`kill -s TERM -- -%[1]d 2>/dev/null || { echo gone; exit 0; }
echo sent; exec >/dev/null 2>&1 </dev/null
i=0; while [ $i -lt 20 ] && kill -s 0 -- -%[1]d; do sleep 0.1; i=$((i+1)); done
kill -s KILL -- -%[1]d; exit 0`, g)
	if sudo {
		return "sudo -n -- sh -c " + shell.Quote(s)
	}
	return "sh -c " + shell.Quote(s)
}

// endRemote ends a stopped command's process group on the node through a
// second session on the same connection. It waits (boundedly) for the
// group id if the wrapper has not reported it yet; a command whose session
// already ended without one had nothing left to end. It returns stopErr,
// with why ending the command failed if it did.
func (c *Conn) endRemote(ctx context.Context, client *ssh.Client, f *pgidFilter, ended <-chan struct{}, sudo bool, stopErr error) error {
	if err := c.killGroup(ctx, client, f, ended, sudo); err != nil {
		return fmt.Errorf("%w (and ending the command on the node failed: %v)", stopErr, err)
	}
	return stopErr
}

func (c *Conn) killGroup(ctx context.Context, client *ssh.Client, f *pgidFilter, ended <-chan struct{}, sudo bool) error {
	// The caller's context is over (or about to be): the clean-up gets its
	// own short deadline so Ctrl-C still returns within seconds.
	kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), killTimeout)
	defer cancel()
	var g int
	select {
	case g = <-f.pgid:
	case <-ended:
		select {
		case g = <-f.pgid:
		default:
			return nil
		}
	case <-f.none:
		return errors.New("the command did not report its process group (no /proc or setsid on the node?)")
	case <-kctx.Done():
		return errors.New("the command never reported its process group")
	}
	select {
	case c.killSem <- struct{}{}:
		defer func() { <-c.killSem }()
	case <-kctx.Done():
		return fmt.Errorf("no session free to end process group %d", g)
	}
	cmd := killGroupCommand(g, sudo)
	for backoff := 50 * time.Millisecond; ; backoff = min(2*backoff, time.Second) {
		sess, err := newSession(kctx, client)
		if err == nil {
			return runKill(kctx, sess, cmd, g)
		}
		// sshd refuses a session while MaxSessions are open (the stopped
		// command's own session may linger until its processes end):
		// retry until the deadline.
		var oce *ssh.OpenChannelError
		if !errors.As(err, &oce) {
			return fmt.Errorf("open a session to end process group %d: %v", g, err)
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-kctx.Done():
			t.Stop()
			return fmt.Errorf("open a session to end process group %d: %v", g, err)
		}
	}
}

// runKill runs the kill command and returns once it reports that TERM was
// sent (or that the group was already gone).
func runKill(ctx context.Context, sess *ssh.Session, cmd string, g int) error {
	defer sess.Close()
	said := &firstLine{line: make(chan string, 1)}
	var stderr cappedBuffer
	stderr.c = newOutputCap(4 << 10)
	sess.Stdout, sess.Stderr = said, &stderr
	if err := sess.Start(cmd); err != nil {
		return fmt.Errorf("kill process group %d: %v", g, err)
	}
	done := make(chan error, 1)
	go func() { done <- sess.Wait() }()
	select {
	case l := <-said.line:
		if l == "sent" || l == "gone" {
			return nil
		}
		return fmt.Errorf("kill process group %d: unexpected answer %q", g, l)
	case err := <-done:
		select {
		case l := <-said.line:
			if l == "sent" || l == "gone" {
				return nil
			}
		default:
		}
		return fmt.Errorf("kill process group %d: %v: %s", g, err, strings.TrimSpace(string(stderr.bytes())))
	case <-ctx.Done():
		return fmt.Errorf("kill process group %d: no answer within %v", g, killTimeout)
	}
}

// firstLine hands on the first line written to it.
type firstLine struct {
	buf  []byte
	sent bool
	line chan string
}

func (f *firstLine) Write(p []byte) (int, error) {
	if !f.sent {
		f.buf = append(f.buf, p...)
		if i := strings.IndexByte(string(f.buf), '\n'); i >= 0 {
			f.sent = true
			f.line <- string(f.buf[:i])
		} else if len(f.buf) > 256 {
			f.sent = true
			f.line <- string(f.buf)
		}
	}
	return len(p), nil
}

// killTimeout bounds ending a stopped command on the node.
const killTimeout = 15 * time.Second
