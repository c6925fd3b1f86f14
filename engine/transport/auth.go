package transport

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// authenticator holds the run's credentials: identity files parsed once and
// one ssh-agent connection shared by every handshake (the agent client
// serialises its requests).
type authenticator struct {
	files     []ssh.Signer
	fileNames []string
	agentConn net.Conn
	agent     agent.ExtendedAgent
}

func newAuthenticator(identities []string, useAgent bool) (*authenticator, error) {
	a := &authenticator{}
	for _, p := range identities {
		s, err := loadIdentity(expandHome(p))
		if err != nil {
			return nil, err
		}
		a.files = append(a.files, s)
		a.fileNames = append(a.fileNames, p)
	}
	if useAgent {
		if sock := os.Getenv("SSH_AUTH_SOCK"); sock != "" {
			conn, err := net.Dial("unix", sock)
			if err != nil {
				// An agent that is configured but dead is worth failing
				// on only when it was the sole credential.
				if len(a.files) == 0 {
					return nil, fmt.Errorf("ssh-agent at SSH_AUTH_SOCK: %w", err)
				}
			} else {
				a.agentConn = conn
				a.agent = agent.NewClient(conn)
			}
		}
	}
	if len(a.files) == 0 && a.agent == nil {
		return nil, errors.New("no SSH credentials: pass -i/--identity KEYFILE or run an ssh-agent (SSH_AUTH_SOCK)")
	}
	return a, nil
}

// loadIdentity reads one private key file. Errors name the file, never its
// contents.
func loadIdentity(path string) (ssh.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	s, err := ssh.ParsePrivateKey(b)
	var pm *ssh.PassphraseMissingError
	switch {
	case errors.As(err, &pm):
		return nil, fmt.Errorf("identity %s is passphrase-protected: nksrun never prompts; load it into ssh-agent (`ssh-add %s`) and run with the agent instead of -i", path, path)
	case err != nil:
		return nil, fmt.Errorf("identity %s: not a usable private key (OpenSSH or PEM): %v", path, err)
	}
	return s, nil
}

// methods returns one publickey method with file keys first, then agent
// keys. One method, not two: the ssh client tries each method name once,
// so a second publickey method would never be tried.
func (a *authenticator) methods() []ssh.AuthMethod {
	return []ssh.AuthMethod{ssh.PublicKeysCallback(func() ([]ssh.Signer, error) {
		signers := append([]ssh.Signer(nil), a.files...)
		if a.agent != nil {
			if as, err := a.agent.Signers(); err == nil {
				signers = append(signers, as...)
			}
		}
		return signers, nil
	})}
}

// describe names the credentials tried, for auth failure messages.
func (a *authenticator) describe() string {
	var parts []string
	if len(a.fileNames) > 0 {
		parts = append(parts, "identities "+strings.Join(a.fileNames, ", "))
	}
	if a.agent != nil {
		parts = append(parts, "ssh-agent keys")
	}
	return strings.Join(parts, " and ")
}

func (a *authenticator) close() error {
	if a.agentConn != nil {
		return a.agentConn.Close()
	}
	return nil
}
