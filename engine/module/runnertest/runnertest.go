// Package runnertest is the conformance suite every module.Runner passes:
// the SSH transport on real sshd nodes and the local runner of moduletest
// run the same tests (in the spirit of litestream's replica client suite),
// so modules and the engine can rely on one behaviour whatever runs their
// commands.
//
// What a Runner promises (module.Runner's contract, made testable):
//   - a command's exit code is data (RunResult.ExitCode), never an error;
//     a command killed by signal n exits 128+n, as a shell reports it;
//   - stdout and stderr are kept apart and intact (nothing added);
//   - RunOpts.Stdin is streamed to the command, byte for byte, which sees
//     EOF after it;
//   - RunOpts.Sudo runs the command as root, or fails: never silently as
//     someone else;
//   - RunOpts.UserScript runs first, as the login user (whoever a command
//     without Sudo runs as), with no stdin; its stdout precedes the
//     command's and neither its exit status nor an `exit` in it changes
//     what the command does;
//   - a command past its timeout (RunOpts.Timeout) fails with an error
//     matching module.ErrCommandTimeout, and a cancelled context with one
//     matching context.Canceled; in both cases the command's processes are
//     ended, not left running;
//   - output over the cap (RunOpts.MaxOutput, default module.DefaultMaxOutput)
//     fails with *module.OutputLimitError, keeps at most the cap in memory
//     and ends the command; output up to the cap comes back byte for byte.
package runnertest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"nksrun/engine/module"
)

// Capability describes a runner that differs from the full contract in a
// documented way.
type Capability int

const (
	// NoSudo: the runner cannot become root (the local runner when the test
	// does not run as root and has no passwordless sudo). RunOpts.Sudo must
	// then fail with an error and run nothing.
	NoSudo Capability = iota + 1
)

// Run runs the suite. newRunner is called once per subtest; the runner it
// returns must be usable for the whole subtest (the suite runs a few
// commands concurrently on it). The suite needs a POSIX sh with coreutils
// (head, sha256sum, mktemp, sleep) and Linux /proc where the commands run.
func Run(t *testing.T, newRunner func(t *testing.T) module.Runner, caps ...Capability) {
	s := suite{newRunner: newRunner}
	for _, c := range caps {
		if c == NoSudo {
			s.noSudo = true
		}
	}
	t.Run("exit codes are data", s.exitCodes)
	t.Run("stdout and stderr kept apart", s.streams)
	t.Run("stdin streamed", s.stdin)
	t.Run("sudo", s.sudo)
	t.Run("user script first", s.userScript)
	t.Run("concurrent runs", s.concurrent)
	t.Run("timeout ends the command", func(t *testing.T) { s.stopped(t, "timeout") })
	t.Run("cancel ends the command", func(t *testing.T) { s.stopped(t, "cancel") })
	t.Run("output cap", s.outputCap)
	t.Run("large output intact", s.largeOutput)
}

type suite struct {
	newRunner func(t *testing.T) module.Runner
	noSudo    bool
}

// bound is how long any single expectation may take before the suite calls
// the runner broken; generous, since machines differ tenfold.
const bound = 60 * time.Second

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*bound)
	t.Cleanup(cancel)
	return ctx
}

func run(t *testing.T, ctx context.Context, r module.Runner, cmd string, opts module.RunOpts) module.RunResult {
	t.Helper()
	res, err := r.Run(ctx, cmd, opts)
	if err != nil {
		t.Fatalf("%q (sudo=%v): %v (stderr %q)", cmd, opts.Sudo, err, clip(res.Stderr))
	}
	return res
}

func clip(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "…"
	}
	return string(b)
}

// scratch makes a directory where the commands run (removed afterwards).
func scratch(t *testing.T, ctx context.Context, r module.Runner, sudo bool) string {
	t.Helper()
	res := run(t, ctx, r, "mktemp -d /tmp/nksrun-runnertest.XXXXXX", module.RunOpts{})
	dir := strings.TrimSpace(string(res.Stdout))
	if !strings.HasPrefix(dir, "/tmp/nksrun-runnertest.") {
		t.Fatalf("mktemp said %q", res.Stdout)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), bound)
		defer cancel()
		if _, err := r.Run(ctx, "rm -rf "+dir, module.RunOpts{Sudo: sudo}); err != nil {
			t.Errorf("clean up %s: %v", dir, err)
		}
	})
	return dir
}

