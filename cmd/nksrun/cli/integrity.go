package cli

// Review pinning and signatures for saved plans: `plan --out FILE
// --sign-key KEY` writes FILE.sig (OpenSSH SSHSIG, namespace nksrun-plan);
// `apply FILE --allowed-signers F [--signer P]` requires a good signature
// by a listed key, `--expect-checksum SHA` requires the reviewed plan. A
// refused plan is refused before the lock, the cluster or any node is
// touched.

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/crypto/ssh"

	"nksrun/engine/planfile"
	"nksrun/engine/plans"
)

// Environment variables a pipeline can set instead of the flags. The flags
// win when both are given.
const (
	envAllowedSigners = "NKSRUN_ALLOWED_SIGNERS"
	envSigner         = "NKSRUN_SIGNER"
	envExpectChecksum = "NKSRUN_EXPECT_CHECKSUM"
)

type integrityOptions struct {
	signKey        string
	allowedSigners string
	signer         string
	expectChecksum string
}

func signFlags(fs *pflag.FlagSet, o *options) {
	fs.StringVar(&o.integrity.signKey, "sign-key", "", "sign the saved plan: --out FILE also writes FILE.sig, an OpenSSH signature (ssh-keygen -Y sign, namespace nksrun-plan). A private key file; a passphrase-protected key or a .pub file signs through ssh-agent")
}

func verifyFlags(fs *pflag.FlagSet, o *options) {
	fs.StringVar(&o.integrity.allowedSigners, "allowed-signers", "", "require a saved plan signed (PLAN.json.sig) by a key in this OpenSSH allowed_signers file ($"+envAllowedSigners+")")
	fs.StringVar(&o.integrity.signer, "signer", "", "with --allowed-signers: the principal that must have signed (default: any listed) ($"+envSigner+")")
	fs.StringVar(&o.integrity.expectChecksum, "expect-checksum", "", "refuse a saved plan whose checksum is not this one: paste the checksum of the plan you reviewed ($"+envExpectChecksum+")")
}

// flagOrEnv is a flag's value, or the environment variable's when the flag
// is not given.
func flagOrEnv(flag, env string) string {
	if flag != "" {
		return flag
	}
	return os.Getenv(env)
}

// planSigner opens --sign-key before anything is planned, so a wrong path or
// a key missing from the agent fails at once, not after the plan.
func (a *app) planSigner() (*planfile.Signer, error) {
	key := a.opts.integrity.signKey
	if key == "" {
		return nil, nil
	}
	if a.opts.out == "" {
		return nil, usageError{"--sign-key signs the saved plan: pass --out FILE too"}
	}
	return planfile.OpenSigner(key, os.Getenv("SSH_AUTH_SOCK"))
}

// signSavedPlan writes the detached signature of data, the bytes just saved
// at path, to path.sig. Without a signer it removes a path.sig left by an
// earlier plan saved at the same path, which cannot sign this one.
func (a *app) signSavedPlan(s *planfile.Signer, path string, data []byte) error {
	sigPath := planfile.SignaturePath(path)
	if s == nil {
		if err := os.Remove(sigPath); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("removing the earlier plan's signature: %w", err)
		}
		return nil
	}
	sig, err := s.SignPlan(data)
	if err != nil {
		return fmt.Errorf("signing %s: %w", path, err)
	}
	if err := writeFileAtomic(sigPath, sig, 0o644); err != nil {
		return fmt.Errorf("saving the plan signature: %w", err)
	}
	pub := s.PublicKey()
	fmt.Fprintf(a.stderr, "Signed %s with %s key %s: %s\n", path, pub.Type(), ssh.FingerprintSHA256(pub), sigPath)
	return nil
}

// requireSavedPlan refuses to apply runbooks directly when a signature or a
// checksum is required: only a saved plan can carry either.
func (a *app) requireSavedPlan() error {
	o := a.opts.integrity
	for _, v := range []struct{ flag, env, val string }{
		{"--allowed-signers", envAllowedSigners, o.allowedSigners},
		{"--expect-checksum", envExpectChecksum, o.expectChecksum},
		{"--signer", envSigner, o.signer},
	} {
		if v.val != "" {
			return usageError{fmt.Sprintf("%s applies to a saved plan: apply PLAN.json, not runbooks", v.flag)}
		}
		if os.Getenv(v.env) != "" {
			return exitError{ExitError, fmt.Sprintf("nksrun apply: %s is set, so only a saved plan (PLAN.json) that passes it may be applied, not runbooks", v.env)}
		}
	}
	return nil
}

// readSavedPlan reads the plan at path and checks, before anything else
// happens, its signature (when allowed signers are given), that it is an
// unedited plan of this format and age (planfile.Read), and its checksum
// (when one is expected). The signature is checked over the file's bytes
// before they are parsed.
func (a *app) readSavedPlan(path string) (*plans.Plan, error) {
	o := a.opts.integrity
	allowedPath := flagOrEnv(o.allowedSigners, envAllowedSigners)
	principal := flagOrEnv(o.signer, envSigner)
	expected := flagOrEnv(o.expectChecksum, envExpectChecksum)
	if principal != "" && allowedPath == "" {
		return nil, usageError{"--signer needs --allowed-signers (or $" + envAllowedSigners + ")"}
	}
	if expected != "" {
		if _, err := planfile.ParseChecksum(expected); err != nil {
			return nil, usageError{"--expect-checksum: " + err.Error()}
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if allowedPath != "" {
		allowed, err := planfile.ReadAllowedSigners(allowedPath)
		if err != nil {
			return nil, err
		}
		sigPath := planfile.SignaturePath(path)
		sig, err := readSignature(sigPath)
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s: %w: no signature %s (sign with nksrun plan --out %s --sign-key KEY, or ssh-keygen -Y sign -n %s -f KEY %s)",
				path, planfile.ErrBadSignature, sigPath, path, planfile.SignatureNamespace, path)
		}
		if err != nil {
			return nil, err
		}
		v, err := planfile.VerifyPlan(data, sig, allowed, principal, time.Now())
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		fmt.Fprintf(a.stderr, "Plan %s signed by %s\n", path, v)
	}
	p, err := planfile.Read(data, a.opts.maxPlanAge, time.Now())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if expected != "" {
		if err := planfile.CheckChecksum(p, expected); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	return p, nil
}

// maxSignatureSize bounds what is read as a signature: an SSHSIG of the
// largest RSA key is a few KiB, and the file sits next to a plan that may
// come from elsewhere.
const maxSignatureSize = 64 << 10

func readSignature(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSignatureSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxSignatureSize {
		return nil, fmt.Errorf("%w: %s is larger than %d KiB: not an SSH signature", planfile.ErrBadSignature, path, maxSignatureSize>>10)
	}
	return b, nil
}
