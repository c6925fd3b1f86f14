package planfile

// OpenSSH signatures (PROTOCOL.sshsig), the format of `ssh-keygen -Y sign`
// and `ssh-keygen -Y verify`: a saved plan is signed with an SSH key the
// operator already has, and a reviewer or pipeline checks it against an
// allowed_signers file, with nksrun or with ssh-keygen alone.

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strings"

	"golang.org/x/crypto/ssh"
)

// SignatureNamespace is the SSHSIG namespace of plan signatures. A signature
// made for another purpose (git commits, files) with the same key never
// verifies as a plan signature, and the reverse.
const SignatureNamespace = "nksrun-plan"

// SignatureSuffix names the detached signature next to a plan file.
const SignatureSuffix = ".sig"

// SignaturePath is where the signature of the plan saved at planPath lives.
func SignaturePath(planPath string) string { return planPath + SignatureSuffix }

// ErrBadSignature wraps every reason a plan signature is refused.
var ErrBadSignature = errors.New("plan signature refused")

const (
	sigMagic    = "SSHSIG"
	sigVersion  = 1
	armorBegin  = "-----BEGIN SSH SIGNATURE-----"
	armorEnd    = "-----END SSH SIGNATURE-----"
	armorWidth  = 70 // ssh-keygen's line length
	signHashAlg = "sha512"
)

// sigBlob is an SSHSIG signature after the magic preamble.
type sigBlob struct {
	Version   uint32
	PublicKey []byte
	Namespace string
	Reserved  []byte
	HashAlg   string
	Signature []byte
}

// signedData is what the key actually signs: the namespace, the hash
// algorithm and the message's hash, behind the same magic preamble.
func signedData(namespace string, reserved []byte, hashAlg string, digest []byte) []byte {
	return append([]byte(sigMagic), ssh.Marshal(struct {
		Namespace string
		Reserved  []byte
		HashAlg   string
		Hash      []byte
	}{namespace, reserved, hashAlg, digest})...)
}

func newHash(alg string) (hash.Hash, error) {
	switch alg {
	case "sha512":
		return sha512.New(), nil
	case "sha256":
		return sha256.New(), nil
	}
	return nil, fmt.Errorf("hash algorithm %q is not one of sha256, sha512", alg)
}

// checkKeyType refuses keys nksrun does not sign or verify with:
// certificates (an allowed_signers line names the key itself) and DSA
// (OpenSSH dropped it).
func checkKeyType(k ssh.PublicKey) error {
	if _, ok := k.(*ssh.Certificate); ok {
		return fmt.Errorf("%s is an SSH certificate: plan signatures use the plain key (certificates and cert-authority lines are not supported)", k.Type())
	}
	if k.Type() == "ssh-dss" { // DSA: x/crypto/ssh no longer verifies it
		return errors.New("DSA keys are not supported (use ed25519, ecdsa or rsa)")
	}
	return nil
}

// sigAlgorithm is the signature algorithm for a key: RSA signs with
// rsa-sha2-512 as ssh-keygen does (never SHA-1 ssh-rsa), every other key
// with its own algorithm.
func sigAlgorithm(k ssh.PublicKey) string {
	if k.Type() == ssh.KeyAlgoRSA {
		return ssh.KeyAlgoRSASHA512
	}
	return k.Type()
}

// signMessage returns the armored SSHSIG signature of message under
// namespace, byte for byte what `ssh-keygen -Y sign -n namespace` would
// write for the same key (ed25519 is deterministic).
func signMessage(signer ssh.Signer, message []byte, namespace string) ([]byte, error) {
	pub := signer.PublicKey()
	if err := checkKeyType(pub); err != nil {
		return nil, err
	}
	digest := sha512.Sum512(message)
	data := signedData(namespace, nil, signHashAlg, digest[:])
	algo := sigAlgorithm(pub)
	var sig *ssh.Signature
	var err error
	if as, ok := signer.(ssh.AlgorithmSigner); ok {
		sig, err = as.SignWithAlgorithm(rand.Reader, data, algo)
	} else if algo == pub.Type() {
		sig, err = signer.Sign(rand.Reader, data)
	} else {
		return nil, fmt.Errorf("signing with %s: this signer cannot make %s signatures", pub.Type(), algo)
	}
	if err != nil {
		return nil, fmt.Errorf("signing with %s key %s: %w", pub.Type(), ssh.FingerprintSHA256(pub), err)
	}
	if sig.Format != algo {
		// An old agent may answer an rsa-sha2-512 request with ssh-rsa.
		return nil, fmt.Errorf("signing with %s key %s: got a %s signature, want %s", pub.Type(), ssh.FingerprintSHA256(pub), sig.Format, algo)
	}
	blob := append([]byte(sigMagic), ssh.Marshal(sigBlob{
		Version:   sigVersion,
		PublicKey: pub.Marshal(),
		Namespace: namespace,
		HashAlg:   signHashAlg,
		Signature: ssh.Marshal(sig),
	})...)
	return armor(blob), nil
}

