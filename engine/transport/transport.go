// Package transport is nksrun's SSH layer: one connection per node for the
// whole run, many `sh -c` sessions over it, host keys verified against
// known_hosts, every wait bounded (dial, handshake, command) so a broken node
// fails alone and never holds up the others.
//
// A Dialer is built once per run from Config (keys parsed once, known_hosts
// loaded once, one ssh-agent connection, one shared bastion connection); each
// node gets a Conn, which implements module.Runner and module.Reconnector.
//
// Three things keep a run safe at scale and when stopped:
//   - Connection admission (admission.go): handshakes are admitted through
//     an adaptive (AIMD) window shared by the run, separately from the
//     engine's forks; the handshake timeout measures the handshake, not the
//     queue; timeouts and resets are retried with backoff, "no answer at
//     all" is not.
//   - Output cap (output.go): one command's stdout+stderr are kept up to
//     Config.MaxOutput / RunOpts.MaxOutput; past it the command fails with
//     *module.OutputLimitError.
//   - Stopping reaches the node (wrapCommand, endRemote): a command that is
//     cancelled, times out or goes over the cap has its process group
//     killed on the node from a second session, through sudo when it ran
//     under sudo, before Run returns.
package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"nksrun/engine/module"
)

// HostKeyPolicy says what to do with a host key that is not in known_hosts.
// A key that differs from the known one is refused under every policy but
// insecure.
type HostKeyPolicy string

const (
	// PolicyStrict refuses unknown hosts (the default).
	PolicyStrict HostKeyPolicy = "strict"
	// PolicyAcceptNew trusts an unknown host on first use and records its key.
	PolicyAcceptNew HostKeyPolicy = "accept-new"
	// PolicyInsecure accepts any key and records nothing.
	PolicyInsecure HostKeyPolicy = "insecure"
)

// ParseHostKeyPolicy checks a --host-key-policy value ("" means strict).
func ParseHostKeyPolicy(s string) (HostKeyPolicy, error) {
	switch p := HostKeyPolicy(s); p {
	case "":
		return PolicyStrict, nil
	case PolicyStrict, PolicyAcceptNew, PolicyInsecure:
		return p, nil
	}
	return "", fmt.Errorf("unknown host key policy %q (want strict, accept-new or insecure)", s)
}

// Defaults for the zero values of Config.
const (
	DefaultPort             = 22
	DefaultDialTimeout      = 10 * time.Second
	DefaultHandshakeTimeout = 15 * time.Second
	DefaultCommandTimeout   = 10 * time.Minute
	DefaultKeepalive        = 15 * time.Second
	// DefaultMaxSessions stays under OpenSSH's default MaxSessions (10) so
	// a burst of concurrent Runs queues here instead of being refused there.
	DefaultMaxSessions = 8
	// DefaultHandshakeAttempts: a first try and two retries.
	DefaultHandshakeAttempts = 3
)

// Config is the run-wide SSH configuration.
type Config struct {
	// User and Port are used for hosts that do not set their own.
	User string
	Port int
	// Identities are private key files (OpenSSH or PEM, e.g. an NKS keypair
	// .pem). Passphrase-protected files are refused: load them into ssh-agent.
	Identities []string
	// UseAgent adds the keys of the ssh-agent at $SSH_AUTH_SOCK.
	UseAgent bool
	// KnownHosts is the known_hosts file (default ~/.ssh/known_hosts).
	KnownHosts string
	// Policy is the host key policy (default strict).
	Policy HostKeyPolicy
	// Jump is a bastion, "[user@]host[:port]"; every node connection is
	// tunnelled through one shared connection to it.
	Jump string

	DialTimeout      time.Duration // TCP connect (default 10s)
	HandshakeTimeout time.Duration // SSH handshake incl. auth (default 15s)
	CommandTimeout   time.Duration // one Run, unless RunOpts.Timeout (default 10m)
	// Keepalive is the interval of keepalive@openssh.com probes that detect
	// a dead peer during long runs (default 15s, negative disables). A peer
	// that does not answer within 3 intervals is dropped.
	Keepalive time.Duration
	// MaxSessions bounds concurrent sessions on one connection (default 8).
	MaxSessions int
	// RootShell keeps one root shell open per connection (one sudo per node
	// per run) and runs the connection's sudo commands through it, one at a
	// time, each still its own `sh -c`; see rootshell.go. For runs that make
	// more than one sudo exec per node (apply: its read, then its change).
	// The shell takes one of the MaxSessions; it needs at least 2.
	RootShell bool
	// MaxOutput caps the stdout+stderr kept for one command (default
	// module.DefaultMaxOutput, 16 MiB; RunOpts.MaxOutput overrides it per
	// command). A command going over fails with *module.OutputLimitError
	// and is ended on the node.
	MaxOutput int64
	// MaxHandshakes is the ceiling of the handshake admission window
	// (default 64); the window itself adapts between 2 and this.
	MaxHandshakes int
	// HandshakeAttempts bounds the attempts for a node whose handshake
	// times out or is reset (default 3); refused connections are not
	// retried.
	HandshakeAttempts int

	// Warn receives warnings (the insecure-policy warning), without a
	// "WARNING:" prefix; default: stderr with the prefix.
	Warn func(string)
}

