package transport

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"nksrun/engine/module"
	"nksrun/engine/shell"
)

// The root shell (Config.RootShell) is one `sudo -n -- sh -s` per
// connection, started by the first sudo command and kept until the
// connection closes. Each sudo command is written to its stdin as
//
//	printf 'NONCE start\n'; printf 'NONCE start\n' >&2
//	sh -c 'COMMAND' </dev/null    (printf %s 'INPUT' | sh -c 'COMMAND')
//	r=$?; printf '\nNONCE %d\n' "$r"; printf '\nNONCE %d\n' "$r" >&2
//
// so it still runs as its own `sh -c` (own $$, own exit status, an `exit`
// or a syntax error ends only it), as root, with the same output caps,
// timeouts and cancelling as a command in a session of its own: a stopped
// command ends the shell's whole process group, shell included, and the
// next sudo command starts a new one. What it saves is a session, a login
// shell and a sudo (PAM, logging) per sudo command after the first: about
// 8 ms of node CPU each (A/B at 200 nodes: 54 against 46 ms per node for an
// apply, whose two execs are its read and its change).
//
// The price is in the node's auth log: sudo logs the shell once per run,
// not each command (`--root-shell=false` keeps one sudo per command).
//
// Each command's output is framed by a NONCE that is random per command,
// so neither a command nor a file it prints can end another's frame.
// Output outside a frame (a background process an earlier command left
// writing) is dropped; on a new shell, what comes before the first start
// marker (sudo's refusal) is the command's, as in a session of its own.

// maxShellInput bounds the stdin a root shell command takes: it travels
// inside the command text, quoted, and the node's shell holds it in memory
// while it runs the command. Larger input, or input with a NUL byte (which
// a shell word cannot hold), goes to a session of its own and is streamed
// as always.
const maxShellInput = 64 << 10

// shellInput reads r to decide whether a root shell command can take it:
// ok with input all of r (nil r: no input). Either way rest gives the
// command's input for a session of its own: what was read, then the
// remainder of r, read errors included.
func shellInput(r io.Reader) (input []byte, ok bool, rest io.Reader) {
	if r == nil {
		return nil, true, nil
	}
	b, err := io.ReadAll(io.LimitReader(r, maxShellInput+1))
	switch {
	case err != nil:
		return nil, false, io.MultiReader(bytes.NewReader(b), errReader{err})
	case len(b) > maxShellInput || bytes.IndexByte(b, 0) >= 0:
		return nil, false, io.MultiReader(bytes.NewReader(b), r)
	}
	return b, true, bytes.NewReader(b)
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// shellCommand is the text written to the root shell for one command. Its
// input, if any, comes from printf, a builtin (no exec, and no temporary
// file as bash makes for a here-document), through a pipe.
func shellCommand(command, nonce string, input []byte, hasInput bool) []byte {
	var b bytes.Buffer
	b.Grow(len(command) + len(input) + 200)
	fmt.Fprintf(&b, "printf '%[1]s\\n'; printf '%[1]s\\n' >&2\n", startMarker(nonce))
	if hasInput {
		b.WriteString("printf %s ")
		b.WriteString(shell.Quote(string(input)))
		b.WriteString(" | sh -c ")
		b.WriteString(shell.Quote(command))
		b.WriteString("\n")
	} else {
		b.WriteString("sh -c ")
		b.WriteString(shell.Quote(command))
		b.WriteString(" </dev/null\n")
	}
	fmt.Fprintf(&b, "r=$?; printf '\\n%[1]s %%d\\n' \"$r\"; printf '\\n%[1]s %%d\\n' \"$r\" >&2\n", nonce)
	return b.Bytes()
}

// startMarker opens a command's frame on both streams: what came before it
// (output of a process an earlier command left behind) is not the
// command's.
func startMarker(nonce string) string { return nonce + " start" }

func newShellNonce() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "nksrun-end-" + hex.EncodeToString(b[:])
}

// wrapShell is the remote command of a root shell session: the group
// wrapper of wrapCommand (so that a stopped command can end the group),
// then `sudo -n -- sh -s`, which reads its commands from the session's
// stdin.
func wrapShell() string {
	w := groupWrapperWith("exec sudo -n -- sh -s")
	return "sh -c " + shell.Quote(w) + " " + shell.Quote(w) + " ''"
}

