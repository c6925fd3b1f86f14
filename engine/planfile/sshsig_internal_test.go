package planfile

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// signWithAlgorithm is signMessage with a chosen signature algorithm, to
// make the signatures nksrun must refuse.
func signWithAlgorithm(t *testing.T, s ssh.AlgorithmSigner, message []byte, algo string) []byte {
	t.Helper()
	digest := sha512Sum(message)
	sig, err := s.SignWithAlgorithm(rand.Reader, signedData(SignatureNamespace, nil, signHashAlg, digest), algo)
	if err != nil {
		t.Fatal(err)
	}
	return armor(append([]byte(sigMagic), ssh.Marshal(sigBlob{
		Version: sigVersion, PublicKey: s.PublicKey().Marshal(), Namespace: SignatureNamespace,
		HashAlg: signHashAlg, Signature: ssh.Marshal(sig),
	})...))
}

func sha512Sum(b []byte) []byte {
	h, _ := newHash("sha512")
	h.Write(b)
	return h.Sum(nil)
}

// RSA signatures must be SHA-2, as ssh-keygen requires: a SHA-1 (ssh-rsa)
// signature is refused by both, an rsa-sha2-256 one accepted by both.
func TestRSASignatureAlgorithms(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(key)
	if err != nil {
		t.Fatal(err)
	}
	plan := []byte(`{"format_version": 1}` + "\n")
	allowed := "ops " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))) + "\n"
	as, err := ParseAllowedSigners("allowed_signers", []byte(allowed))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		algo    string
		wantErr string
	}{
		{ssh.KeyAlgoRSASHA512, ""},
		{ssh.KeyAlgoRSASHA256, ""},
		{ssh.KeyAlgoRSA, `RSA signature type "ssh-rsa" refused`},
	} {
		t.Run(tc.algo, func(t *testing.T) {
			sig := signWithAlgorithm(t, signer.(ssh.AlgorithmSigner), plan, tc.algo)
			_, err := VerifyPlan(plan, sig, as, "", time.Now())
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("err = %v, want %q", err, tc.wantErr)
			}
			if ok := sshKeygenAccepts(t, allowed, "ops", plan, sig); ok != (tc.wantErr == "") {
				t.Errorf("ssh-keygen accepted=%v", ok)
			}
		})
	}
}

func sshKeygenAccepts(t *testing.T, allowed, principal string, plan, sig []byte) bool {
	t.Helper()
	bin, err := exec.LookPath("ssh-keygen")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("ssh-keygen not found (install openssh-client)")
		}
		t.Skip("ssh-keygen not found")
	}
	dir := t.TempDir()
	af, sf := filepath.Join(dir, "allowed_signers"), filepath.Join(dir, "plan.json.sig")
	if err := os.WriteFile(af, []byte(allowed), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sf, sig, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-Y", "verify", "-f", af, "-I", principal, "-n", SignatureNamespace, "-s", sf)
	cmd.Stdin = bytes.NewReader(plan)
	out, err := cmd.CombinedOutput()
	t.Logf("ssh-keygen -Y verify: %v\n%s", err, out)
	return err == nil
}

// FuzzVerifyPlan: whatever the signature file and the allowed_signers file
// hold, verification never panics, and it accepts only a signature by the
// one key that can sign here.
func FuzzVerifyPlan(f *testing.F) {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		f.Fatal(err)
	}
	plan := []byte(`{"format_version": 1, "checksum": "x"}` + "\n")
	good, err := signMessage(signer, plan, SignatureNamespace)
	if err != nil {
		f.Fatal(err)
	}
	allowed := "ops,!x namespaces=\"nksrun-*\",valid-after=\"20200101\" " + string(ssh.MarshalAuthorizedKey(signer.PublicKey()))
	fp := ssh.FingerprintSHA256(signer.PublicKey())
	f.Add(good, []byte(allowed), "ops")
	f.Add(good[:len(good)/2], []byte(allowed), "")
	f.Add([]byte("-----BEGIN SSH SIGNATURE-----\nU1NIU0lH\n-----END SSH SIGNATURE-----\n"), []byte("# x\n\"a b\" cert-authority "+string(ssh.MarshalAuthorizedKey(signer.PublicKey()))), "a b")
	f.Fuzz(func(t *testing.T, sig, allowedFile []byte, principal string) {
		as, err := ParseAllowedSigners("allowed_signers", allowedFile)
		if err != nil {
			return
		}
		v, err := VerifyPlan(plan, sig, as, principal, time.Now())
		if err == nil && v.Fingerprint != fp {
			t.Fatalf("accepted a signature by %s", v.Fingerprint)
		}
	})
}
