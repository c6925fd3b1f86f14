package transport

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// testServer is a real SSH server in the test process: exec requests run
// through /bin/sh as the test's user, direct-tcpip channels are forwarded
// (so it can act as a bastion). No root needed.
type testServer struct {
	t        testing.TB
	config   *ssh.ServerConfig
	hostKeys []ssh.Signer
	env      []string // extra environment for commands (PATH with a fake sudo)
	// keepOrphans makes the server behave like sshd with sudo: neither a
	// closed channel nor a signal request ends the command's processes.
	keepOrphans bool
	// onConn, when set, runs (on its own goroutine) once a connection's
	// handshake is done: a node that talks first.
	onConn func(*ssh.ServerConn)

	mu        sync.Mutex
	listeners []net.Listener
	conns     map[net.Conn]bool

	connCount   atomic.Int64 // accepted SSH connections
	sessions    atomic.Int64 // currently open sessions
	maxSessions atomic.Int64 // high-water mark of sessions
}

func newTestServer(t testing.TB, clientKey ssh.PublicKey, hostKeys ...ssh.Signer) *testServer {
	t.Helper()
	if len(hostKeys) == 0 {
		hostKeys = []ssh.Signer{newEd25519Signer(t)}
	}
	s := &testServer{t: t, hostKeys: hostKeys, conns: map[net.Conn]bool{}}
	s.config = &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
			if string(k.Marshal()) == string(clientKey.Marshal()) {
				return nil, nil
			}
			return nil, errors.New("unknown key")
		},
	}
	for _, k := range hostKeys {
		s.config.AddHostKey(k)
	}
	t.Cleanup(s.close)
	return s
}

// listen adds a listener on 127.0.0.1:0 and returns its address.
func (s *testServer) listen() string {
	s.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		s.t.Fatal(err)
	}
	s.serve(ln)
	return ln.Addr().String()
}

// listenAt re-opens a listener on a given address (for reconnect tests).
func (s *testServer) listenAt(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	s.serve(ln)
	return nil
}

func (s *testServer) serve(ln net.Listener) {
	s.mu.Lock()
	s.listeners = append(s.listeners, ln)
	s.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns[c] = true
			s.mu.Unlock()
			go s.handleConn(c)
		}
	}()
}

// stop closes listeners and every open connection (a node going down).
func (s *testServer) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ln := range s.listeners {
		ln.Close()
	}
	s.listeners = nil
	for c := range s.conns {
		c.Close()
	}
	s.conns = map[net.Conn]bool{}
}

func (s *testServer) close() { s.stop() }

func (s *testServer) handleConn(c net.Conn) {
	defer c.Close()
	sc, chans, reqs, err := ssh.NewServerConn(c, s.config)
	if err != nil {
		return
	}
	defer sc.Close()
	s.connCount.Add(1)
	go ssh.DiscardRequests(reqs) // answers keepalives with "failure", like OpenSSH
	if s.onConn != nil {
		go s.onConn(sc)
	}
	for nc := range chans {
		switch nc.ChannelType() {
		case "session":
			ch, reqs, err := nc.Accept()
			if err != nil {
				continue
			}
			go s.handleSession(ch, reqs)
		case "direct-tcpip":
			go s.handleDirect(nc)
		default:
			nc.Reject(ssh.UnknownChannelType, "no")
		}
	}
}

func (s *testServer) handleDirect(nc ssh.NewChannel) {
	var p struct {
		Host     string
		Port     uint32
		OrigHost string
		OrigPort uint32
	}
	if err := ssh.Unmarshal(nc.ExtraData(), &p); err != nil {
		nc.Reject(ssh.ConnectionFailed, err.Error())
		return
	}
	target, err := net.Dial("tcp", net.JoinHostPort(p.Host, fmt.Sprint(p.Port)))
	if err != nil {
		nc.Reject(ssh.ConnectionFailed, err.Error())
		return
	}
	ch, reqs, err := nc.Accept()
	if err != nil {
		target.Close()
		return
	}
	go ssh.DiscardRequests(reqs)
	go func() { io.Copy(target, ch); target.Close() }()
	io.Copy(ch, target)
	ch.Close()
}