// Host is one node to connect to. Empty User/Port fall back to Config.
type Host struct {
	Name    string // inventory name, used in messages
	Address string // IP or DNS name
	User    string
	Port    int
}

// Sentinel errors, matched with errors.Is. Every error returned by this
// package is an *Error naming the node, wrapping one of these where it applies.
var (
	ErrUnreachable      = errors.New("unreachable")
	ErrHandshakeTimeout = errors.New("ssh handshake timed out")
	ErrAuth             = errors.New("ssh authentication failed")
	ErrHostKeyUnknown   = errors.New("host key unknown")
	ErrHostKeyChanged   = errors.New("host key CHANGED")
	ErrHostKeyRevoked   = errors.New("host key revoked")
	ErrSudoPassword     = errors.New("sudo requires a password (nksrun needs passwordless sudo: NOPASSWD)")
	ErrSudoTTY          = errors.New("sudo requires a tty (sudoers has requiretty; nksrun needs `Defaults !requiretty` for its user)")
	ErrCommandTimeout   = module.ErrCommandTimeout // the same value, so callers need not know the runner
	ErrConnectionLost   = errors.New("connection lost")
	ErrClosed           = errors.New("connection closed")
	// ErrNoAnswer (with ErrUnreachable): nothing answered at the address
	// (connection refused, no route, no TCP connection within the dial
	// timeout), as opposed to ErrHandshakeTimeout: TCP was accepted but
	// SSH was too slow.
	ErrNoAnswer = errors.New("no answer at all")
	// errHandshakeReset: the server hung up during the handshake
	// (MaxStartups, still booting); retried like a timeout.
	errHandshakeReset = errors.New("the SSH server closed the connection during the handshake")
)

// Error is a failure on one node. It is the single place where node context
// is added, so messages read "node NAME (ADDR): what happened".
type Error struct {
	Node string
	Addr string
	Err  error
}

