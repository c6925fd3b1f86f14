package transport

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// hostKeyDB verifies host keys against one known_hosts file under a policy.
// The file is parsed once per run; accept-new re-reads it (under a lock) only
// when it appends, so 200 nodes cost one parse plus one per new host.
type hostKeyDB struct {
	path   string
	policy HostKeyPolicy

	// appendMu serialises accept-new appends within this process; flock on
	// the file serialises them with other processes (another nksrun, ssh).
	appendMu sync.Mutex
	mu       sync.RWMutex // guards check, so known hosts never wait for an append
	check    ssh.HostKeyCallback
}

func newHostKeyDB(path string, policy HostKeyPolicy) (*hostKeyDB, error) {
	db := &hostKeyDB{path: path, policy: policy}
	if policy == PolicyInsecure {
		// The only place InsecureIgnoreHostKey is used: the user asked for it
		// explicitly and NewDialer has warned.
		db.check = ssh.InsecureIgnoreHostKey()
		return db, nil
	}
	check, err := loadKnownHosts(path)
	if err != nil {
		return nil, err
	}
	db.check = check
	return db, nil
}

// loadKnownHosts parses path; a missing file is an empty database (every
// host unknown), which strict reports per host with instructions.
func loadKnownHosts(path string) (ssh.HostKeyCallback, error) {
	check, err := knownhosts.New(path)
	if errors.Is(err, fs.ErrNotExist) {
		return knownhosts.New()
	}
	if err != nil {
		return nil, fmt.Errorf("known_hosts %s: %w", path, err)
	}
	return check, nil
}

func (db *hostKeyDB) current() ssh.HostKeyCallback {
	db.mu.RLock()
	defer db.mu.RUnlock()
	return db.check
}

func (db *hostKeyDB) setCurrent(check ssh.HostKeyCallback) {
	db.mu.Lock()
	db.check = check
	db.mu.Unlock()
}

// verify is the HostKeyCallback. hostname is the dialled "host:port".
func (db *hostKeyDB) verify(hostname string, remote net.Addr, key ssh.PublicKey) error {
	err := db.current()(hostname, remote, key)
	if err == nil || db.policy == PolicyInsecure {
		return err
	}
	var ke *knownhosts.KeyError
	if errors.As(err, &ke) && len(ke.Want) == 0 && db.policy == PolicyAcceptNew {
		return db.acceptNew(hostname, remote, key)
	}
	return db.explain(hostname, key, err)
}

// explain turns a knownhosts error into a typed one that says what to do.
// Fingerprints are public data; no key material beyond them is printed.
func (db *hostKeyDB) explain(hostname string, key ssh.PublicKey, err error) error {
	name := knownhosts.Normalize(hostname)
	offered := key.Type() + " " + ssh.FingerprintSHA256(key)
	var ke *knownhosts.KeyError
	var re *knownhosts.RevokedError
	switch {
	case errors.As(err, &ke) && len(ke.Want) == 0:
		host, port, _ := net.SplitHostPort(hostname)
		return fmt.Errorf("%w: %s is not in %s (it offered %s); to trust it on first use, rerun with `--host-key-policy accept-new`, or add it beforehand with `ssh-keyscan -p %s %s >> %s` after checking the fingerprint",
			ErrHostKeyUnknown, name, db.path, offered, port, host, db.path)
	case errors.As(err, &ke):
		w := ke.Want[0]
		return fmt.Errorf("%w for %s: it offered %s but %s:%d has %s %s. POSSIBLE MAN-IN-THE-MIDDLE ATTACK; refusing to connect and leaving known_hosts untouched. If the node was rebuilt, remove the old key with `ssh-keygen -R '%s' -f %s`",
			ErrHostKeyChanged, name, offered, w.Filename, w.Line, w.Key.Type(), ssh.FingerprintSHA256(w.Key), name, db.path)
	case errors.As(err, &re):
		return fmt.Errorf("%w: %s offered %s, marked @revoked at %s:%d; refusing to connect",
			ErrHostKeyRevoked, name, offered, re.Revoked.Filename, re.Revoked.Line)
	}
	return fmt.Errorf("host key of %s: %w", name, err)
}

