package transport

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"nksrun/engine/module"
)

// trickyCommands are shell programs whose quoting must survive wrapping
// exactly: quotes, $, backticks, backslashes, newlines, globs.
var trickyCommands = []string{
	`echo plain`,
	`echo 'single quoted'`,
	`echo "double $((1+2)) quoted"`,
	`x='it'"'"'s'; echo "$x"`,
	"echo `echo backticks`",
	`printf '%s\n' "a\\b" 'c\d'`,
	"echo line1\necho line2",
	`printf '%s|' * 2>/dev/null | head -c 0; echo glob-ok`,
	`echo "$0" >/dev/null; echo dollar-zero-ok`,
	`a="'"; echo "[$a]"`,
	`printf '%s' "'\"'\"'"`,
	`echo "tab	here"; echo 'semi;colon && pipe | amp &'`,
	"cat <<'EOF'\n$HOME `id` 'q'\nEOF",
	`echo "unicode ✓ ü"`,
}

// fakeSudoDir holds a `sudo` that checks the exact `-n --` prefix and then
// runs its arguments, or (mode "password"/"tty") fails like sudo -n does.
func fakeSudoDir(t testing.TB, mode string) string {
	t.Helper()
	dir := t.TempDir()
	script := "#!/bin/sh\n[ \"$1\" = -n ] || { echo 'fake sudo: want -n' >&2; exit 99; }\nshift\n[ \"$1\" = -- ] || { echo 'fake sudo: want --' >&2; exit 98; }\nshift\n"
	switch mode {
	case "password":
		script += "echo 'sudo: a password is required' >&2\nexit 1\n"
	case "tty":
		script += "echo 'sudo: sorry, you must have a tty to run sudo' >&2\nexit 1\n"
	default:
		script += "exec \"$@\"\n"
	}
	if err := os.WriteFile(filepath.Join(dir, "sudo"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestWrapCommandLocal runs the exact wrapped strings through a local sh
// (sudo replaced by the fake) and compares with running the command as is.
func TestWrapCommandLocal(t *testing.T) {
	path := "PATH=" + fakeSudoDir(t, "") + ":" + os.Getenv("PATH")
	for _, cmd := range trickyCommands {
		want, err := exec.Command("sh", "-c", cmd).CombinedOutput()
		if err != nil {
			t.Fatalf("%q: %v: %s", cmd, err, want)
		}
		for _, sudo := range []bool{false, true} {
			// A user script (the same tricky text) runs first; its output
			// comes before the command's.
			for _, user := range []string{"", cmd} {
				want := want
				if user != "" {
					want = append(append([]byte{}, want...), want...)
				}
				c := exec.Command("sh", "-c", wrapCommand(cmd, sudo, user))
				c.Env = append(os.Environ(), path)
				got, err := c.CombinedOutput()
				// The wrapper's first line (its process group) comes first.
				marker, got, ok := bytes.Cut(got, []byte("\n"))
				if _, isGroup := parsePgidLine(marker); !ok || !isGroup {
					t.Errorf("sudo=%v user=%v %q: first line %q is not the process group", sudo, user != "", cmd, marker)
				}
				if err != nil || !bytes.Equal(got, want) {
					t.Errorf("sudo=%v user=%v %q:\n got %q (%v)\nwant %q", sudo, user != "", cmd, got, err, want)
				}
			}
		}
	}
}

func dial(t testing.TB, cfg Config, h Host) *Conn {
	t.Helper()
	d, err := NewDialer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	c, err := d.Dial(context.Background(), h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// connectedEnv is an env with a trusted server and a dialled Conn.
func connectedEnv(t *testing.T, sudoMode string) (*env, *Conn) {
	e, addr := sudoEnv(t, sudoMode)
	return e, dial(t, e.config(), hostOf(t, "n1", addr))
}

// sudoEnv is a trusted test server whose sudo is the fake in sudoMode.
func sudoEnv(t *testing.T, sudoMode string) (*env, string) {
	e := newEnv(t)
	e.srv.env = []string{"PATH=" + fakeSudoDir(t, sudoMode) + ":" + os.Getenv("PATH")}
	addr := e.srv.listen()
	e.trust(t, addr)
	return e, addr
}

func TestRun(t *testing.T) {
	_, c := connectedEnv(t, "")
	ctx := context.Background()

	t.Run("stdout stderr exit code", func(t *testing.T) {
		res, err := c.Run(ctx, "echo out; echo err >&2; exit 3", module.RunOpts{})
		if err != nil {
			t.Fatal(err)
		}
		if string(res.Stdout) != "out\n" || string(res.Stderr) != "err\n" || res.ExitCode != 3 {
			t.Fatalf("got %+v", res)
		}
	})

	t.Run("quoting round-trips with and without sudo", func(t *testing.T) {
		for _, cmd := range trickyCommands {
			want, err := exec.Command("sh", "-c", cmd).Output()
			if err != nil {
				t.Fatal(err)
			}
			for _, sudo := range []bool{false, true} {
				res, err := c.Run(ctx, cmd, module.RunOpts{Sudo: sudo})
				if err != nil || res.ExitCode != 0 || !bytes.Equal(res.Stdout, want) {
					t.Errorf("sudo=%v %q: got %q exit %d err %v stderr %q, want %q", sudo, cmd, res.Stdout, res.ExitCode, err, res.Stderr, want)
				}
			}
		}
	})

	t.Run("stdin 1MiB streamed and closed", func(t *testing.T) {
		payload := make([]byte, 1<<20)
		rand.Read(payload)
		sum := sha256.Sum256(payload)
		res, err := c.Run(ctx, "sha256sum", module.RunOpts{Stdin: bytes.NewReader(payload), Sudo: true})
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Fields(string(res.Stdout)); len(got) == 0 || got[0] != fmt.Sprintf("%x", sum) {
			t.Fatalf("sha256 mismatch: %q", res.Stdout)
		}
	})

	t.Run("stdin not read by command", func(t *testing.T) {
		res, err := c.Run(ctx, "exit 0", module.RunOpts{Stdin: bytes.NewReader(make([]byte, 4<<20))})
		if err != nil || res.ExitCode != 0 {
			t.Fatalf("res %+v err %v", res, err)
		}
	})

	t.Run("stdin read error reported", func(t *testing.T) {
		r := io.MultiReader(strings.NewReader("partial"), errReader{errors.New("disk on fire")})
		_, err := c.Run(ctx, "cat >/dev/null", module.RunOpts{Stdin: r})
		if err == nil || !strings.Contains(err.Error(), "disk on fire") {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestRunConcurrentSessionsBounded(t *testing.T) {
	e, c := connectedEnv(t, "")
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := c.Run(context.Background(), fmt.Sprintf("sleep 0.05; echo %d", i), module.RunOpts{})
			if err == nil && strings.TrimSpace(string(res.Stdout)) != fmt.Sprint(i) {
				err = fmt.Errorf("run %d: stdout %q", i, res.Stdout)
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
	if m := e.srv.maxSessions.Load(); m > DefaultMaxSessions {
		t.Errorf("server saw %d concurrent sessions, want <= %d", m, DefaultMaxSessions)
	}
	if n := e.srv.connCount.Load(); n != 1 {
		t.Errorf("server saw %d connections, want 1", n)
	}
}

func TestSudoFailures(t *testing.T) {
	for _, tc := range []struct {
		mode string
		want error
	}{
		{"password", ErrSudoPassword},
		{"tty", ErrSudoTTY},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			_, shell, plain := rootShellPair(t, tc.mode)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for _, c := range []*Conn{plain, shell} {
				for range 2 { // and again: a refused root shell is not kept
					res, err := c.Run(ctx, "id -u", module.RunOpts{Sudo: true})
					if !errors.Is(err, tc.want) || res.ExitCode != 1 || len(res.Stdout) != 0 {
						t.Fatalf("root shell %v: res %+v err %v, want %v", c.d.rootShell(), res, err, tc.want)
					}
					if !strings.HasPrefix(err.Error(), "node n1 (") {
						t.Errorf("error does not name the node: %v", err)
					}
				}
				// The same failure without sudo is just an exit code.
				res, err := c.Run(ctx, "echo 'sudo: a password is required' >&2; exit 1", module.RunOpts{})
				if err != nil || res.ExitCode != 1 {
					t.Fatalf("non-sudo: res %+v err %v", res, err)
				}
			}
		})
	}
}

func TestCommandTimeoutAndCancel(t *testing.T) {
	_, c := connectedEnv(t, "")

	_, err := c.Run(context.Background(), "sleep 30", module.RunOpts{Timeout: 200 * time.Millisecond})
	if !errors.Is(err, ErrCommandTimeout) || !strings.Contains(err.Error(), "timed out") || !strings.Contains(err.Error(), "node n1") {
		t.Fatalf("timeout: err = %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	_, err = c.Run(ctx, "sleep 30", module.RunOpts{})
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "canceled") {
		t.Fatalf("cancel: err = %v", err)
	}

	// The connection survives both.
	if res, err := c.Run(context.Background(), "echo ok", module.RunOpts{}); err != nil || string(res.Stdout) != "ok\n" {
		t.Fatalf("after timeout: %+v %v", res, err)
	}
}

func TestHostKeyPolicies(t *testing.T) {
	other := newEd25519Signer(t)
	for _, tc := range []struct {
		name    string
		policy  HostKeyPolicy
		known   string // "", "same", "other"
		wantErr error
		// wantLines is the number of known_hosts lines after the dial (-1:
		// file must not exist).
		wantLines int
		wantWarn  bool
	}{
		{"strict unknown", PolicyStrict, "", ErrHostKeyUnknown, -1, false},
		{"strict known", PolicyStrict, "same", nil, 1, false},
		{"strict changed", PolicyStrict, "other", ErrHostKeyChanged, 1, false},
		{"strict known hashed", PolicyStrict, "hashed", nil, 1, false},
		{"accept-new revoked", PolicyAcceptNew, "revoked", ErrHostKeyRevoked, 1, false},
		{"accept-new unknown", PolicyAcceptNew, "", nil, 1, false},
		{"accept-new known", PolicyAcceptNew, "same", nil, 1, false},
		{"accept-new changed", PolicyAcceptNew, "other", ErrHostKeyChanged, 1, false},
		{"insecure unknown", PolicyInsecure, "", nil, -1, true},
		{"insecure changed", PolicyInsecure, "other", nil, 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			addr := e.srv.listen()
			switch tc.known {
			case "same":
				e.trust(t, addr)
			case "other":
				appendFile(t, e.knownHosts, knownHostsLine(addr, other.PublicKey()))
			case "hashed":
				appendFile(t, e.knownHosts, knownhosts.HashHostname(knownhosts.Normalize(addr))+" "+string(ssh.MarshalAuthorizedKey(e.srv.hostKeys[0].PublicKey())))
			case "revoked":
				appendFile(t, e.knownHosts, "@revoked "+knownHostsLine(addr, e.srv.hostKeys[0].PublicKey()))
			}
			before, _ := os.ReadFile(e.knownHosts)
			var warnings []string
			cfg := e.config()
			cfg.Policy = tc.policy
			cfg.Warn = func(s string) { warnings = append(warnings, s) }
			d, err := NewDialer(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			c, err := d.Dial(context.Background(), hostOf(t, "n1", addr))
			if c != nil {
				if _, err := c.Run(context.Background(), "true", module.RunOpts{}); err != nil {
					t.Fatal(err)
				}
				c.Close()
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				msg := err.Error()
				_, port, _ := net.SplitHostPort(addr)
				mustContain(t, msg, "node n1 (", "[127.0.0.1]:"+port)
				switch tc.wantErr {
				case ErrHostKeyUnknown:
					mustContain(t, msg, "--host-key-policy accept-new", "ssh-keyscan -p "+port+" 127.0.0.1", e.knownHosts)
				case ErrHostKeyChanged:
					mustContain(t, msg, "MAN-IN-THE-MIDDLE", e.knownHosts+":1")
				case ErrHostKeyRevoked:
					mustContain(t, msg, "@revoked", e.knownHosts+":1")
				}
			}
			after, statErr := os.ReadFile(e.knownHosts)
			switch {
			case tc.wantLines < 0:
				if !errors.Is(statErr, os.ErrNotExist) {
					t.Fatalf("known_hosts was created: %q", after)
				}
			case tc.known != "" && !bytes.Equal(before, after):
				t.Fatalf("known_hosts rewritten:\nbefore %q\nafter  %q", before, after)
			case strings.Count(string(after), "\n") != tc.wantLines:
				t.Fatalf("known_hosts has %q, want %d lines", after, tc.wantLines)
			}
			if tc.wantWarn != (len(warnings) == 1) || (tc.wantWarn && !strings.Contains(warnings[0], "NOT verified")) {
				t.Fatalf("warnings = %q", warnings)
			}
		})
	}
}

func mustContain(t testing.TB, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%q does not contain %q", s, sub)
		}
	}
}

// TestAcceptNewConcurrent dials 50 new hosts twice each, at once, through
// two Dialers (two in-process mutexes, so the flock is what serialises them),
// and expects exactly one known_hosts line per host, all valid.
func TestAcceptNewConcurrent(t *testing.T) {
	e := newEnv(t)
	// A hand-edited file without a trailing newline must not get its last
	// line joined with the first appended one.
	unrelated := newEd25519Signer(t)
	appendFile(t, e.knownHosts, strings.TrimSuffix(knownHostsLine("10.9.9.9", unrelated.PublicKey()), "\n"))
	var addrs []string
	for range 50 {
		addrs = append(addrs, e.srv.listen())
	}
	cfg := e.config()
	cfg.Policy = PolicyAcceptNew
	var dialers []*Dialer
	for range 2 {
		d, err := NewDialer(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		dialers = append(dialers, d)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*len(addrs))
	for i, addr := range addrs {
		for _, d := range dialers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := d.Dial(context.Background(), hostOf(t, fmt.Sprint("n", i), addr))
				if err == nil {
					c.Close()
				}
				errs <- err
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	b, err := os.ReadFile(e.knownHosts)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 51 {
		t.Fatalf("known_hosts has %d lines, want 51:\n%s", len(lines), b)
	}
	seen := map[string]bool{}
	for _, l := range lines {
		if seen[l] {
			t.Errorf("duplicate line %q", l)
		}
		seen[l] = true
	}
	// Every recorded host now passes strict checking.
	cfg.Policy = PolicyStrict
	d, err := NewDialer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, addr := range addrs {
		c, err := d.Dial(context.Background(), hostOf(t, "n", addr))
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
}

// TestHostKeyAlgorithmsFromKnownHosts: the server has ECDSA and ed25519
// keys; the client's default preference would pick ECDSA, which known_hosts
// does not have. Restricting the algorithms to the known ones makes the
// connection use ed25519 instead of failing as a changed key.
func TestHostKeyAlgorithmsFromKnownHosts(t *testing.T) {
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "id")
	clientKey := writeOpenSSHKey(t, keyPath, "")
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecSigner, _ := ssh.NewSignerFromKey(ecKey)
	edSigner := newEd25519Signer(t)
	srv := newTestServer(t, clientKey.PublicKey(), ecSigner, edSigner)
	addr := srv.listen()
	kh := filepath.Join(dir, "known_hosts")
	appendFile(t, kh, knownHostsLine(addr, edSigner.PublicKey()))
	dial(t, Config{User: "u", Identities: []string{keyPath}, KnownHosts: kh}, hostOf(t, "n1", addr))
}

func TestDialFailures(t *testing.T) {
	e := newEnv(t)
	good := e.srv.listen()
	e.trust(t, good)
	hung := hangServer(t)
	e.trust(t, hung)

	otherKey := filepath.Join(e.dir, "other")
	writeOpenSSHKey(t, otherKey, "")

	for _, tc := range []struct {
		name    string
		addr    string
		mod     func(*Config)
		want    error
		wantMsg string
	}{
		{"refused", closedAddr(t), nil, ErrUnreachable, "unreachable"},
		{"hung handshake", hung, func(c *Config) { c.HandshakeTimeout = 300 * time.Millisecond }, ErrHandshakeTimeout, "handshake timed out"},
		{"wrong key", good, func(c *Config) { c.Identities = []string{otherKey} }, ErrAuth, "authentication failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := e.config()
			if tc.mod != nil {
				tc.mod(&cfg)
			}
			d, err := NewDialer(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_, err = d.Dial(ctx, hostOf(t, "n1", tc.addr))
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			mustContain(t, err.Error(), "node n1 ("+tc.addr+")", tc.wantMsg)
			if strings.Contains(err.Error(), "PRIVATE KEY") || strings.Contains(err.Error(), "AAAA") {
				t.Errorf("error leaks key material: %v", err)
			}
		})
	}

	t.Run("canceled", func(t *testing.T) {
		d, err := NewDialer(e.config())
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(200*time.Millisecond, cancel)
		_, err = d.Dial(ctx, hostOf(t, "n1", hung))
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestIdentities(t *testing.T) {
	dir := t.TempDir()
	t.Run("passphrase-protected", func(t *testing.T) {
		p := filepath.Join(dir, "enc")
		writeOpenSSHKey(t, p, "s3cret")
		_, err := NewDialer(Config{Identities: []string{p}, KnownHosts: filepath.Join(dir, "kh")})
		if err == nil || !strings.Contains(err.Error(), "passphrase-protected") || !strings.Contains(err.Error(), p) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("garbage", func(t *testing.T) {
		p := filepath.Join(dir, "garbage")
		os.WriteFile(p, []byte("-----BEGIN NONSENSE-----\nAAAAsecretish\n"), 0o600)
		_, err := NewDialer(Config{Identities: []string{p}, KnownHosts: filepath.Join(dir, "kh")})
		if err == nil || strings.Contains(err.Error(), "secretish") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("none", func(t *testing.T) {
		t.Setenv("SSH_AUTH_SOCK", "")
		_, err := NewDialer(Config{UseAgent: true, KnownHosts: filepath.Join(dir, "kh")})
		if err == nil || !strings.Contains(err.Error(), "no SSH credentials") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("RSA PEM keypair file", func(t *testing.T) {
		p := filepath.Join(dir, "nks-keypair.pem")
		signer := writeRSAPEMKey(t, p)
		srv := newTestServer(t, signer.PublicKey())
		addr := srv.listen()
		kh := filepath.Join(dir, "kh-rsa")
		appendFile(t, kh, knownHostsLine(addr, srv.hostKeys[0].PublicKey()))
		c := dial(t, Config{User: "u", Identities: []string{p}, KnownHosts: kh}, hostOf(t, "n1", addr))
		if res, err := c.Run(context.Background(), "echo ok", module.RunOpts{}); err != nil || string(res.Stdout) != "ok\n" {
			t.Fatalf("%+v %v", res, err)
		}
	})
}

func TestJumpHost(t *testing.T) {
	e := newEnv(t)
	bastion := newTestServer(t, e.clientKey.PublicKey())
	bastionAddr := bastion.listen()
	var nodes []string
	for range 3 {
		a := e.srv.listen()
		e.trust(t, a)
		nodes = append(nodes, a)
	}
	cfg := e.config()
	cfg.Jump = "jumper@" + bastionAddr

	t.Run("bastion unknown under strict", func(t *testing.T) {
		d, err := NewDialer(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		_, err = d.Dial(context.Background(), hostOf(t, "n0", nodes[0]))
		if !errors.Is(err, ErrHostKeyUnknown) || !strings.Contains(err.Error(), "jump host") {
			t.Fatalf("err = %v", err)
		}
	})

	appendFile(t, e.knownHosts, knownHostsLine(bastionAddr, bastion.hostKeys[0].PublicKey()))
	d, err := NewDialer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var wg sync.WaitGroup
	for i, a := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := d.Dial(context.Background(), hostOf(t, fmt.Sprint("n", i), a))
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			res, err := c.Run(context.Background(), "echo via-jump", module.RunOpts{})
			if err != nil || string(res.Stdout) != "via-jump\n" {
				t.Errorf("%+v %v", res, err)
			}
		}()
	}
	wg.Wait()
	if n := bastion.connCount.Load(); n != 1 {
		t.Errorf("bastion saw %d connections, want 1 shared", n)
	}

	_, err = d.Dial(context.Background(), hostOf(t, "gone", closedAddr(t)))
	if !errors.Is(err, ErrUnreachable) {
		t.Errorf("unreachable through jump: %v", err)
	}
}

func TestReconnect(t *testing.T) {
	e, c := connectedEnv(t, "")
	addr := c.addr
	e.srv.stop() // the node reboots

	if _, err := c.Run(context.Background(), "true", module.RunOpts{Timeout: 5 * time.Second}); !errors.Is(err, ErrConnectionLost) {
		t.Fatalf("run on a stopped node: %v", err)
	}
	time.AfterFunc(700*time.Millisecond, func() {
		if err := e.srv.listenAt(addr); err != nil {
			t.Error(err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.Reconnect(ctx); err != nil {
		t.Fatal(err)
	}
	if res, err := c.Run(ctx, "echo back", module.RunOpts{}); err != nil || string(res.Stdout) != "back\n" {
		t.Fatalf("%+v %v", res, err)
	}

	// Giving up when the context ends says why.
	e.srv.stop()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 600*time.Millisecond)
	defer cancel2()
	err := c.Reconnect(ctx2)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("err = %v", err)
	}
}

// freezeProxy forwards TCP to target until frozen, then silently stops
// forwarding (a peer that vanished without a FIN).
type freezeProxy struct {
	frozen atomic.Bool
	addr   string
}

func newFreezeProxy(t *testing.T, target string) *freezeProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &freezeProxy{addr: ln.Addr().String()}
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	pipe := func(dst, src net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if err != nil {
				dst.Close()
				return
			}
			if p.frozen.Load() {
				continue // dropped on the floor
			}
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, u)
			mu.Unlock()
			go pipe(u, c)
			go pipe(c, u)
		}
	}()
	return p
}

func TestKeepaliveDetectsDeadPeer(t *testing.T) {
	e := newEnv(t)
	target := e.srv.listen()
	p := newFreezeProxy(t, target)
	e.trust(t, p.addr)
	cfg := e.config()
	// A peer is dropped after 3 intervals without an answer: long enough
	// that a live peer on a loaded machine (race detector, other packages'
	// tests) always answers in time.
	cfg.Keepalive = 500 * time.Millisecond
	c := dial(t, cfg, hostOf(t, "n1", p.addr))
	if _, err := c.Run(context.Background(), "true", module.RunOpts{}); err != nil {
		t.Fatal(err)
	}
	p.frozen.Store(true)
	_, err := c.Run(context.Background(), "sleep 60", module.RunOpts{Timeout: time.Minute})
	if !errors.Is(err, ErrConnectionLost) {
		t.Fatalf("err = %v, want connection lost", err)
	}
}

// TestNodeTalksFirst: a node may send global requests (OpenSSH sends
// hostkeys-00 after login) and open channels to the client. nksrun's client
// answers the requests with false and refuses the channels, and the
// connection goes on working.
func TestNodeTalksFirst(t *testing.T) {
	e := newEnv(t)
	type outcome struct {
		replied, ok bool
		reqErr      error
		chanErr     error
	}
	got := make(chan outcome, 1)
	e.srv.onConn = func(sc *ssh.ServerConn) {
		var o outcome
		o.ok, _, o.reqErr = sc.SendRequest("probe@nksrun.test", true, nil)
		o.replied = o.reqErr == nil
		if _, _, err := sc.SendRequest("hostkeys-00@openssh.com", false, nil); err != nil {
			o.reqErr = err
		}
		ch, _, err := sc.OpenChannel("forwarded-tcpip", nil)
		if err == nil {
			ch.Close()
		}
		o.chanErr = err
		got <- o
	}
	addr := e.srv.listen()
	e.trust(t, addr)
	c := dial(t, e.config(), hostOf(t, "n1", addr))
	var o outcome
	select {
	case o = <-got:
	case <-time.After(30 * time.Second):
		t.Fatal("the client never answered the node's request or channel")
	}
	if !o.replied || o.ok || o.reqErr != nil {
		t.Errorf("global request: replied %v, ok %v, err %v; want a reply of false", o.replied, o.ok, o.reqErr)
	}
	var oce *ssh.OpenChannelError
	if !errors.As(o.chanErr, &oce) || oce.Reason != ssh.UnknownChannelType {
		t.Errorf("channel the node opened: %v; want it refused as an unknown channel type", o.chanErr)
	}
	res, err := c.Run(context.Background(), "echo still-working", module.RunOpts{})
	if err != nil || strings.TrimSpace(string(res.Stdout)) != "still-working" {
		t.Fatalf("after the node talked first: %q, %v", res.Stdout, err)
	}
}

// TestKeepaliveOneLoop: one loop probes every connection of a Dialer; live
// peers stay connected across many intervals, closed connections leave the
// loop at once (nothing keeps their memory), and the loop ends with the last.
func TestKeepaliveOneLoop(t *testing.T) {
	e := newEnv(t)
	addr := e.srv.listen()
	e.trust(t, addr)
	cfg := e.config()
	// 3 intervals (0.9 s) for a live peer to answer, even on a loaded
	// machine.
	cfg.Keepalive = 300 * time.Millisecond
	d, err := NewDialer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	var conns []*Conn
	for i := range 3 {
		c, err := d.Dial(context.Background(), hostOf(t, fmt.Sprintf("n%d", i), addr))
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	tracked := func() (int, bool) {
		d.keepalive.mu.Lock()
		defer d.keepalive.mu.Unlock()
		return len(d.keepalive.clients), d.keepalive.running
	}
	if n, running := tracked(); n != 3 || !running {
		t.Fatalf("after 3 dials: %d tracked, loop running %v", n, running)
	}
	time.Sleep(10 * cfg.Keepalive) // many probe rounds, answered
	for _, c := range conns {
		if _, err := c.Run(context.Background(), "true", module.RunOpts{}); err != nil {
			t.Fatalf("a live peer was dropped by keepalives: %v", err)
		}
	}
	conns[0].Close()
	conns[1].Close()
	if n, _ := tracked(); n != 1 {
		t.Fatalf("after closing 2 of 3: %d tracked, want 1", n)
	}
	conns[2].Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, running := tracked()
		if n == 0 && !running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after closing all: %d tracked, loop running %v", n, running)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestParseJump(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Host
		err  bool
	}{
		{"bastion", Host{Address: "bastion", User: "me", Port: 22}, false},
		{"ops@bastion", Host{Address: "bastion", User: "ops", Port: 22}, false},
		{"ops@10.0.0.1:2222", Host{Address: "10.0.0.1", User: "ops", Port: 2222}, false},
		{"[fd00::1]:2200", Host{Address: "fd00::1", User: "me", Port: 2200}, false},
		{"[fd00::1]", Host{Address: "fd00::1", User: "me", Port: 22}, false},
		{"ops@host:notaport", Host{}, true},
		{"ops@", Host{}, true},
	} {
		got, err := parseJump(tc.in, "me", 22)
		if (err != nil) != tc.err {
			t.Errorf("%q: err %v", tc.in, err)
			continue
		}
		got.Name = ""
		if !tc.err && got != tc.want {
			t.Errorf("%q: got %+v want %+v", tc.in, got, tc.want)
		}
	}
}

func TestParseHostKeyPolicy(t *testing.T) {
	for in, want := range map[string]HostKeyPolicy{"": PolicyStrict, "strict": PolicyStrict, "accept-new": PolicyAcceptNew, "insecure": PolicyInsecure} {
		if got, err := ParseHostKeyPolicy(in); err != nil || got != want {
			t.Errorf("%q: %v %v", in, got, err)
		}
	}
	if _, err := ParseHostKeyPolicy("yes"); err == nil {
		t.Error("want error for yes")
	}
}

// TestKnownHostsLineFormat: what accept-new writes is what OpenSSH writes
// (non-standard ports bracketed), so ssh and ssh-keygen -R understand it.
func TestKnownHostsLineFormat(t *testing.T) {
	k := newEd25519Signer(t).PublicKey()
	if got := knownhosts.Line([]string{"10.0.0.5:22"}, k); !strings.HasPrefix(got, "10.0.0.5 ssh-ed25519 ") {
		t.Errorf("port 22: %q", got)
	}
	if got := knownhosts.Line([]string{"10.0.0.5:2222"}, k); !strings.HasPrefix(got, "[10.0.0.5]:2222 ssh-ed25519 ") {
		t.Errorf("port 2222: %q", got)
	}
}

func BenchmarkDialRun(b *testing.B) {
	e := newEnv(b)
	addr := e.srv.listen()
	e.trust(b, addr)
	d, err := NewDialer(e.config())
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	h := hostOf(b, "n1", addr)
	ctx := context.Background()
	for b.Loop() {
		c, err := d.Dial(ctx, h)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Run(ctx, "true", module.RunOpts{}); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}