func (s suite) exitCodes(t *testing.T) {
	r := s.newRunner(t)
	ctx := testContext(t)
	for _, sudo := range s.sudoModes() {
		for _, tc := range []struct {
			cmd  string
			want int
		}{
			{"true", 0},
			{"exit 3", 3},
			{"false", 1},
			{"exit 255", 255},
			{"sh -c 'exit 7'", 7},
			{"kill -s TERM $$", 143}, // 128 + SIGTERM
			{"kill -s KILL $$", 137},
			{"nksrun-no-such-command-xyz", 127},
		} {
			res, err := r.Run(ctx, tc.cmd, module.RunOpts{Sudo: sudo})
			if err != nil || res.ExitCode != tc.want {
				t.Errorf("%q (sudo=%v): exit %d, err %v; want exit %d and no error", tc.cmd, sudo, res.ExitCode, err, tc.want)
			}
		}
	}
}

func (s suite) sudoModes() []bool {
	if s.noSudo {
		return []bool{false}
	}
	return []bool{false, true}
}

func (s suite) streams(t *testing.T) {
	r := s.newRunner(t)
	ctx := testContext(t)
	for _, sudo := range s.sudoModes() {
		res := run(t, ctx, r, "printf out; printf err >&2; printf ' more'; echo ' end' >&2; exit 4", module.RunOpts{Sudo: sudo})
		if string(res.Stdout) != "out more" || string(res.Stderr) != "err end\n" || res.ExitCode != 4 {
			t.Errorf("sudo=%v: stdout %q stderr %q exit %d", sudo, res.Stdout, res.Stderr, res.ExitCode)
		}
		res = run(t, ctx, r, "true", module.RunOpts{Sudo: sudo})
		if len(res.Stdout) != 0 || len(res.Stderr) != 0 {
			t.Errorf("sudo=%v: a silent command gave stdout %q stderr %q", sudo, res.Stdout, res.Stderr)
		}
		// Bytes that are not text come back as they are.
		res = run(t, ctx, r, `printf '\000\001\377\r\n'; printf '\033[2J' >&2`, module.RunOpts{Sudo: sudo})
		if !bytes.Equal(res.Stdout, []byte{0, 1, 0xff, '\r', '\n'}) || string(res.Stderr) != "\x1b[2J" {
			t.Errorf("sudo=%v: binary stdout %q stderr %q", sudo, res.Stdout, res.Stderr)
		}
	}
}

// genReader produces n pseudo-random bytes without holding them, so the
// runner must stream stdin (a runner that buffered it would still pass, but
// the test does not need the memory).
type genReader struct {
	n   int64
	rng *rand.ChaCha8
}

func (g *genReader) Read(p []byte) (int, error) {
	if g.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > g.n {
		p = p[:g.n]
	}
	g.rng.Read(p)
	g.n -= int64(len(p))
	return len(p), nil
}