// rootShell is one connection's root shell session.
//
// Its output is read only while a command runs (pump): an idle shell costs
// no goroutine of its own but the one that waits for its end. (x/crypto
// would copy each stream in a goroutine for the session's whole life: with
// the plan's shell held open until the change, that was about 24 KB per
// node.)
type rootShell struct {
	client     *ssh.Client
	sess       *ssh.Session
	stdin      io.WriteCloser
	outR, errR io.Reader // the session's stdout and stderr
	out, err   *frameSink
	filter     *pgidFilter // takes the wrapper's group id off stderr
	ended      chan struct{}
	waitErr    error // how the session ended; set before ended is closed

	// stdinTurn is taken (a send) while a command's text is written to
	// stdin, and while close sends EOF: x/crypto's channel reads its
	// sent-EOF flag in Write without a lock, so an EOF must never be sent
	// while a write is in flight (a shell that ended before reading its
	// command, a hung node). A channel rather than a mutex so that a
	// graceful close can wait for a write that is just ending, and no
	// longer. eof says EOF was sent; no write follows it.
	stdinTurn chan struct{}
	eof       bool
}

// write sends a command's text to the shell, unless close sent EOF first.
// before, if not nil (Conn.beforeShellWrite, tests only), runs first.
func (sh *rootShell) write(before func(*rootShell), text []byte) {
	if before != nil {
		before(sh)
	}
	sh.stdinTurn <- struct{}{}
	defer func() { <-sh.stdinTurn }()
	if !sh.eof {
		_, _ = sh.stdin.Write(text)
	}
}

func newRootShell(client *ssh.Client, sess *ssh.Session) (*rootShell, error) {
	stdin, err := sess.StdinPipe()
	if err != nil {
		return nil, err
	}
	outR, err := sess.StdoutPipe()
	if err != nil {
		return nil, err
	}
	errR, err := sess.StderrPipe()
	if err != nil {
		return nil, err
	}
	sh := &rootShell{client: client, sess: sess, stdin: stdin, outR: outR, errR: errR, out: &frameSink{}, err: &frameSink{}, ended: make(chan struct{}), stdinTurn: make(chan struct{}, 1)}
	sh.filter = newPgidFilter(sh.err)
	return sh, nil
}

