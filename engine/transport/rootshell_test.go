package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"nksrun/engine/module"
)

func TestFrameSink(t *testing.T) {
	const nonce = "nksrun-end-0123456789abcdef"
	start, marker := startMarker(nonce)+"\n", "\n"+nonce+" "
	outputs := []string{
		"",
		"abc",
		"line\n",
		"\n",
		"no newline at the end",
		"\x00\x01\xff\r\n",
		// Starts of the markers that are not the markers stay output.
		"\n" + nonce[:10],
		"\n" + nonce + "X",
		"\n" + nonce,
		nonce + " star\n",
		"x\n\n" + nonce[:len(nonce)-1] + " 3\n",
		strings.Repeat("z", 70000),
	}
	for _, out := range outputs {
		// Before the start marker: what a process an earlier command left
		// behind wrote (dropped), or sudo's refusal on a new shell (kept).
		before := "left behind\n" + nonce[:5]
		stream := before + start + out + marker + "42\n" + "left behind by a background process"
		// Every way of cutting the stream into two writes, and byte by byte.
		splits := [][]string{}
		for i := 0; i <= len(stream) && i < 300; i++ {
			splits = append(splits, []string{stream[:i], stream[i:]})
		}
		var bytewise []string
		for i := range len(stream) {
			bytewise = append(bytewise, stream[i:i+1])
		}
		splits = append(splits, bytewise)
		for _, keep := range []bool{false, true} {
			want := out
			if keep {
				want = before + out
			}
			for _, writes := range splits {
				var f frameSink
				var dst bytes.Buffer
				end := f.begin([]byte(start), keep, []byte(marker), &dst)
				for _, w := range writes {
					if n, err := f.Write([]byte(w)); err != nil || n != len(w) {
						t.Fatalf("write %q: %d, %v", w, n, err)
					}
				}
				select {
				case status := <-end:
					if status != "42" {
						t.Fatalf("output %q: status %q", clip(out), status)
					}
				default:
					t.Fatalf("output %q cut as %d writes: the frame did not end", clip(out), len(writes))
				}
				if !f.idle() {
					t.Fatal("the frame ended but the sink is not idle")
				}
				if dst.String() != want {
					t.Fatalf("output %q cut as %d writes (keep %v): got %q", clip(out), len(writes), keep, clip(dst.String()))
				}
			}
		}
	}

	t.Run("outside a command", func(t *testing.T) {
		var f frameSink
		if n, err := f.Write([]byte("stray")); n != 5 || err != nil {
			t.Fatalf("%d %v", n, err)
		}
		var dst bytes.Buffer
		end := f.begin([]byte(start), false, []byte(marker), &dst)
		f.Write([]byte("stray" + start + "mine" + marker + "0\nstray again"))
		if <-end != "0" || dst.String() != "mine" {
			t.Fatalf("%q", dst.String())
		}
		// The next frame starts clean.
		var next bytes.Buffer
		end = f.begin([]byte("go\n"), false, []byte("\nother "), &next)
		f.Write([]byte("go\nsecond\nother 7\n"))
		if <-end != "7" || next.String() != "second" || dst.String() != "mine" {
			t.Fatalf("%q %q", next.String(), dst.String())
		}
	})

	t.Run("malformed status line", func(t *testing.T) {
		var f frameSink
		var dst bytes.Buffer
		end := f.begin(nil, true, []byte(marker), &dst)
		f.Write([]byte("x" + marker + strings.Repeat("9", 100)))
		if s := <-end; len(s) != maxMarkerRest+1 {
			t.Fatalf("status %q", s)
		}
	})

	t.Run("over the output cap", func(t *testing.T) {
		var f frameSink
		dst := &cappedBuffer{c: newOutputCap(4)}
		f.begin(nil, true, []byte(marker), dst)
		if _, err := f.Write([]byte("12345")); !errors.Is(err, errOutputLimit) {
			t.Fatalf("err = %v", err)
		}
	})
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

func TestShellInput(t *testing.T) {
	big := strings.Repeat("x", maxShellInput) + "\n"
	for _, tc := range []struct {
		name string
		in   io.Reader
		ok   bool
		want string // what the command gets either way
	}{
		{"no stdin", nil, true, ""},
		{"empty", strings.NewReader(""), true, ""},
		{"lines", strings.NewReader("a\nb\n"), true, "a\nb\n"},
		{"high bytes and CR", strings.NewReader("\xff\x81\x82\r\n한글\n"), true, "\xff\x81\x82\r\n한글\n"},
		{"no final newline", strings.NewReader("a\nb"), true, "a\nb"},
		{"a NUL byte", strings.NewReader("a\x00b\n"), false, "a\x00b\n"},
		{"exactly the limit", strings.NewReader(big[1:]), true, big[1:]},
		{"over the limit", strings.NewReader(big), false, big},
	} {
		t.Run(tc.name, func(t *testing.T) {
			input, ok, rest := shellInput(tc.in)
			if ok != tc.ok {
				t.Fatalf("ok = %v", ok)
			}
			if ok && string(input) != tc.want {
				t.Fatalf("the command would get %q in the root shell", clip(string(input)))
			}
			// What a session of its own would get (the shell being busy).
			got := ""
			if rest != nil {
				b, err := io.ReadAll(rest)
				if err != nil {
					t.Fatal(err)
				}
				got = string(b)
			}
			if got != tc.want {
				t.Fatalf("the command would get %q in a session of its own", clip(got))
			}
		})
	}
	t.Run("read error", func(t *testing.T) {
		_, ok, rest := shellInput(io.MultiReader(strings.NewReader("part"), errReader{errors.New("disk on fire")}))
		b, err := io.ReadAll(rest)
		if ok || string(b) != "part" || err == nil || err.Error() != "disk on fire" {
			t.Fatalf("ok %v, %q, %v", ok, b, err)
		}
	})
}

// rootShellPair dials the same server twice: with the root shell and
// without.
func rootShellPair(t *testing.T, sudoMode string) (e *env, shell, plain *Conn) {
	e, addr := sudoEnv(t, sudoMode)
	cfg := e.config()
	cfg.RootShell = true
	return e, dial(t, cfg, hostOf(t, "n1", addr)), dial(t, e.config(), hostOf(t, "n1", addr))
}

// TestRootShellSameResults: every command gives the same result through the
// root shell as through a session of its own.
func TestRootShellSameResults(t *testing.T) {
	_, sh, plain := rootShellPair(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	type run struct {
		cmd   string
		stdin string
		nilIn bool
	}
	var runs []run
	for _, c := range trickyCommands {
		runs = append(runs, run{cmd: c, nilIn: true})
	}
	runs = append(runs,
		run{cmd: "exit 3", nilIn: true},
		run{cmd: "kill -s TERM $$", nilIn: true},
		run{cmd: "nksrun-no-such-command", nilIn: true},
		run{cmd: "printf out; printf err >&2; printf ' more'; echo ' end' >&2; exit 4", nilIn: true},
		run{cmd: `printf '\000\001\377\r\n'; printf '\033[2J' >&2`, nilIn: true},
		run{cmd: "wc -c", nilIn: true},
		run{cmd: "echo $0 $#; set -e; false; echo not reached", nilIn: true},
		run{cmd: "exit", nilIn: true},
		run{cmd: "if then", nilIn: true}, // a syntax error ends only the command
		run{cmd: "cat; id -u >&2", stdin: "payload\n"},
		run{cmd: "sha256sum", stdin: "\xff\x81\x82\x83\x84\x85\x86\x87\x88\r\n한글 'q' \"d\" $HOME `id` \\\n"},
		run{cmd: "cat", stdin: "EOF\n'EOF'\n'\\''\n"},
		run{cmd: "cat", stdin: "%s %d \\n %%\n"},
		run{cmd: "cat", stdin: "no final newline"},
		run{cmd: "wc -c", stdin: strings.Repeat("0123456789abcdef", 8192) + "\n"},
		run{cmd: "head -c 3", stdin: "abcdef\n"},
		run{cmd: "wc -c", stdin: ""},
	)
	for _, r := range runs {
		var results [2]string
		for i, c := range []*Conn{sh, plain} {
			opts := module.RunOpts{Sudo: true}
			if !r.nilIn {
				opts.Stdin = strings.NewReader(r.stdin)
			}
			res, err := c.Run(ctx, r.cmd, opts)
			results[i] = fmt.Sprintf("exit %d err %v\nstdout %q\nstderr %q", res.ExitCode, err, res.Stdout, res.Stderr)
		}
		if results[0] != results[1] {
			t.Errorf("%q: through the root shell:\n%s\nin a session of its own:\n%s", r.cmd, results[0], results[1])
		}
	}
}

// shellOf reports the pid and command line of the process running a sudo
// command's `sh -c`: the root shell, when there is one.
const shellOf = `printf '%s %s\n' "$PPID" "$(tr '\0' ' ' </proc/$PPID/cmdline)"`

func TestRootShellLifecycle(t *testing.T) {
	e, c, _ := rootShellPair(t, "")
	e.srv.keepOrphans = true // like sshd with sudo: only the kill ends a command
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	parent := func() string {
		t.Helper()
		res, err := c.Run(ctx, shellOf, module.RunOpts{Sudo: true})
		if err != nil || res.ExitCode != 0 {
			t.Fatalf("%+v %v", res, err)
		}
		return strings.TrimSpace(string(res.Stdout))
	}
	first := parent()
	if !strings.HasSuffix(first, " sh -s") {
		t.Fatalf("the sudo command's parent is %q, want the root shell (sh -s)", first)
	}
	// Commands that exit, fail, kill themselves or read stdin keep it.
	for _, cmd := range []string{"exit 5", "kill -s TERM $$", "if then", "cat"} {
		c.Run(ctx, cmd, module.RunOpts{Sudo: true, Stdin: strings.NewReader("x\n")})
		if p := parent(); p != first {
			t.Fatalf("after %q the root shell is %q, was %q", cmd, p, first)
		}
	}
	// Output a command's background process writes after the command
	// ended is not the next command's.
	if res, err := c.Run(ctx, "( sleep 0.2; echo stray; echo stray >&2 ) &", module.RunOpts{Sudo: true}); err != nil || len(res.Stdout)+len(res.Stderr) != 0 {
		t.Fatalf("%+v %v", res, err)
	}
	time.Sleep(500 * time.Millisecond)
	if res, err := c.Run(ctx, "echo mine; echo mine >&2", module.RunOpts{Sudo: true}); err != nil || string(res.Stdout) != "mine\n" || string(res.Stderr) != "mine\n" {
		t.Fatalf("the next command got %q %q (%v)", res.Stdout, res.Stderr, err)
	}
	if p := parent(); p != first {
		t.Fatalf("after a background process the root shell is %q, was %q", p, first)
	}
	// Commands without sudo do not use it.
	res, _ := c.Run(ctx, shellOf, module.RunOpts{})
	if strings.TrimSpace(string(res.Stdout)) == first {
		t.Fatal("a command without sudo ran in the root shell")
	}

	// A timeout ends the command and the shell; the next command starts a
	// new one.
	pid := strings.Fields(first)[0]
	_, err := c.Run(ctx, "sleep 30", module.RunOpts{Sudo: true, Timeout: 300 * time.Millisecond})
	if !errors.Is(err, ErrCommandTimeout) {
		t.Fatalf("err = %v", err)
	}
	waitGone(t, pid)
	second := parent()
	if second == first {
		t.Fatal("the stopped shell was used again")
	}

	// A command that ends the shell itself is reported as a session would
	// report it; the next command gets a new shell.
	res, err = c.Run(ctx, "kill -s KILL $PPID", module.RunOpts{Sudo: true})
	if err != nil || res.ExitCode != 128+9 {
		t.Fatalf("%+v %v", res, err)
	}
	if third := parent(); third == second {
		t.Fatal("the killed shell was used again")
	}

	// Closing the connection ends the shell, and waits for it to have
	// exited (sshd would leave a shell still exiting to init): once Close
	// returns the server has reaped it.
	pid = strings.Fields(parent())[0]
	c.Close()
	if _, err := os.Stat("/proc/" + pid); err == nil {
		t.Fatalf("the root shell %s was still there after Close", pid)
	}
}

// TestRootShellBusy: sudo commands that come while the shell is busy run in
// sessions of their own, within MaxSessions.
func TestRootShellBusy(t *testing.T) {
	e, c, _ := rootShellPair(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := c.Run(ctx, fmt.Sprintf("sleep 0.1; cat; echo out-%d; echo err-%d >&2; exit %d", i, i, i), module.RunOpts{Sudo: true, Stdin: strings.NewReader(fmt.Sprintf("in-%d\n", i))})
			if err != nil || string(res.Stdout) != fmt.Sprintf("in-%d\nout-%d\n", i, i) || string(res.Stderr) != fmt.Sprintf("err-%d\n", i) || res.ExitCode != i {
				t.Errorf("run %d: %q %q exit %d err %v", i, res.Stdout, res.Stderr, res.ExitCode, err)
			}
		}()
	}
	wg.Wait()
	// The other Conn of the pair never ran anything.
	if m := e.srv.maxSessions.Load(); m > DefaultMaxSessions {
		t.Errorf("server saw %d concurrent sessions, want <= %d", m, DefaultMaxSessions)
	}
}

// TestRefusedShellBeforeItsCommandIsWritten: sudo refuses at once, before
// the shell reads its command, and the goroutine writing that command is
// held back:
//
//   - until the shell has ended, so the refusal is handled (the shell
//     dropped) while the write may be starting. Under -race this failed
//     when the drop sent EOF on a stdin being written (CI, round 6); now
//     either the drop sends EOF first and the write is not made, or the
//     write holds the stdin turn and the drop closes the channel only.
//   - until the refusal was reported: the drop found no write in flight and
//     sent EOF, and the write, coming after, is not made.
//
// Each time the next command starts a new shell and is refused the same
// way.
func TestRefusedShellBeforeItsCommandIsWritten(t *testing.T) {
	for _, untilReported := range []bool{false, true} {
		t.Run(fmt.Sprintf("held until reported %v", untilReported), func(t *testing.T) {
			_, sh, _ := rootShellPair(t, "password")
			writes := make(chan *rootShell, 4)
			reported := make(chan struct{})
			sh.beforeShellWrite = func(s *rootShell) {
				<-s.ended
				if untilReported {
					<-reported
				}
				writes <- s
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for i := range 2 {
				res, err := sh.Run(ctx, "id -u", module.RunOpts{Sudo: true})
				if !errors.Is(err, ErrSudoPassword) || res.ExitCode != 1 || len(res.Stdout) != 0 {
					t.Fatalf("run %d: res %+v err %v, want %v", i, res, err, ErrSudoPassword)
				}
				if untilReported {
					reported <- struct{}{}
				}
				var s *rootShell
				select {
				case s = <-writes:
				case <-ctx.Done():
					t.Fatalf("run %d: the command's write never came", i)
				}
				if !untilReported {
					continue
				}
				// The write goroutine may still be on its way to the turn.
				s.stdinTurn <- struct{}{}
				eof := s.eof
				<-s.stdinTurn
				if !eof {
					t.Errorf("run %d: the refused shell was dropped without EOF on its stdin", i)
				}
			}
		})
	}
}

// TestTakeStdin: close sends EOF only with the stdin turn: at once when no
// write holds it; a graceful close waits (boundedly) for a write that is
// ending; a drop (no wait) and a hung write get no EOF.
func TestTakeStdin(t *testing.T) {
	sh := &rootShell{stdinTurn: make(chan struct{}, 1)}
	if !sh.takeStdin(0) {
		t.Fatal("a free turn was not taken")
	}
	// Held (as by a write in flight): no wait, or a short one, fails.
	if sh.takeStdin(0) {
		t.Fatal("a held turn was taken without waiting")
	}
	if sh.takeStdin(10 * time.Millisecond) {
		t.Fatal("a turn held throughout was taken")
	}
	// Let go while (or before) a graceful close waits: it gets the turn.
	got := make(chan bool)
	go func() { got <- sh.takeStdin(time.Minute) }()
	<-sh.stdinTurn
	if !<-got {
		t.Fatal("a turn let go during the wait was not taken")
	}
}