func (e *Error) Error() string {
	switch {
	case e.Node == "" || e.Node == e.Addr:
		return fmt.Sprintf("node %s: %v", e.Addr, e.Err)
	case e.Addr == "":
		return fmt.Sprintf("node %s: %v", e.Node, e.Err)
	}
	return fmt.Sprintf("node %s (%s): %v", e.Node, e.Addr, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Unreachable tells the engine that the node itself could not be reached or
// was lost (reported as "unreachable"), as opposed to a command failing on it.
func (e *Error) Unreachable() bool {
	for _, s := range []error{ErrUnreachable, ErrHandshakeTimeout, ErrAuth, ErrHostKeyUnknown, ErrHostKeyChanged, ErrHostKeyRevoked, ErrConnectionLost, ErrClosed} {
		if errors.Is(e.Err, s) {
			return true
		}
	}
	return false
}

// Dialer holds what every connection of a run shares. It is safe for
// concurrent use.
type Dialer struct {
	cfg      Config
	auth     *authenticator
	hostKeys *hostKeyDB

	admit   *admission
	retries atomic.Int64
	// dialHook replaces the TCP dial in tests (a host that never answers).
	dialHook func(ctx context.Context, addr string) (net.Conn, error)

	jumpHost *Host // nil without a bastion
	jumpMu   sync.Mutex
	jump     *ssh.Client // lazily dialled, replaced when it dies

	keepalive keepalives
}

// NewDialer validates cfg, fills defaults, reads the identities and
// known_hosts once, and connects to the agent.
func NewDialer(cfg Config) (*Dialer, error) {
	var err error
	if cfg.Policy, err = ParseHostKeyPolicy(string(cfg.Policy)); err != nil {
		return nil, err
	}
	if cfg.Port == 0 {
		cfg.Port = DefaultPort
	}
	if cfg.User == "" {
		if u, err := user.Current(); err == nil {
			cfg.User = u.Username
		}
	}
	if cfg.KnownHosts == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return nil, fmt.Errorf("known_hosts: no --known-hosts given and no home directory: %w", err)
		}
		cfg.KnownHosts = filepath.Join(home, ".ssh", "known_hosts")
	}
	cfg.KnownHosts = expandHome(cfg.KnownHosts)
	setDefault(&cfg.DialTimeout, DefaultDialTimeout)
	setDefault(&cfg.HandshakeTimeout, DefaultHandshakeTimeout)
	setDefault(&cfg.CommandTimeout, DefaultCommandTimeout)
	setDefault(&cfg.Keepalive, DefaultKeepalive)
	if cfg.MaxOutput <= 0 {
		cfg.MaxOutput = module.DefaultMaxOutput
	}
	if cfg.MaxHandshakes <= 0 {
		cfg.MaxHandshakes = DefaultMaxHandshakes
	}
	if cfg.HandshakeAttempts <= 0 {
		cfg.HandshakeAttempts = DefaultHandshakeAttempts
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = DefaultMaxSessions
	}
	if cfg.Warn == nil {
		cfg.Warn = func(s string) { fmt.Fprintln(os.Stderr, "WARNING: "+s) }
	}

	d := &Dialer{cfg: cfg, admit: newAdmission(cfg.MaxHandshakes, cfg.HandshakeTimeout)}
	if cfg.Jump != "" {
		jh, err := parseJump(cfg.Jump, cfg.User, cfg.Port)
		if err != nil {
			return nil, err
		}
		d.jumpHost = &jh
	}
	if d.auth, err = newAuthenticator(cfg.Identities, cfg.UseAgent); err != nil {
		return nil, err
	}
	if d.hostKeys, err = newHostKeyDB(cfg.KnownHosts, cfg.Policy); err != nil {
		d.auth.close()
		return nil, err
	}
	if cfg.Policy == PolicyInsecure {
		// Said once per run, loudly: this policy turns off the only thing
		// that stops a man in the middle from receiving our sudo commands.
		cfg.Warn("--host-key-policy insecure: SSH host keys are NOT verified; " +
			"any machine answering at a node's address will be trusted with root commands. " +
			"Use only on a throwaway test network.")
	}
	return d, nil
}

func setDefault(d *time.Duration, def time.Duration) {
	if *d == 0 {
		*d = def
	}
}

// Close releases the agent connection and the bastion connection. Conns
// dialled through the bastion stop working.
func (d *Dialer) Close() error {
	d.jumpMu.Lock()
	if d.jump != nil {
		d.jump.Close()
		d.jump = nil
	}
	d.jumpMu.Unlock()
	return d.auth.close()
}

// Dial opens the node's connection. It returns an *Error wrapping
// ErrUnreachable, ErrHandshakeTimeout, ErrAuth, ErrHostKey* or the context's
// error.
func (d *Dialer) Dial(ctx context.Context, h Host) (*Conn, error) {
	h = d.fill(h)
	if h.Address == "" {
		// net.Dial would quietly connect to localhost.
		return nil, &Error{Node: h.Name, Err: errors.New("no address")}
	}
	oneShot := d.cfg.MaxSessions
	if d.rootShell() {
		oneShot-- // the root shell's session
	}
	c := &Conn{
		d:       d,
		host:    h,
		addr:    net.JoinHostPort(h.Address, strconv.Itoa(h.Port)),
		sem:     make(chan struct{}, oneShot),
		killSem: make(chan struct{}, 2),
	}
	client, err := d.connect(ctx, h, c.addr, d.cfg.HandshakeAttempts, true)
	if err != nil {
		return nil, err
	}
	c.client = client
	return c, nil
}