// pump reads one stream of the shell into w until the command's frame on
// it has ended (f), the stream ends, or w refuses more (the output cap:
// not reading on makes the channel's flow control hold the node back).
func pump(r io.Reader, w io.Writer, f *frameSink) {
	buf := make([]byte, 4<<10)
	for !f.idle() {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (sh *rootShell) start() error {
	if err := sh.sess.Start(wrapShell()); err != nil {
		return err
	}
	go func() {
		sh.waitErr = sh.sess.Wait()
		close(sh.ended)
	}()
	return nil
}

func (sh *rootShell) alive() bool {
	select {
	case <-sh.ended:
		return false
	default:
		return true
	}
}

// close ends the shell: EOF on its stdin, then, after waiting up to wait
// for the shell to exit, the channel. The wait matters when the connection
// closes next: sshd does not wait for a session's processes when its
// connection ends, so a shell still exiting would be left to init, its
// sudo unreaped by the sshd that started it.
//
// A command's text still being written (its shell ended or hung before
// reading it) gets no EOF after it: closing the channel ends the shell as
// well, and there is no clean exit to wait for.
func (sh *rootShell) close(wait time.Duration) {
	if sh.takeStdin(wait) {
		sh.eof = true
		sh.stdin.Close()
		<-sh.stdinTurn
		if wait > 0 {
			waitClosed(sh.ended, wait)
		}
	}
	sh.sess.Close()
}

// takeStdin takes the stdin turn, waiting up to d for a write in flight to
// end: after a command that completed, its write may not have let go yet.
func (sh *rootShell) takeStdin(d time.Duration) bool {
	select {
	case sh.stdinTurn <- struct{}{}:
		return true
	default:
	}
	if d <= 0 {
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case sh.stdinTurn <- struct{}{}:
		return true
	case <-t.C:
		return false
	}
}

// waitClosed waits up to d for ch to be closed and says whether it was.
func waitClosed(ch <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
		return false
	}
}

// shellExitWait bounds how long closing a connection waits for its root
// shell to exit: a round trip and the exits of sh and sudo.
const shellExitWait = 2 * time.Second

// runInShell runs a sudo command through the connection's root shell,
// starting one if there is none (or the one there is belongs to a dead
// connection). The caller holds c.shellMu.
func (c *Conn) runInShell(ctx context.Context, command string, opts module.RunOpts, input []byte) (module.RunResult, error) {
	client, err := c.current()
	if err != nil {
		return module.RunResult{}, err
	}
	ctx, cancel, stopped := c.commandContext(ctx, opts)
	defer cancel()
	budget, stdout, stderr := c.outputs(opts)
	nonce := newShellNonce()
	start, marker := []byte(startMarker(nonce)+"\n"), []byte("\n"+nonce+" ")

	c.mu.Lock()
	sh := c.shell
	var stale *rootShell
	if sh != nil && (sh.client != client || !sh.alive()) {
		// Its connection was replaced (a reconnect) or it ended.
		c.shell, sh, stale = nil, nil, sh
	}
	c.mu.Unlock()
	if stale != nil {
		stale.close(0)
	}
	fresh := sh == nil
	var outEnd, errEnd <-chan string
	if fresh {
		sess, client, err := c.openSession(ctx, client, stopped)
		if err != nil {
			return module.RunResult{}, err
		}
		if sh, err = newRootShell(client, sess); err != nil {
			sess.Close()
			return module.RunResult{}, c.wrap(fmt.Errorf("stdin: %w", err))
		}
		// The frames are set up before the shell starts: a refused sudo
		// says so on stderr at once, before any start marker, and that
		// belongs to this command (so does a login shell's greeting, as it
		// would in a session of its own).
		outEnd, errEnd = sh.out.begin(start, true, marker, stdout), sh.err.begin(start, true, marker, stderr)
		if err := sh.start(); err != nil {
			sess.Close()
			return module.RunResult{}, c.wrap(fmt.Errorf("%w: start root shell: %v", ErrConnectionLost, err))
		}
		c.mu.Lock()
		closed := c.closed
		if !closed {
			c.shell = sh
		}
		c.mu.Unlock()
		if closed {
			sh.close(0)
			return module.RunResult{}, c.wrap(ErrClosed)
		}
	} else {
		outEnd, errEnd = sh.out.begin(start, false, marker, stdout), sh.err.begin(start, false, marker, stderr)
	}
	var pumps sync.WaitGroup
	pumps.Go(func() { pump(sh.outR, sh.out, sh.out) })
	pumps.Go(func() { pump(sh.errR, sh.filter, sh.err) })
	pumped := make(chan struct{})
	go func() { pumps.Wait(); close(pumped) }()
	drop := func() {
		c.mu.Lock()
		if c.shell == sh {
			c.shell = nil
		}
		c.mu.Unlock()
		sh.close(0)
	}

	// A hung node stops reading: the write must not hold up the timeout.
	go sh.write(c.beforeShellWrite, shellCommand(command, nonce, input, opts.Stdin != nil))

	var status string
	var stopErr error
	died := false
	for (outEnd != nil || errEnd != nil) && stopErr == nil && !died {
		select {
		case status = <-outEnd:
			outEnd = nil
		case <-errEnd:
			errEnd = nil
		case <-sh.ended:
			// What the shell wrote before it ended may still be on its
			// way to the pumps: they end at the streams' end.
			waitClosed(pumped, shellExitWait)
			select {
			case status = <-outEnd:
				outEnd = nil
			default:
			}
			select {
			case <-errEnd:
				errEnd = nil
			default:
			}
			died = outEnd != nil || errEnd != nil
		case <-ctx.Done():
			stopErr = stopped()
		case <-budget.over:
			stopErr = c.wrap(&module.OutputLimitError{Limit: budget.limit})
		}
	}
	if stopErr != nil {
		// The command runs in the shell's process group: ending the group
		// ends both, and the next sudo command starts a new shell.
		stopErr = c.endRemote(ctx, sh.client, sh.filter, sh.ended, true, stopErr)
		drop()
		return module.RunResult{Stdout: stdout.bytes(), Stderr: stderr.bytes()}, stopErr
	}
	if died {
		// The shell ended before the command's frame did: sudo refused
		// (its message is on stderr), the connection dropped, or the
		// command ended the shell. Its exit is reported as a session's.
		drop() // the streams end: so do the pumps
		if !waitClosed(pumped, shellExitWait) {
			return module.RunResult{Stdout: stdout.bytes(), Stderr: stderr.bytes()}, c.wrap(fmt.Errorf("%w: the root shell ended and its output did not", ErrConnectionLost))
		}
		sh.filter.flush()
		code, lost := exitStatus(sh.waitErr)
		return c.result(budget, stdout, stderr, code, lost, fresh)
	}
	code, err := strconv.Atoi(status)
	if err != nil || code < 0 || code > 255 {
		drop()
		return module.RunResult{Stdout: stdout.bytes(), Stderr: stderr.bytes()}, c.wrap(fmt.Errorf("%w: the root shell sent the exit status %q", ErrConnectionLost, status))
	}
	return c.result(budget, stdout, stderr, code, nil, false)
}

// frameSink is one output stream of the root shell: it passes the current
// command's bytes to its buffer, from the command's start marker (when it
// has one) up to its end marker, and drops whatever comes outside.
type frameSink struct {
	mu     sync.Mutex
	dst    io.Writer // nil between commands
	start  []byte    // the start marker still to be seen; nil once seen
	keep   bool      // pass on what comes before the start marker too
	marker []byte
	held   []byte // a tail of the output that may be a marker's start
	found  bool   // the end marker is seen; the rest of its line follows
	rest   []byte // the marker line after the marker (the exit status)
	end    chan string
}

// maxMarkerRest bounds the rest of a marker line ("255").
const maxMarkerRest = 8

// begin starts the frame of a command whose output goes to dst, after
// its start marker (or, keep, from now on, the start marker taken out) and
// up to its end marker; the channel receives the rest of the end marker's
// line once the frame ends.
func (f *frameSink) begin(start []byte, keep bool, marker []byte, dst io.Writer) <-chan string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dst, f.start, f.keep, f.marker, f.held, f.found, f.rest = dst, start, keep, marker, nil, false, nil
	f.end = make(chan string, 1)
	return f.end
}