func (s *testServer) handleSession(ch ssh.Channel, reqs <-chan *ssh.Request) {
	n := s.sessions.Add(1)
	for {
		m := s.maxSessions.Load()
		if n <= m || s.maxSessions.CompareAndSwap(m, n) {
			break
		}
	}
	// Count down before closing: the client sees the close and may open
	// the next session at once.
	defer func() { s.sessions.Add(-1); ch.Close() }()

	var cmd *exec.Cmd
	exited := make(chan struct{})
	for {
		select {
		case req, ok := <-reqs:
			if !ok {
				if cmd != nil && !s.keepOrphans {
					killGroup(cmd)
				}
				return
			}
			switch req.Type {
			case "exec":
				if cmd != nil {
					req.Reply(false, nil)
					continue
				}
				var p struct{ Command string }
				if err := ssh.Unmarshal(req.Payload, &p); err != nil {
					req.Reply(false, nil)
					continue
				}
				cmd = exec.Command("/bin/sh", "-c", p.Command)
				cmd.Env = append(os.Environ(), s.env...)
				cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
				stdin, _ := cmd.StdinPipe()
				cmd.Stdout = ch
				cmd.Stderr = ch.Stderr()
				if err := cmd.Start(); err != nil {
					req.Reply(false, nil)
					return
				}
				req.Reply(true, nil)
				go func() {
					// Not waited for by cmd.Wait: a command that exits
					// without reading must not wait for the client's EOF.
					io.Copy(stdin, ch)
					stdin.Close()
				}()
				go func() {
					err := cmd.Wait()
					code := 0
					var ee *exec.ExitError
					if errors.As(err, &ee) {
						code = ee.ExitCode()
						if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
							code = 128 + int(ws.Signal())
						}
					}
					ch.SendRequest("exit-status", false, binary.BigEndian.AppendUint32(nil, uint32(code)))
					close(exited)
				}()
			case "signal":
				if cmd != nil && !s.keepOrphans {
					killGroup(cmd)
				}
				if req.WantReply {
					req.Reply(true, nil)
				}
			default:
				if req.WantReply {
					req.Reply(false, nil)
				}
			}
		case <-exited:
			return
		}
	}
}

func killGroup(cmd *exec.Cmd) {
	if cmd.Process != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}

// hangServer accepts TCP and never says anything.
func hangServer(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
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
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	return ln.Addr().String()
}

// closedAddr returns an address where nothing listens.
func closedAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func newEd25519Signer(t testing.TB) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// writeOpenSSHKey writes an OpenSSH-format private key and returns its
// signer (passphrase "" = unencrypted).
func writeOpenSSHKey(t testing.TB, path, passphrase string) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var block *pem.Block
	if passphrase == "" {
		block, err = ssh.MarshalPrivateKey(priv, "test")
	} else {
		block, err = ssh.MarshalPrivateKeyWithPassphrase(priv, "test", []byte(passphrase))
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// writeRSAPEMKey writes a PKCS#1 "RSA PRIVATE KEY" file, the format of an
// OpenStack (NKS) keypair .pem download.
func writeRSAPEMKey(t testing.TB, path string) ssh.Signer {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	b := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// knownHostsLine is what accept-new (or ssh-keyscan) would write.
func knownHostsLine(addr string, key ssh.PublicKey) string {
	return knownhosts.Line([]string{addr}, key) + "\n"
}

// env is a per-test client setup: a key, a known_hosts path, a server.
type env struct {
	dir        string
	keyPath    string
	clientKey  ssh.Signer
	knownHosts string
	srv        *testServer
}

func newEnv(t testing.TB) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{dir: dir, keyPath: filepath.Join(dir, "id_ed25519"), knownHosts: filepath.Join(dir, "known_hosts")}
	e.clientKey = writeOpenSSHKey(t, e.keyPath, "")
	e.srv = newTestServer(t, e.clientKey.PublicKey())
	return e
}

// trust records the server's (first) host key for addr.
func (e *env) trust(t testing.TB, addr string) {
	t.Helper()
	appendFile(t, e.knownHosts, knownHostsLine(addr, e.srv.hostKeys[0].PublicKey()))
}

func (e *env) config() Config {
	return Config{
		User:       "tester",
		Identities: []string{e.keyPath},
		KnownHosts: e.knownHosts,
		Warn:       func(string) {},
	}
}

func appendFile(t testing.TB, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

// hostOf splits "127.0.0.1:port" into a Host.
func hostOf(t testing.TB, name, addr string) Host {
	t.Helper()
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	var port int
	fmt.Sscan(p, &port)
	return Host{Name: name, Address: h, Port: port}
}