func (d *Dialer) fill(h Host) Host {
	if h.User == "" {
		h.User = d.cfg.User
	}
	if h.Port == 0 {
		h.Port = d.cfg.Port
	}
	if h.Name == "" {
		h.Name = h.Address
	}
	return h
}

// connect dials (directly or through the bastion), verifies and
// authenticates, and starts keepalives, under the Dialer's admission. A
// handshake that timed out or was reset is retried with backoff, up to
// attempts in all; "no answer at all" (refused, no route, no TCP within the
// dial timeout) is not: the node is not there. learn: see attempt. Errors
// are *Error for h.
func (d *Dialer) connect(ctx context.Context, h Host, addr string, attempts int, learn bool) (*ssh.Client, error) {
	wrap := func(err error) error { return &Error{Node: h.Name, Addr: addr, Err: err} }
	for n := 1; ; n++ {
		client, err, retry := d.attempt(ctx, h, addr, learn)
		switch {
		case err == nil:
			return client, nil
		case !retry:
			if errors.Is(err, ErrNoAnswer) {
				return nil, wrap(fmt.Errorf("%w; not retried", err))
			}
			return nil, wrap(err)
		case n >= attempts || ctx.Err() != nil:
			if n == 1 {
				return nil, wrap(err)
			}
			return nil, wrap(fmt.Errorf("%w; gave up after %d attempts (%d retries with backoff)", err, n, n-1))
		}
		d.retries.Add(1)
		// Jittered, so that handshakes that failed together do not all
		// come back together.
		wait := time.Duration(float64(retryBackoff<<(n-1)) * (0.5 + rand.Float64()))
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, wrap(fmt.Errorf("%w; canceled before attempt %d: %w", err, n+1, context.Cause(ctx)))
		}
	}
}

// retryBackoff is the wait before the first retry; it doubles per retry.
const retryBackoff = 500 * time.Millisecond

// attempt is one admitted dial and handshake. retry says whether a
// failure is worth another attempt (a handshake timeout or reset: a slow
// or busy server, not an absent one) and has fed the admission window.
//
// learn says whether the outcome feeds the window (a handshake's time, a
// timeout or reset as congestion). A first connection does; the redials of one node that is known to be rebooting
// or recovering (Reconnect, a dead connection found by Run) do not: a node
// still booting is slow on its own, and must not shrink everyone's window.
func (d *Dialer) attempt(ctx context.Context, h Host, addr string, learn bool) (_ *ssh.Client, _ error, retry bool) {
	s, err := d.admit.acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("canceled while waiting to connect: %w", context.Cause(ctx)), false
	}
	type dialed struct {
		c   net.Conn
		err error
	}
	ch := make(chan dialed, 1)
	go func() {
		c, err := d.dial(ctx, addr)
		ch <- dialed{c, err}
	}()
	var r dialed
	grace := time.NewTimer(dialGrace)
	select {
	case r = <-ch:
		grace.Stop()
	case <-grace.C:
		// A host that answers accepts TCP within milliseconds; one that
		// does not (powered off, filtered) would hold its slot for the
		// whole dial timeout. Lend the slot out meanwhile and queue again
		// once TCP is up.
		s.neutral()
		s = nil
		if r = <-ch; r.err == nil {
			if s, err = d.admit.acquire(ctx); err != nil {
				r.c.Close()
				return nil, fmt.Errorf("canceled while waiting to connect: %w", context.Cause(ctx)), false
			}
		}
	}
	if r.err != nil {
		if s != nil {
			s.neutral()
		}
		return nil, r.err, false
	}
	raw := r.c
	start := time.Now()
	client, err := d.handshake(ctx, raw, addr, h.User)
	switch {
	case err == nil:
		if learn {
			s.succeeded(time.Since(start))
		} else {
			s.neutral()
		}
		d.startKeepalive(client)
		return client, nil, false
	case ctx.Err() == nil && retryable(err):
		if learn {
			s.congested()
		} else {
			s.neutral()
		}
		return nil, err, true
	}
	s.neutral()
	return nil, err, false
}