func (s suite) stdin(t *testing.T) {
	r := s.newRunner(t)
	ctx := testContext(t)
	const size = 24 << 20
	seed := [32]byte{1, 2, 3}
	h := sha256.New()
	io.Copy(h, &genReader{n: size, rng: rand.NewChaCha8(seed)})
	want := fmt.Sprintf("%x", h.Sum(nil))
	for _, sudo := range s.sudoModes() {
		res := run(t, ctx, r, "sha256sum; echo done >&2", module.RunOpts{Sudo: sudo, Stdin: &genReader{n: size, rng: rand.NewChaCha8(seed)}})
		if got, _, _ := strings.Cut(string(res.Stdout), " "); got != want || string(res.Stderr) != "done\n" {
			t.Errorf("sudo=%v: 24 MiB of stdin hashed to %q (stderr %q), want %s", sudo, res.Stdout, res.Stderr, want)
		}
	}
	// Text as a config file holds it, byte for byte: shell syntax, quotes,
	// a here-document's usual delimiter, CR, bytes that are not UTF-8 and
	// bytes sh uses internally (dash marks quoting with 0x81-0x88).
	text := "EOF\n$HOME `id` $(id) 'q' \"d\" \\\n\r\n\xff\x81\x82\x83\x84\x85\x86\x87\x88\n한글\n\tNKSRUN_EOF_\n"
	for _, sudo := range s.sudoModes() {
		res := run(t, ctx, r, "cat; echo end", module.RunOpts{Sudo: sudo, Stdin: strings.NewReader(text)})
		if string(res.Stdout) != text+"end\n" {
			t.Errorf("sudo=%v: text input came back as %q", sudo, res.Stdout)
		}
	}
	// A command that reads only part of its input, or none, still finishes.
	res := run(t, ctx, r, "head -c 5", module.RunOpts{Stdin: &genReader{n: 64 << 20, rng: rand.NewChaCha8(seed)}})
	if len(res.Stdout) != 5 {
		t.Errorf("head -c 5 of stdin: %d bytes", len(res.Stdout))
	}
	res = run(t, ctx, r, "exit 0", module.RunOpts{Stdin: &genReader{n: 64 << 20, rng: rand.NewChaCha8(seed)}})
	if res.ExitCode != 0 {
		t.Errorf("command ignoring stdin: exit %d", res.ExitCode)
	}
	// Without Stdin the command reads EOF at once.
	res = run(t, ctx, r, "wc -c", module.RunOpts{})
	if strings.TrimSpace(string(res.Stdout)) != "0" {
		t.Errorf("no stdin: wc -c said %q", res.Stdout)
	}
}

// concurrent: the engine runs several commands on one runner at once
// (probes, apply steps); each gets its own result.
func (s suite) concurrent(t *testing.T) {
	r := s.newRunner(t)
	ctx := testContext(t)
	const n = 16
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sudo := i%2 == 1 && !s.noSudo
			res, err := r.Run(ctx, fmt.Sprintf("sleep 0.2; echo out-%d; echo err-%d >&2; exit %d", i, i, i), module.RunOpts{Sudo: sudo, Stdin: strings.NewReader("x")})
			if err != nil || string(res.Stdout) != fmt.Sprintf("out-%d\n", i) || string(res.Stderr) != fmt.Sprintf("err-%d\n", i) || res.ExitCode != i {
				t.Errorf("run %d (sudo=%v): %q %q exit %d err %v", i, sudo, res.Stdout, res.Stderr, res.ExitCode, err)
			}
		}()
	}
	wg.Wait()
}

func (s suite) sudo(t *testing.T) {
	r := s.newRunner(t)
	ctx := testContext(t)
	if s.noSudo {
		dir := scratch(t, ctx, r, false)
		res, err := r.Run(ctx, "touch "+dir+"/ran", module.RunOpts{Sudo: true})
		if err == nil {
			t.Fatalf("a runner without sudo ran a sudo command: %+v", res)
		}
		res = run(t, ctx, r, "ls "+dir, module.RunOpts{})
		if len(res.Stdout) != 0 {
			t.Fatalf("the refused sudo command ran anyway: %q", res.Stdout)
		}
		return
	}
	res := run(t, ctx, r, "id -u", module.RunOpts{Sudo: true})
	if strings.TrimSpace(string(res.Stdout)) != "0" {
		t.Fatalf("sudo id -u = %q, want 0", res.Stdout)
	}
	// Sudo and stdin together: what a file install does.
	res = run(t, ctx, r, "cat; id -u >&2", module.RunOpts{Sudo: true, Stdin: strings.NewReader("payload")})
	if string(res.Stdout) != "payload" || strings.TrimSpace(string(res.Stderr)) != "0" {
		t.Fatalf("sudo with stdin: %q %q", res.Stdout, res.Stderr)
	}
}

