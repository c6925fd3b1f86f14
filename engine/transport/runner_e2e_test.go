package transport_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"nksrun/engine/module"
	"nksrun/engine/module/runnertest"
	"nksrun/engine/transport"
	"nksrun/testdata/testbed"
)

// TestE2ERunner runs the runner conformance suite against the SSH transport
// on real OpenSSH nodes with real sudo, plus the two findings of issue 10
// it exists for: 256 MiB of output and a cancelled `sudo` command; with and
// without the root shell.
func TestE2ERunner(t *testing.T) {
	if testing.Short() && os.Getenv("CI") == "" { // CI always runs the end-to-end tests
		t.Skip("end-to-end")
	}
	tb := testbed.New(t, testbed.Options{N: 2})
	// Every test runs twice: sudo commands in sessions of their own, and
	// through the connection's root shell (Config.RootShell, apply's default).
	for _, rootShell := range []bool{false, true} {
		name := "session per command"
		if rootShell {
			name = "root shell"
		}
		t.Run(name, func(t *testing.T) {
			d, err := transport.NewDialer(transport.Config{
				Identities: []string{tb.KeyPath},
				KnownHosts: tb.KnownHosts,
				RootShell:  rootShell,
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { d.Close() })
			i := 0
			dial := func(t *testing.T) *transport.Conn {
				t.Helper()
				n := tb.Nodes[i%len(tb.Nodes)]
				i++
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				c, err := d.Dial(ctx, transport.Host{Name: n.Name, Address: n.Address, User: n.User, Port: n.Port})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				return c
			}

			if rootShell {
				t.Run("one sudo per connection", func(t *testing.T) {
					c := dial(t)
					// The parent of a sudo command's sh: the root shell,
					// the same one for each command, running as root.
					const parent = `printf '%s %s %s\n' "$PPID" "$(stat -c %u /proc/$PPID)" "$(tr '\0' ' ' </proc/$PPID/cmdline)"`
					first := string(mustRun(t, c, parent, true).Stdout)
					mustRun(t, c, "exit 0", true)
					if second := string(mustRun(t, c, parent, true).Stdout); second != first || !strings.HasSuffix(first, " 0 sh -s \n") {
						t.Fatalf("sudo commands ran under %q, then %q; want one root shell (sh -s, uid 0)", first, second)
					}
				})
			}
			t.Run("conformance", func(t *testing.T) {
				runnertest.Run(t, func(t *testing.T) module.Runner { return dial(t) })
			})

			t.Run("256 MiB of output fails with the limit and memory stays bounded", func(t *testing.T) {
				c := dial(t)
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				// The heap's peak during the run, sampled: buffering the 256 MiB
				// would need more than 256 MiB in use at some point.
				var before runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				peak := make(chan uint64)
				stop := make(chan struct{})
				go func() {
					var m runtime.MemStats
					var top uint64
					for {
						runtime.ReadMemStats(&m)
						top = max(top, m.HeapInuse)
						select {
						case <-stop:
							peak <- top
							return
						case <-time.After(5 * time.Millisecond):
						}
					}
				}()
				res, err := c.Run(ctx, "echo $$ > /tmp/nksrun-e2e-flood.pid; head -c 268435456 /dev/zero", module.RunOpts{Sudo: true})
				close(stop)
				top := <-peak
				var le *module.OutputLimitError
				if !errors.As(err, &le) || le.Limit != module.DefaultMaxOutput {
					t.Fatalf("err = %v, want the default output limit", err)
				}
				for _, want := range []string{c.Host().Name, "16 MiB", "--max-output"} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not say %q", err, want)
					}
				}
				if n := len(res.Stdout) + len(res.Stderr); int64(n) > module.DefaultMaxOutput {
					t.Errorf("kept %d bytes", n)
				}
				// Generous: the kept 16 MiB, its buffer's growth, the copy handed
				// back, SSH packet buffers.
				grew := int64(top) - int64(before.HeapInuse)
				t.Logf("heap in use: %d MiB before, peak %d MiB during the run", before.HeapInuse>>20, top>>20)
				if grew > 128<<20 {
					t.Errorf("heap in use grew by %d MiB for a command capped at 16 MiB", grew>>20)
				}
				// And `head` was ended on the node, not left writing into a pipe.
				pid := strings.TrimSpace(string(mustRun(t, c, "cat /tmp/nksrun-e2e-flood.pid", false).Stdout))
				waitGoneOnNode(t, c, pid)
				mustRun(t, c, "rm -f /tmp/nksrun-e2e-flood.pid", true)
			})

			t.Run("cancel ends sleep 60 under sudo on the node", func(t *testing.T) {
				c := dial(t)
				dir := strings.TrimSpace(string(mustRun(t, c, "mktemp -d", false).Stdout))
				defer mustRun(t, c, "rm -rf "+dir, true)
				// Exactly the finding: after Ctrl-C the sudo'ed command finished
				// on the node 15 s later.
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				go func() {
					_, err := c.Run(ctx, fmt.Sprintf("echo $$ > %s/pid; sleep 60; touch %s/MARKER", dir, dir), module.RunOpts{Sudo: true})
					done <- err
				}()
				var pid string
				for deadline := time.Now().Add(time.Minute); pid == ""; time.Sleep(50 * time.Millisecond) {
					if time.Now().After(deadline) {
						t.Fatal("the command never started")
					}
					pid = strings.TrimSpace(string(mustRun(t, c, "cat "+dir+"/pid 2>/dev/null || true", false).Stdout))
				}
				// The sleep is the shell's child; find it before cancelling.
				var sleepPid string
				for deadline := time.Now().Add(time.Minute); sleepPid == ""; time.Sleep(50 * time.Millisecond) {
					if time.Now().After(deadline) {
						t.Fatal("the sleep never started")
					}
					sleepPid = strings.TrimSpace(string(mustRun(t, c, "pgrep -P "+pid+" sleep || true", false).Stdout))
				}
				cancel()
				if err := <-done; !errors.Is(err, context.Canceled) {
					t.Fatalf("err = %v", err)
				}
				waitGoneOnNode(t, c, pid)
				waitGoneOnNode(t, c, sleepPid)
				if out := mustRun(t, c, "ls "+dir, false).Stdout; strings.Contains(string(out), "MARKER") {
					t.Fatal("MARKER appeared: the command went on after the cancel")
				}
			})
		})
	}
}

func mustRun(t *testing.T, c *transport.Conn, cmd string, sudo bool) module.RunResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := c.Run(ctx, cmd, module.RunOpts{Sudo: sudo})
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("%q: %+v %v", cmd, res, err)
	}
	return res
}

// waitGoneOnNode waits (bounded) until pid is no live process on the node
// (a zombie not reaped yet counts as gone).
func waitGoneOnNode(t *testing.T, c *transport.Conn, pid string) {
	t.Helper()
	if pid == "" {
		t.Fatal("no pid")
	}
	check := fmt.Sprintf(`st=$(sed -n 's/.*) \(.\).*/\1/p' /proc/%s/stat 2>/dev/null); [ -z "$st" ] || [ "$st" = Z ]`, pid)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		res, err := c.Run(ctx, check, module.RunOpts{})
		cancel()
		if err == nil && res.ExitCode == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %s still runs on the node", pid)
		}
	}
}