// retryable says whether a failed handshake is worth another attempt: a
// server that accepted TCP but was too slow (timeout) or hung up (reset:
// MaxStartups, booting) may well answer the next time. Nothing answering,
// authentication and host key failures will not change by retrying.
func retryable(err error) bool {
	return errors.Is(err, ErrHandshakeTimeout) || errors.Is(err, errHandshakeReset)
}

// dialGrace is how long a TCP dial may hold an admission slot.
const dialGrace = time.Second

// dial opens the TCP connection (or the bastion channel) to addr. Errors
// are classified: ErrNoAnswer when nothing answered.
func (d *Dialer) dial(ctx context.Context, addr string) (net.Conn, error) {
	if d.dialHook != nil {
		return d.dialHook(ctx, addr)
	}
	if d.jumpHost != nil {
		return d.dialViaJump(ctx, addr)
	}
	nd := net.Dialer{Timeout: d.cfg.DialTimeout, KeepAlive: 30 * time.Second}
	raw, err := nd.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, dialError(ctx, err, d.cfg.DialTimeout)
	}
	return raw, nil
}

// AdmissionStats reports the handshake admission's state now.
func (d *Dialer) AdmissionStats() AdmissionStats {
	a := d.admit
	a.mu.Lock()
	defer a.mu.Unlock()
	return AdmissionStats{Window: a.ctl.window(), InFlight: a.inflight, Queued: len(a.queue), Retries: d.retries.Load()}
}

// dialError classifies a failed TCP connect: nothing answered.
func dialError(ctx context.Context, err error, limit time.Duration) error {
	if ctx.Err() != nil {
		return fmt.Errorf("dial canceled: %w", context.Cause(ctx))
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("%w: %w: no TCP connection within %v (%v)", ErrUnreachable, ErrNoAnswer, limit, err)
	}
	return fmt.Errorf("%w: %w (%v)", ErrUnreachable, ErrNoAnswer, err)
}

// handshake runs the SSH handshake on raw under HandshakeTimeout and ctx.
// raw is closed on failure.
func (d *Dialer) handshake(ctx context.Context, raw net.Conn, addr, user string) (*ssh.Client, error) {
	limit := d.cfg.HandshakeTimeout
	// The deadline bounds every read and write of the handshake on a TCP
	// conn; the timer and the context hook close the conn, which also covers
	// tunnelled conns that only support read deadlines.
	_ = raw.SetDeadline(time.Now().Add(limit))
	var timedOut atomic.Bool
	timer := time.AfterFunc(limit, func() { timedOut.Store(true); raw.Close() })
	stopCtx := context.AfterFunc(ctx, func() { raw.Close() })

	// The callback's own error is kept so that it reaches the caller as
	// built (typed, with the known_hosts details), not re-parsed from text.
	var (
		hkMu  sync.Mutex // the callback runs on the handshake's goroutine
		hkErr error
	)
	cfg := &ssh.ClientConfig{
		User: user,
		Auth: d.auth.methods(),
		HostKeyCallback: func(hostname string, remote net.Addr, key ssh.PublicKey) error {
			err := d.hostKeys.verify(hostname, remote, key)
			hkMu.Lock()
			hkErr = err
			hkMu.Unlock()
			return err
		},
		HostKeyAlgorithms: d.hostKeys.algorithms(addr, raw.RemoteAddr()),
		ClientVersion:     "SSH-2.0-nksrun",
	}
	sc, chans, reqs, err := ssh.NewClientConn(raw, addr, cfg)
	timerStopped := timer.Stop()
	ctxStopped := stopCtx()
	if err == nil && (!timerStopped || !ctxStopped) {
		// The limit hit just as the handshake finished: the conn is closed.
		sc.Close()
		err = net.ErrClosed
	}
	if err != nil {
		raw.Close()
		hkMu.Lock()
		hkErr := hkErr
		hkMu.Unlock()
		switch {
		case hkErr != nil:
			return nil, hkErr
		case ctx.Err() != nil:
			return nil, fmt.Errorf("ssh handshake canceled: %w", context.Cause(ctx))
		case timedOut.Load() || isTimeout(err):
			return nil, fmt.Errorf("%w after %v (the host accepts TCP but its SSH server is too slow or does not answer)", ErrHandshakeTimeout, limit)
		case strings.Contains(err.Error(), "unable to authenticate"):
			return nil, fmt.Errorf("%w as user %q with %s: %v", ErrAuth, user, d.auth.describe(), err)
		case errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET):
			// sshd hung up before the handshake finished (MaxStartups,
			// tcp wrappers, still booting): the node is not usable yet.
			return nil, fmt.Errorf("%w: %w (%v)", ErrUnreachable, errHandshakeReset, err)
		}
		return nil, err
	}
	_ = raw.SetDeadline(time.Time{})
	return newClient(sc, chans, reqs), nil
}