func (s suite) userScript(t *testing.T) {
	r := s.newRunner(t)
	ctx := testContext(t)
	login := strings.TrimSpace(string(run(t, ctx, r, "id -u", module.RunOpts{}).Stdout))
	root := !s.noSudo
	cmdUID := login
	if root {
		cmdUID = "0"
	}
	res := run(t, ctx, r, "cat; id -u", module.RunOpts{
		Sudo:       root,
		Stdin:      strings.NewReader("payload\n"),
		UserScript: "cat; id -u; echo 'it'\"'\"'s the user'; exit 7",
	})
	want := login + "\nit's the user\npayload\n" + cmdUID + "\n"
	if string(res.Stdout) != want || res.ExitCode != 0 {
		t.Fatalf("user script then command: stdout %q exit %d, want %q exit 0", res.Stdout, res.ExitCode, want)
	}
}

// stopped runs `sleep 60; touch MARKER` (as root where the runner can) and
// stops it by a timeout or by cancelling the context; the command's
// processes must be gone within bounded time and the marker never appear.
func (s suite) stopped(t *testing.T, how string) {
	r := s.newRunner(t)
	ctx := testContext(t)
	sudo := !s.noSudo
	dir := scratch(t, ctx, r, sudo)
	pids, marker := dir+"/pids", dir+"/marker"
	// The sleep runs in the background only so that its pid can be
	// recorded; it belongs to the command like any child.
	cmd := fmt.Sprintf("sleep 60 & echo $$ $! > %s.tmp && mv %s.tmp %s; wait; touch %s", pids, pids, pids, marker)

	var err error
	start := time.Now()
	switch how {
	case "timeout":
		_, err = r.Run(ctx, cmd, module.RunOpts{Sudo: sudo, Timeout: 5 * time.Second})
		if !errors.Is(err, module.ErrCommandTimeout) {
			t.Fatalf("err = %v, want module.ErrCommandTimeout", err)
		}
	case "cancel":
		rctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cancel()
			waitFor(t, ctx, r, "test -s "+pids, "the command to start")
		}()
		_, err = r.Run(rctx, cmd, module.RunOpts{Sudo: sudo})
		wg.Wait()
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	}
	if took := time.Since(start); took > 50*time.Second {
		t.Fatalf("Run returned after %v: the command was not stopped", took)
	}
	res := run(t, ctx, r, "cat "+pids+" 2>/dev/null || true", module.RunOpts{})
	ids := strings.Fields(string(res.Stdout))
	if len(ids) == 0 && how == "timeout" {
		// On a very busy machine sudo alone can take longer than the
		// timeout: then the command must never start at all.
		time.Sleep(3 * time.Second)
		res = run(t, ctx, r, "cat "+pids+" "+marker+" 2>/dev/null || true", module.RunOpts{})
		if len(res.Stdout) != 0 {
			t.Fatalf("the command started after its timeout: %q", res.Stdout)
		}
		t.Log("the timeout came before the command started; it never did")
		return
	}
	if len(ids) != 2 {
		t.Fatalf("pids file %q", res.Stdout)
	}
	waitFor(t, ctx, r, aliveCheck(ids), "the command's processes "+strings.Join(ids, ", ")+" to end")
	res = run(t, ctx, r, "test -e "+marker+" && echo present || echo absent", module.RunOpts{})
	if strings.TrimSpace(string(res.Stdout)) != "absent" {
		t.Fatal("the stopped command went on and created its marker")
	}
}

// aliveCheck succeeds when none of the pids is a live process (a zombie
// waiting for its parent to reap it counts as ended).
func aliveCheck(pids []string) string {
	return fmt.Sprintf(`for p in %s; do st=$(sed -n 's/.*) \(.\).*/\1/p' /proc/$p/stat 2>/dev/null); [ -z "$st" ] || [ "$st" = Z ] || exit 1; done`, strings.Join(pids, " "))
}

