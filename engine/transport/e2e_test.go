package transport_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"nksrun/engine/module"
	"nksrun/engine/transport"
	"nksrun/testdata/testbed"
)

// TestE2E runs the transport against real OpenSSH sshd nodes with real
// sudo (the testbed). One testbed for all subtests: node 0 is left alone,
// the others each get one kind of breakage.
func TestE2E(t *testing.T) {
	if testing.Short() && os.Getenv("CI") == "" { // CI always runs the end-to-end tests
		t.Skip("end-to-end")
	}
	tb := testbed.New(t, testbed.Options{N: 4})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// Each subtest gets its own copy of known_hosts, so the byte-for-byte
	// checks see only what this package did.
	config := func(t *testing.T) transport.Config {
		kh := filepath.Join(t.TempDir(), "known_hosts")
		b, err := os.ReadFile(tb.KnownHosts)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(kh, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return transport.Config{
			Identities:       []string{tb.KeyPath},
			KnownHosts:       kh,
			HandshakeTimeout: 3 * time.Second,
			DialTimeout:      3 * time.Second,
		}
	}
	hostOf := func(n *testbed.Node) transport.Host {
		return transport.Host{Name: n.Name, Address: n.Address, User: n.User, Port: n.Port}
	}
	dial := func(t *testing.T, cfg transport.Config, n *testbed.Node) *transport.Conn {
		t.Helper()
		d, err := transport.NewDialer(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		c, err := d.Dial(ctx, hostOf(n))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	t.Run("sudo", func(t *testing.T) {
		c := dial(t, config(t), tb.Nodes[0])
		res, err := c.Run(ctx, "id -u", module.RunOpts{Sudo: true})
		if err != nil || strings.TrimSpace(string(res.Stdout)) != "0" {
			t.Fatalf("sudo id -u: %+v %v", res, err)
		}
		res, err = c.Run(ctx, "id -un", module.RunOpts{})
		if err != nil || strings.TrimSpace(string(res.Stdout)) != tb.Nodes[0].User {
			t.Fatalf("id -un: %q %v", res.Stdout, err)
		}
		res, err = c.Run(ctx, `printf '%s' "it's \"quoted\" $((6*7)) `+"`echo tick`"+`"`, module.RunOpts{Sudo: true})
		if err != nil || string(res.Stdout) != `it's "quoted" 42 tick` {
			t.Fatalf("quoting: %q %v", res.Stdout, err)
		}
		res, err = c.Run(ctx, "exit 7", module.RunOpts{Sudo: true})
		if err != nil || res.ExitCode != 7 {
			t.Fatalf("exit code: %+v %v", res, err)
		}
	})

	t.Run("stdin 1MiB", func(t *testing.T) {
		c := dial(t, config(t), tb.Nodes[0])
		payload := make([]byte, 1<<20)
		rand.Read(payload)
		want := fmt.Sprintf("%x", sha256.Sum256(payload))
		// The shape of an atomic install: stream into a temp file, then read
		// its hash back in a second command.
		tmp := "/tmp/nksrun-transport-e2e"
		res, err := c.Run(ctx, "cat > "+tmp+" && sha256sum "+tmp, module.RunOpts{Sudo: true, Stdin: bytes.NewReader(payload)})
		if err != nil || !strings.HasPrefix(string(res.Stdout), want) {
			t.Fatalf("got %q (stderr %q) err %v, want %s", res.Stdout, res.Stderr, err, want)
		}
		c.Run(ctx, "rm -f "+tmp, module.RunOpts{Sudo: true})
	})

	t.Run("20 concurrent runs over one conn", func(t *testing.T) {
		c := dial(t, config(t), tb.Nodes[0])
		var wg sync.WaitGroup
		errs := make(chan error, 20)
		for i := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := c.Run(ctx, fmt.Sprintf("sleep 0.1; echo %d", i), module.RunOpts{Sudo: i%2 == 0})
				if err == nil && strings.TrimSpace(string(res.Stdout)) != fmt.Sprint(i) {
					err = fmt.Errorf("run %d: %q %q", i, res.Stdout, res.Stderr)
				}
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
	})

	t.Run("unreachable", func(t *testing.T) {
		n := tb.Nodes[1]
		if err := n.Stop(); err != nil {
			t.Fatal(err)
		}
		defer n.Start()
		d, err := transport.NewDialer(config(t))
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		_, err = d.Dial(ctx, hostOf(n))
		t.Logf("stopped: %v", err)
		if !errors.Is(err, transport.ErrUnreachable) || !errors.Is(err, transport.ErrNoAnswer) || !strings.Contains(err.Error(), n.Name) {
			t.Fatalf("err = %v", err)
		}
		// Nothing listens: said so, and not retried.
		for _, want := range []string{"no answer at all", "connection refused", "not retried"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%q does not say %q", err, want)
			}
		}
		if r := d.AdmissionStats().Retries; r != 0 {
			t.Errorf("%d retries for a node that is not there", r)
		}
	})

	t.Run("hung node", func(t *testing.T) {
		n := tb.Nodes[1]
		if err := n.Hang(); err != nil {
			t.Fatal(err)
		}
		defer n.Start()
		cfg := config(t)
		cfg.HandshakeTimeout = time.Second
		d, err := transport.NewDialer(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		_, err = d.Dial(ctx, hostOf(n))
		if !errors.Is(err, transport.ErrHandshakeTimeout) || errors.Is(err, transport.ErrNoAnswer) || !strings.Contains(err.Error(), "handshake timed out") {
			t.Fatalf("err = %v", err)
		}
		// TCP was accepted, SSH never answered: retried with backoff
		// before giving up, and the message says which kind of failure.
		for _, want := range []string{n.Name, "accepts TCP", "gave up after 3 attempts (2 retries"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%q does not say %q", err, want)
			}
		}
		if r := d.AdmissionStats().Retries; r != 2 {
			t.Errorf("%d retries, want 2", r)
		}
		t.Logf("hung: %v", err)
	})

	t.Run("sudo password required", func(t *testing.T) {
		n := tb.Nodes[2]
		c := dial(t, config(t), n)
		if err := n.SetSudoPassword(true); err != nil {
			t.Fatal(err)
		}
		defer n.SetSudoPassword(false)
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		_, err := c.Run(rctx, "id -u", module.RunOpts{Sudo: true})
		if !errors.Is(err, transport.ErrSudoPassword) || rctx.Err() != nil {
			t.Fatalf("err = %v", err)
		}
		if !strings.Contains(err.Error(), "node "+n.Name) || !strings.Contains(err.Error(), "NOPASSWD") {
			t.Fatalf("message: %v", err)
		}
	})

	t.Run("reconnect after stop/start", func(t *testing.T) {
		n := tb.Nodes[2]
		c := dial(t, config(t), n)
		if err := n.Stop(); err != nil {
			t.Fatal(err)
		}
		// The connection is dead and the one redial Run tries is refused.
		if _, err := c.Run(ctx, "true", module.RunOpts{Timeout: 10 * time.Second}); !errors.Is(err, transport.ErrConnectionLost) && !errors.Is(err, transport.ErrUnreachable) {
			t.Fatalf("run on a stopped node: %v", err)
		}
		time.AfterFunc(time.Second, func() {
			if err := n.Start(); err != nil {
				t.Error(err)
			}
		})
		rctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		if err := c.Reconnect(rctx); err != nil {
			t.Fatal(err)
		}
		res, err := c.Run(ctx, "id -u", module.RunOpts{Sudo: true})
		if err != nil || strings.TrimSpace(string(res.Stdout)) != "0" {
			t.Fatalf("%+v %v", res, err)
		}
	})

	t.Run("run redials a connection that died between commands", func(t *testing.T) {
		n := tb.Nodes[2]
		c := dial(t, config(t), n)
		before, err := c.Run(ctx, "cat /proc/sys/kernel/random/boot_id", module.RunOpts{})
		if err != nil {
			t.Fatal(err)
		}
		// A reboot by someone else: the node goes away and comes back
		// while this connection sits idle.
		if err := n.Stop(); err != nil {
			t.Fatal(err)
		}
		if err := n.Start(); err != nil {
			t.Fatal(err)
		}
		after, err := c.Run(ctx, "id -u", module.RunOpts{Sudo: true})
		if err != nil || strings.TrimSpace(string(after.Stdout)) != "0" {
			t.Fatalf("run after the node came back: %+v %v (boot id before %s)", after, err, before.Stdout)
		}
	})

	t.Run("changed host key", func(t *testing.T) {
		n := tb.Nodes[3]
		if err := n.ChangeHostKey(); err != nil {
			t.Fatal(err)
		}
		for _, policy := range []transport.HostKeyPolicy{transport.PolicyStrict, transport.PolicyAcceptNew} {
			cfg := config(t)
			cfg.Policy = policy
			before, _ := os.ReadFile(cfg.KnownHosts)
			d, err := transport.NewDialer(cfg)
			if err != nil {
				t.Fatal(err)
			}
			_, err = d.Dial(ctx, hostOf(n))
			d.Close()
			if !errors.Is(err, transport.ErrHostKeyChanged) || !strings.Contains(err.Error(), "MAN-IN-THE-MIDDLE") || !strings.Contains(err.Error(), cfg.KnownHosts+":") {
				t.Fatalf("%s: err = %v", policy, err)
			}
			after, _ := os.ReadFile(cfg.KnownHosts)
			if !bytes.Equal(before, after) {
				t.Fatalf("%s: known_hosts changed", policy)
			}
		}
	})

	t.Run("accept-new then strict", func(t *testing.T) {
		cfg := config(t)
		os.Remove(cfg.KnownHosts)
		cfg.Policy = transport.PolicyAcceptNew
		dial(t, cfg, tb.Nodes[0])
		cfg.Policy = transport.PolicyStrict
		c := dial(t, cfg, tb.Nodes[0])
		if _, err := c.Run(ctx, "true", module.RunOpts{}); err != nil {
			t.Fatal(err)
		}
	})
}

// BenchmarkE2EDialRun: one connection plus one `sudo true` per iteration
// against a real sshd.
func BenchmarkE2EDialRun(b *testing.B) {
	tb := testbed.New(b, testbed.Options{N: 1})
	d, err := transport.NewDialer(transport.Config{Identities: []string{tb.KeyPath}, KnownHosts: tb.KnownHosts})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	n := tb.Nodes[0]
	h := transport.Host{Name: n.Name, Address: n.Address, User: n.User, Port: n.Port}
	ctx := context.Background()
	for b.Loop() {
		c, err := d.Dial(ctx, h)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Run(ctx, "true", module.RunOpts{Sudo: true}); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}