// newClient is ssh.NewClient with one goroutine instead of three.
// ssh.NewClient serves the node's channel opens and global requests from
// a goroutine each and waits for the end in a third, for port forwarding,
// which nksrun never asks for. Here one goroutine refuses every channel the
// node opens and answers every global request (OpenSSH's hostkeys-00, its
// keepalives) with false, as ssh.NewClient does; NewSession, Dial and Wait
// need nothing more. Measured at 1,000 held connections (apply between its
// plan and its change), where every goroutine's stack counts.
func newClient(sc ssh.Conn, chans <-chan ssh.NewChannel, reqs <-chan *ssh.Request) *ssh.Client {
	go serveClient(chans, reqs)
	return &ssh.Client{Conn: sc}
}

// serveClient answers the node until the connection ends (both channels
// are closed then).
func serveClient(chans <-chan ssh.NewChannel, reqs <-chan *ssh.Request) {
	for chans != nil || reqs != nil {
		select {
		case r, ok := <-reqs:
			if !ok {
				reqs = nil
				continue
			}
			_ = r.Reply(false, nil) // a no-op where no reply is wanted
		case ch, ok := <-chans:
			if !ok {
				chans = nil
				continue
			}
			_ = ch.Reject(ssh.UnknownChannelType, "nksrun opens no channels for the node: "+ch.ChannelType())
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// startKeepalive registers client with the Dialer's keepalive loop.
func (d *Dialer) startKeepalive(client *ssh.Client) { d.keepalive.add(client, d.cfg.Keepalive) }

// rootShell says whether connections keep a root shell (Config.RootShell,
// where MaxSessions leaves room for it).
func (d *Dialer) rootShell() bool { return d.cfg.RootShell && d.cfg.MaxSessions >= 2 }

// closeClient closes a client and takes it off the keepalive loop.
func (d *Dialer) closeClient(client *ssh.Client) error {
	d.keepalive.remove(client)
	return client.Close()
}

// keepalives probes every live connection of a Dialer from one loop, every
// Keepalive interval, and closes a client whose peer stops answering (no
// reply within 3 intervals), so sessions on a dead node fail with
// ErrConnectionLost instead of waiting for the command timeout. One loop
// for all: two goroutines per connection held about 16 KB each, 16 MB at
// 1,000 nodes. Probes themselves are short-lived goroutines.
type keepalives struct {
	mu      sync.Mutex
	clients map[*ssh.Client]bool // true while a probe is out
	running bool
}

func (k *keepalives) add(c *ssh.Client, interval time.Duration) {
	if interval <= 0 {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.clients == nil {
		k.clients = map[*ssh.Client]bool{}
	}
	k.clients[c] = false
	if !k.running {
		k.running = true
		go k.loop(interval)
	}
}

func (k *keepalives) remove(c *ssh.Client) {
	k.mu.Lock()
	delete(k.clients, c)
	k.mu.Unlock()
}

// loop ends when no client is left (add starts it again).
func (k *keepalives) loop(interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for range t.C {
		k.mu.Lock()
		if len(k.clients) == 0 {
			k.running = false
			k.mu.Unlock()
			return
		}
		var due []*ssh.Client
		for c, out := range k.clients {
			if !out {
				k.clients[c] = true
				due = append(due, c)
			}
		}
		k.mu.Unlock()
		for _, c := range due {
			go k.probe(c, interval)
		}
	}
}

func (k *keepalives) probe(c *ssh.Client, interval time.Duration) {
	reply := make(chan error, 1)
	go func() {
		// OpenSSH answers "failure" to this request; any answer proves
		// the peer alive. A closed client answers at once with an error.
		_, _, err := c.SendRequest("keepalive@openssh.com", true, nil)
		reply <- err
	}()
	wait := time.NewTimer(3 * interval)
	defer wait.Stop()
	alive := false
	select {
	case err := <-reply:
		alive = err == nil
	case <-wait.C:
	}
	k.mu.Lock()
	if _, ok := k.clients[c]; ok {
		if alive {
			k.clients[c] = false
		} else {
			delete(k.clients, c)
		}
	}
	k.mu.Unlock()
	if !alive {
		c.Close()
	}
}

// parseJump parses "[user@]host[:port]".
func parseJump(s, defUser string, defPort int) (Host, error) {
	h := Host{User: defUser, Port: defPort}
	rest := s
	if i := strings.LastIndex(rest, "@"); i >= 0 {
		h.User, rest = rest[:i], rest[i+1:]
	}
	if host, port, err := net.SplitHostPort(rest); err == nil {
		p, err := strconv.Atoi(port)
		if err != nil || p <= 0 || p > 65535 {
			return Host{}, fmt.Errorf("jump host %q: bad port %q", s, port)
		}
		h.Address, h.Port = host, p
	} else {
		h.Address = strings.TrimSuffix(strings.TrimPrefix(rest, "["), "]")
	}
	if h.Address == "" || h.User == "" {
		return Host{}, fmt.Errorf("jump host %q: want [user@]host[:port]", s)
	}
	h.Name = "jump host " + h.Address
	return h, nil
}

// dialViaJump opens a direct-tcpip channel to addr through the shared
// bastion connection, dialling the bastion first if needed.
func (d *Dialer) dialViaJump(ctx context.Context, addr string) (net.Conn, error) {
	jc, err := d.jumpClient(ctx)
	if err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, d.cfg.DialTimeout)
	defer cancel()
	conn, err := jc.DialContext(dctx, "tcp", addr)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("dial canceled: %w", context.Cause(ctx))
		}
		if dctx.Err() != nil {
			return nil, fmt.Errorf("%w: %w: no connection through %s within %v", ErrUnreachable, ErrNoAnswer, d.jumpHost.Name, d.cfg.DialTimeout)
		}
		return nil, fmt.Errorf("%w: %w: through %s: %v", ErrUnreachable, ErrNoAnswer, d.jumpHost.Name, err)
	}
	return conn, nil
}

// jumpClient returns the bastion connection, dialling it once; if it died
// (keepalive or network) the next caller dials a new one.
func (d *Dialer) jumpClient(ctx context.Context) (*ssh.Client, error) {
	d.jumpMu.Lock()
	defer d.jumpMu.Unlock()
	if d.jump != nil {
		return d.jump, nil
	}
	jh := *d.jumpHost
	addr := net.JoinHostPort(jh.Address, strconv.Itoa(jh.Port))
	nd := net.Dialer{Timeout: d.cfg.DialTimeout, KeepAlive: 30 * time.Second}
	raw, err := nd.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s (%s): %w", jh.Name, addr, dialError(ctx, err, d.cfg.DialTimeout))
	}
	client, err := d.handshake(ctx, raw, addr, jh.User)
	if err != nil {
		return nil, fmt.Errorf("%s (%s): %w", jh.Name, addr, err)
	}
	d.startKeepalive(client)
	d.jump = client
	go func() {
		client.Wait()
		d.jumpMu.Lock()
		if d.jump == client {
			d.jump = nil
		}
		d.jumpMu.Unlock()
	}()
	return client, nil
}

func expandHome(p string) string {
	if p == "~" || strings.HasPrefix(p, "~/") {
		if home, err := os.UserHomeDir(); err == nil {
			return filepath.Join(home, p[1:])
		}
	}
	return p
}