func armor(blob []byte) []byte {
	b64 := base64.StdEncoding.EncodeToString(blob)
	var out bytes.Buffer
	out.WriteString(armorBegin + "\n")
	for len(b64) > armorWidth {
		out.WriteString(b64[:armorWidth] + "\n")
		b64 = b64[armorWidth:]
	}
	out.WriteString(b64 + "\n" + armorEnd + "\n")
	return out.Bytes()
}

// parsedSig is a decoded signature, not yet verified.
type parsedSig struct {
	blob sigBlob
	key  ssh.PublicKey
	sig  ssh.Signature
}

// parseSignature decodes an armored signature and checks its structure;
// every failure says what is wrong with the file.
func parseSignature(armored []byte) (*parsedSig, error) {
	text := strings.TrimSpace(string(armored))
	if !strings.HasPrefix(text, armorBegin) {
		return nil, fmt.Errorf("not an SSH signature (no %s line)", armorBegin)
	}
	body, after, ok := strings.Cut(text[len(armorBegin):], armorEnd)
	if !ok {
		return nil, fmt.Errorf("truncated SSH signature (no %s line)", armorEnd)
	}
	if strings.TrimSpace(after) != "" {
		return nil, errors.New("garbled SSH signature (text after the end line)")
	}
	raw, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(body), ""))
	if err != nil {
		return nil, fmt.Errorf("garbled SSH signature (base64: %v)", err)
	}
	if !bytes.HasPrefix(raw, []byte(sigMagic)) {
		return nil, errors.New("garbled SSH signature (no SSHSIG preamble)")
	}
	var p parsedSig
	if err := ssh.Unmarshal(raw[len(sigMagic):], &p.blob); err != nil {
		return nil, fmt.Errorf("truncated or garbled SSH signature: %v", err)
	}
	if p.blob.Version != sigVersion {
		return nil, fmt.Errorf("SSH signature version %d is not supported (want %d)", p.blob.Version, sigVersion)
	}
	if p.key, err = ssh.ParsePublicKey(p.blob.PublicKey); err != nil {
		return nil, fmt.Errorf("garbled SSH signature (public key: %v)", err)
	}
	if err := ssh.Unmarshal(p.blob.Signature, &p.sig); err != nil {
		return nil, fmt.Errorf("garbled SSH signature (signature: %v)", err)
	}
	return &p, nil
}

// verifyMessage checks that armored is a good signature of message under
// namespace (not yet who made it) and returns the signing key.
func verifyMessage(message, armored []byte, namespace string) (ssh.PublicKey, error) {
	p, err := parseSignature(armored)
	if err != nil {
		return nil, err
	}
	if p.blob.Namespace != namespace {
		return nil, fmt.Errorf("signature is for namespace %q, not %q (it was not made as a plan signature)", p.blob.Namespace, namespace)
	}
	h, err := newHash(p.blob.HashAlg)
	if err != nil {
		return nil, fmt.Errorf("signature: %w", err)
	}
	if err := checkKeyType(p.key); err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	if p.key.Type() == ssh.KeyAlgoRSA && p.sig.Format != ssh.KeyAlgoRSASHA512 && p.sig.Format != ssh.KeyAlgoRSASHA256 {
		// As ssh-keygen: RSA signatures must be SHA-2.
		return nil, fmt.Errorf("RSA signature type %q refused (want rsa-sha2-512 or rsa-sha2-256)", p.sig.Format)
	}
	h.Write(message)
	data := signedData(p.blob.Namespace, p.blob.Reserved, p.blob.HashAlg, h.Sum(nil))
	if err := p.key.Verify(data, &p.sig); err != nil {
		return nil, fmt.Errorf("signature by %s key %s does not match the plan file: the plan was changed after it was signed, or the signature is for another file (%v)",
			p.key.Type(), ssh.FingerprintSHA256(p.key), err)
	}
	return p.key, nil
}
