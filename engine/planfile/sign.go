package planfile

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"nksrun/engine/plans"
)

// Signer signs saved plans with one SSH key.
type Signer struct {
	signer ssh.Signer
	conn   net.Conn // the ssh-agent connection, if the key is there
}

// OpenSigner loads the key at path for signing plans: an unencrypted
// private key (OpenSSH or PEM) is used directly; for an encrypted private
// key or a public key (.pub), the matching key is taken from the ssh-agent
// at agentSock (usually $SSH_AUTH_SOCK; "" = no agent), as `ssh-keygen -Y
// sign -f` does. nksrun never asks for a passphrase.
func OpenSigner(path, agentSock string) (*Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	if pub, _, _, _, err := ssh.ParseAuthorizedKey(data); err == nil {
		return agentSigner(path, pub, agentSock, "is a public key")
	}
	signer, err := ssh.ParsePrivateKey(data)
	var missing *ssh.PassphraseMissingError
	switch {
	case errors.As(err, &missing):
		pub := missing.PublicKey
		if pub == nil { // PEM keys do not carry the public key in clear
			if b, err := os.ReadFile(path + ".pub"); err == nil {
				pub, _, _, _, _ = ssh.ParseAuthorizedKey(b)
			}
		}
		if pub == nil {
			return nil, fmt.Errorf("signing key %s is passphrase protected and its public key is unknown (no %s.pub): add it to ssh-agent (ssh-add %s) and pass the .pub file", path, path, path)
		}
		return agentSigner(path, pub, agentSock, "is passphrase protected")
	case err != nil:
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	if err := checkKeyType(signer.PublicKey()); err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	return &Signer{signer: signer}, nil
}

func agentSigner(path string, pub ssh.PublicKey, sock, why string) (*Signer, error) {
	if err := checkKeyType(pub); err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	if sock == "" {
		return nil, fmt.Errorf("signing key %s %s: its private key must be in ssh-agent (ssh-add it; SSH_AUTH_SOCK is not set)", path, why)
	}
	conn, err := net.Dial("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("signing key %s %s: ssh-agent: %w", path, why, err)
	}
	signers, err := agent.NewClient(conn).Signers()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("signing key %s: ssh-agent: %w", path, err)
	}
	want := pub.Marshal()
	for _, s := range signers {
		if bytes.Equal(s.PublicKey().Marshal(), want) {
			return &Signer{signer: s, conn: conn}, nil
		}
	}
	conn.Close()
	return nil, fmt.Errorf("signing key %s %s and ssh-agent does not hold it (%s %s): ssh-add %s", path, why, pub.Type(), ssh.FingerprintSHA256(pub), path)
}

// NewSigner signs with an ssh.Signer the caller already has.
func NewSigner(s ssh.Signer) (*Signer, error) {
	if err := checkKeyType(s.PublicKey()); err != nil {
		return nil, err
	}
	return &Signer{signer: s}, nil
}

// PublicKey is the key plans are signed with.
func (s *Signer) PublicKey() ssh.PublicKey { return s.signer.PublicKey() }

// Close releases the ssh-agent connection, if any.
func (s *Signer) Close() error {
	if s.conn != nil {
		return s.conn.Close()
	}
	return nil
}

// SignPlan returns the detached signature (armored SSHSIG, namespace
// nksrun-plan) of exactly the bytes of a saved plan file. `ssh-keygen -Y
// verify -n nksrun-plan` checks it.
func (s *Signer) SignPlan(planFile []byte) ([]byte, error) {
	return signMessage(s.signer, planFile, SignatureNamespace)
}

// VerifyPlan checks that sig is a good signature of exactly the bytes
// planFile, in the nksrun-plan namespace, by a key that allowed lists (for
// principal if it is not empty). Every refusal wraps ErrBadSignature.
func VerifyPlan(planFile, sig []byte, allowed *AllowedSigners, principal string, now time.Time) (*Verified, error) {
	key, err := verifyMessage(planFile, sig, SignatureNamespace)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadSignature, err)
	}
	v, err := allowed.allow(key, SignatureNamespace, principal, now)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadSignature, err)
	}
	return v, nil
}

// ErrChecksumMismatch is a plan whose checksum is not the one the reviewer
// pinned (apply --expect-checksum).
var ErrChecksumMismatch = errors.New("plan checksum is not the reviewed one")

// ParseChecksum normalises a checksum as a reviewer pastes it: surrounding
// space, upper or lower case, an optional "sha256:" prefix. Only a full
// sha256 is accepted: a prefix would be easy to match with a forged plan.
func ParseChecksum(s string) (string, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	s = strings.TrimPrefix(s, "sha256:")
	if len(s) != 64 || strings.Trim(s, "0123456789abcdef") != "" {
		return "", fmt.Errorf("checksum %q: want the plan's full sha256 (64 hex digits, as the plan view prints it)", s)
	}
	return s, nil
}

// CheckChecksum refuses a plan (already read with Read, so its checksum is
// its content's) whose checksum is not expected.
func CheckChecksum(p *plans.Plan, expected string) error {
	want, err := ParseChecksum(expected)
	if err != nil {
		return err
	}
	if p.Checksum != want {
		return fmt.Errorf("%w: this plan is %s, the reviewed one %s (the file is not the plan that was reviewed)", ErrChecksumMismatch, p.Checksum, want)
	}
	return nil
}