// idle says whether no frame is open: the last one ended.
func (f *frameSink) idle() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.dst == nil
}

func (f *frameSink) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.dst == nil {
		return len(p), nil
	}
	if f.found {
		f.markerLine(p)
		return len(p), nil
	}
	data := p
	if len(f.held) > 0 {
		data = append(f.held, p...)
		f.held = nil
	}
	if f.start != nil {
		i := bytes.Index(data, f.start)
		before := data
		if i >= 0 {
			before = data[:i]
		} else if k := partialSuffix(data, f.start); k > 0 {
			before = data[:len(data)-k]
			f.held = append([]byte(nil), data[len(data)-k:]...)
		}
		if f.keep {
			if _, err := f.dst.Write(before); err != nil {
				return 0, err
			}
		}
		if i < 0 {
			return len(p), nil
		}
		data, f.start = data[i+len(f.start):], nil
	}
	if i := bytes.Index(data, f.marker); i >= 0 {
		if _, err := f.dst.Write(data[:i]); err != nil {
			return 0, err
		}
		f.found = true
		f.markerLine(data[i+len(f.marker):])
		return len(p), nil
	}
	k := partialSuffix(data, f.marker)
	if _, err := f.dst.Write(data[:len(data)-k]); err != nil {
		return 0, err
	}
	if k > 0 {
		f.held = append([]byte(nil), data[len(data)-k:]...)
	}
	return len(p), nil
}

// markerLine collects the marker line up to its newline, then ends the
// frame.
func (f *frameSink) markerLine(p []byte) {
	i := bytes.IndexByte(p, '\n')
	line := p
	if i >= 0 {
		line = p[:i]
	}
	f.rest = append(f.rest, line[:min(len(line), maxMarkerRest+1-len(f.rest))]...)
	if i < 0 && len(f.rest) <= maxMarkerRest {
		return // the line goes on in the next write
	}
	// Longer than any exit status: malformed, and Atoi says so.
	f.end <- string(f.rest)
	f.dst = nil
}

// partialSuffix is the length of the longest end of data that is the start
// of marker (and not all of it).
func partialSuffix(data, marker []byte) int {
	for k := min(len(marker)-1, len(data)); k > 0; k-- {
		if bytes.HasSuffix(data, marker[:k]) {
			return k
		}
	}
	return 0
}

// exitStatus is a session's exit code, or the error of a session that
// ended without one.
func exitStatus(waitErr error) (int, error) {
	var exitErr *ssh.ExitError
	switch {
	case waitErr == nil:
		return 0, nil
	case errors.As(waitErr, &exitErr):
		return exitErr.ExitStatus(), nil
	}
	return 0, waitErr
}