// waitFor runs check until it exits 0, for at most bound.
func waitFor(t *testing.T, ctx context.Context, r module.Runner, check, what string) {
	deadline := time.Now().Add(bound)
	for {
		res, err := r.Run(ctx, check, module.RunOpts{})
		if err == nil && res.ExitCode == 0 {
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Errorf("waited %v for %s (last: exit %d, err %v)", bound, what, res.ExitCode, err)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s suite) outputCap(t *testing.T) {
	r := s.newRunner(t)
	ctx := testContext(t)
	const limit = 1 << 20
	for _, sudo := range s.sudoModes() {
		// Exactly the cap, split over both streams, is allowed.
		res, err := r.Run(ctx, "head -c 700000 /dev/zero; head -c 348576 /dev/zero >&2", module.RunOpts{Sudo: sudo, MaxOutput: limit})
		if err != nil || len(res.Stdout) != 700000 || len(res.Stderr) != 348576 {
			t.Errorf("sudo=%v: output of exactly the cap: %d+%d bytes, err %v", sudo, len(res.Stdout), len(res.Stderr), err)
		}
		// One byte more is not.
		res, err = r.Run(ctx, "head -c 700000 /dev/zero; head -c 348577 /dev/zero >&2", module.RunOpts{Sudo: sudo, MaxOutput: limit})
		checkLimit(t, res, err, limit)
	}

	// Endless output: the error comes back and the command is ended.
	sudo := !s.noSudo
	dir := scratch(t, ctx, r, sudo)
	cmd := fmt.Sprintf("echo $$ > %s/pid.tmp && mv %s/pid.tmp %s/pid; while :; do echo yes; done; touch %s/marker", dir, dir, dir, dir)
	res, err := r.Run(ctx, cmd, module.RunOpts{Sudo: sudo, MaxOutput: 64 << 10})
	checkLimit(t, res, err, 64<<10)
	res = run(t, ctx, r, "cat "+dir+"/pid", module.RunOpts{})
	ids := strings.Fields(string(res.Stdout))
	if len(ids) != 1 {
		t.Fatalf("pid file %q", res.Stdout)
	}
	waitFor(t, ctx, r, aliveCheck(ids), "the endless command to end")

	// The default cap holds without RunOpts.MaxOutput.
	res, err = r.Run(ctx, fmt.Sprintf("head -c %d /dev/zero", module.DefaultMaxOutput+1), module.RunOpts{})
	checkLimit(t, res, err, module.DefaultMaxOutput)
}

func checkLimit(t *testing.T, res module.RunResult, err error, limit int64) {
	t.Helper()
	var le *module.OutputLimitError
	if !errors.Is(err, module.ErrOutputLimit) || !errors.As(err, &le) || le.Limit != limit {
		t.Errorf("err = %v, want an *module.OutputLimitError for %d bytes", err, limit)
		return
	}
	if !strings.Contains(err.Error(), module.FormatBytes(limit)) {
		t.Errorf("the error does not name the limit (%s): %v", module.FormatBytes(limit), err)
	}
	if n := int64(len(res.Stdout) + len(res.Stderr)); n > limit {
		t.Errorf("kept %d bytes with a limit of %d", n, limit)
	}
}

func (s suite) largeOutput(t *testing.T) {
	r := s.newRunner(t)
	ctx := testContext(t)
	dir := scratch(t, ctx, r, false)
	// 12 MiB on stdout and 3 MiB on stderr: under the default cap together.
	run(t, ctx, r, fmt.Sprintf("head -c 12582912 /dev/urandom > %s/a && head -c 3145728 /dev/urandom > %s/b", dir, dir), module.RunOpts{})
	sums := run(t, ctx, r, fmt.Sprintf("sha256sum %s/a %s/b", dir, dir), module.RunOpts{})
	f := strings.Fields(string(sums.Stdout))
	if len(f) != 4 {
		t.Fatalf("sha256sum said %q", sums.Stdout)
	}
	for _, sudo := range s.sudoModes() {
		res := run(t, ctx, r, fmt.Sprintf("cat %s/a; cat %s/b >&2", dir, dir), module.RunOpts{Sudo: sudo})
		if got := fmt.Sprintf("%x", sha256.Sum256(res.Stdout)); got != f[0] || len(res.Stdout) != 12<<20 {
			t.Errorf("sudo=%v: stdout %d bytes, sha256 %s, want %s", sudo, len(res.Stdout), got, f[0])
		}
		if got := fmt.Sprintf("%x", sha256.Sum256(res.Stderr)); got != f[2] || len(res.Stderr) != 3<<20 {
			t.Errorf("sudo=%v: stderr %d bytes, sha256 %s, want %s", sudo, len(res.Stderr), got, f[2])
		}
	}
}