// acceptNew records the key of a host that is not in known_hosts. Many
// handshakes may get here at once (a fresh cluster): the in-process mutex
// and an exclusive flock make the re-read-check-append atomic, O_APPEND
// keeps concurrent writers from overwriting each other, and the re-read under
// the lock makes sure a host is appended once, and that a key that some other
// writer recorded meanwhile is honoured (a different one is a hard failure).
func (db *hostKeyDB) acceptNew(hostname string, remote net.Addr, key ssh.PublicKey) error {
	db.appendMu.Lock()
	defer db.appendMu.Unlock()

	if err := os.MkdirAll(filepath.Dir(db.path), 0o700); err != nil {
		return fmt.Errorf("accept-new: %w", err)
	}
	f, err := os.OpenFile(db.path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("accept-new: %w", err)
	}
	defer f.Close()
	if err := flock(f); err != nil {
		return fmt.Errorf("accept-new: lock %s: %w", db.path, err)
	}
	// Closing f releases the lock.

	check, err := loadKnownHosts(db.path)
	if err != nil {
		return err
	}
	db.setCurrent(check)
	err = check(hostname, remote, key)
	var ke *knownhosts.KeyError
	if !errors.As(err, &ke) || len(ke.Want) > 0 {
		return db.explainOrNil(hostname, key, err)
	}

	line := knownhosts.Line([]string{hostname}, key) + "\n"
	if needsNewline(f) {
		line = "\n" + line
	}
	if _, err := f.WriteString(line); err != nil {
		return fmt.Errorf("accept-new: append to %s: %w", db.path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("accept-new: sync %s: %w", db.path, err)
	}
	check, err = loadKnownHosts(db.path)
	if err != nil {
		return err
	}
	db.setCurrent(check)
	return nil
}

func (db *hostKeyDB) explainOrNil(hostname string, key ssh.PublicKey, err error) error {
	if err == nil {
		return nil
	}
	return db.explain(hostname, key, err)
}

// flockTimeout bounds the wait for another process's lock on known_hosts
// (a stuck editor must not hang every handshake forever).
const flockTimeout = 10 * time.Second

func flock(f *os.File) error {
	deadline := time.Now().Add(flockTimeout)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err != syscall.EWOULDBLOCK && err != syscall.EINTR {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("another process has held the lock for %v", flockTimeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// needsNewline reports whether the file is non-empty and does not end in a
// newline (hand-edited files), so an appended line does not join the last.
func needsNewline(f *os.File) bool {
	st, err := f.Stat()
	if err != nil || st.Size() == 0 {
		return false
	}
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, st.Size()-1); err != nil && err != io.EOF {
		return false
	}
	return b[0] != '\n'
}

// probeKey never matches a known key; checking it makes knownhosts list
// every key recorded for a host (KeyError.Want).
type probeKey struct{}

func (probeKey) Type() string                        { return "nksrun-probe" }
func (probeKey) Marshal() []byte                     { return []byte("\x00\x00\x00\x0cnksrun-probe") }
func (probeKey) Verify([]byte, *ssh.Signature) error { return errors.New("probe key") }

// algorithms returns the host key algorithms to offer for addr: those of the
// keys known_hosts has for it, so a host recorded with its ed25519 key is not
// asked for its ECDSA key (which would look like a changed key). Unknown
// hosts, and the insecure policy, get the library default (nil).
func (db *hostKeyDB) algorithms(addr string, remote net.Addr) []string {
	if db.policy == PolicyInsecure {
		return nil
	}
	if remote == nil || remote.String() == "" {
		remote = &net.TCPAddr{}
	}
	var ke *knownhosts.KeyError
	if err := db.current()(addr, remote, probeKey{}); !errors.As(err, &ke) {
		return nil
	}
	var algos []string
	seen := map[string]bool{}
	for _, k := range ke.Want {
		for _, a := range algorithmsForKeyType(k.Key.Type()) {
			if !seen[a] {
				seen[a] = true
				algos = append(algos, a)
			}
		}
	}
	return algos
}

func algorithmsForKeyType(t string) []string {
	if t == ssh.KeyAlgoRSA {
		// One RSA key signs with any of these; prefer SHA-2 (ssh-rsa is
		// SHA-1 and disabled by modern servers).
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
	}
	return []string{t}
}
