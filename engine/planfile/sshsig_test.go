package planfile_test

// Plan signatures against the real OpenSSH tools: what nksrun signs,
// `ssh-keygen -Y verify` accepts; what `ssh-keygen -Y sign` makes, nksrun
// accepts; and every refusal of nksrun is also a refusal of ssh-keygen (it
// is the oracle of the format and of the allowed_signers semantics).

import (
	"bytes"
	"encoding/base64"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"nksrun/engine/planfile"
)

// needTool finds an OpenSSH tool; CI must have it, elsewhere the test skips.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s not found (install openssh-client): %v", name, err)
		}
		t.Skipf("%s not found (install openssh-client)", name)
	}
	return p
}

// genKey makes a key with ssh-keygen; spec is "-t type [-b bits]".
func genKey(t *testing.T, dir, name, passphrase string, spec ...string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	args := append([]string{"-q", "-N", passphrase, "-C", name, "-f", path}, spec...)
	if out, err := exec.Command(needTool(t, "ssh-keygen"), args...).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen %v: %v\n%s", args, err, out)
	}
	return path
}

func pubLine(t *testing.T, keyPath string) string {
	t.Helper()
	b, err := os.ReadFile(keyPath + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	return f[0] + " " + f[1]
}

func writeFile(t *testing.T, path string, data []byte) string {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// sshKeygenSign signs file with ssh-keygen and returns the signature.
func sshKeygenSign(t *testing.T, key, namespace string, data []byte) []byte {
	t.Helper()
	dir := t.TempDir()
	f := writeFile(t, filepath.Join(dir, "plan.json"), data)
	out, err := exec.Command(needTool(t, "ssh-keygen"), "-Y", "sign", "-f", key, "-n", namespace, f).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh-keygen -Y sign: %v\n%s", err, out)
	}
	sig, err := os.ReadFile(f + ".sig")
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

// sshKeygenVerify runs the reviewer's command:
// ssh-keygen -Y verify -f allowed_signers -I principal -n nksrun-plan -s plan.json.sig < plan.json
func sshKeygenVerify(t *testing.T, allowed, principal string, plan, sig []byte) (bool, string) {
	t.Helper()
	dir := t.TempDir()
	af := writeFile(t, filepath.Join(dir, "allowed_signers"), []byte(allowed))
	sf := writeFile(t, filepath.Join(dir, "plan.json.sig"), sig)
	cmd := exec.Command(needTool(t, "ssh-keygen"), "-Y", "verify", "-f", af, "-I", principal, "-n", planfile.SignatureNamespace, "-s", sf)
	cmd.Stdin = bytes.NewReader(plan)
	out, err := cmd.CombinedOutput()
	return err == nil, string(out)
}

func openSigner(t *testing.T, path string) *planfile.Signer {
	t.Helper()
	s, err := planfile.OpenSigner(path, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func parseAllowed(t *testing.T, text string) *planfile.AllowedSigners {
	t.Helper()
	as, err := planfile.ParseAllowedSigners("allowed_signers", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return as
}

func TestSignatureInteropWithSSHKeygen(t *testing.T) {
	_, plan := savedPlan(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		name   string
		spec   []string
		sigAlg string // the signature algorithm inside the SSHSIG blob
	}{
		{"ed25519", []string{"-t", "ed25519"}, "ssh-ed25519"},
		{"ecdsa-p256", []string{"-t", "ecdsa", "-b", "256"}, "ecdsa-sha2-nistp256"},
		{"ecdsa-p384", []string{"-t", "ecdsa", "-b", "384"}, "ecdsa-sha2-nistp384"},
		{"ecdsa-p521", []string{"-t", "ecdsa", "-b", "521"}, "ecdsa-sha2-nistp521"},
		{"rsa", []string{"-t", "rsa", "-b", "2048"}, "rsa-sha2-512"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := genKey(t, dir, tc.name, "", tc.spec...)
			allowed := "# reviewers\n\nalice@example.com " + pubLine(t, key) + " alice's laptop\n"
			as := parseAllowed(t, allowed)

			// nksrun signs, ssh-keygen verifies.
			sig, err := openSigner(t, key).SignPlan(plan)
			if err != nil {
				t.Fatal(err)
			}
			if ok, out := sshKeygenVerify(t, allowed, "alice@example.com", plan, sig); !ok || !strings.Contains(out, `Good "nksrun-plan" signature for alice@example.com`) {
				t.Errorf("ssh-keygen -Y verify refused nksrun's signature:\n%s\n%s", out, sig)
			}
			if blob := dearmor(t, sig); !bytes.Contains(blob, []byte(tc.sigAlg)) || !bytes.Contains(blob, []byte("sha512")) {
				t.Errorf("signature does not use %s over sha512", tc.sigAlg)
			}

			// ssh-keygen signs, nksrun verifies (for the listed principal
			// and for whoever is listed).
			theirs := sshKeygenSign(t, key, planfile.SignatureNamespace, plan)
			for _, principal := range []string{"alice@example.com", ""} {
				v, err := planfile.VerifyPlan(plan, theirs, as, principal, time.Now())
				if err != nil {
					t.Fatalf("principal %q: nksrun refused ssh-keygen's signature: %v", principal, err)
				}
				pub, _, _, _, _ := ssh.ParseAuthorizedKey([]byte(pubLine(t, key)))
				if v.Principals != "alice@example.com" || v.Fingerprint != ssh.FingerprintSHA256(pub) || v.Line != 3 {
					t.Errorf("verified as %+v", v)
				}
			}
			// Ed25519 is deterministic: same key, same message, same bytes.
			if tc.name == "ed25519" && !bytes.Equal(sig, theirs) {
				t.Errorf("nksrun's ed25519 signature differs from ssh-keygen's:\n%s\n%s", sig, theirs)
			}
		})
	}
}

func rearmor(blob []byte) []byte {
	return []byte("-----BEGIN SSH SIGNATURE-----\n" + base64.StdEncoding.EncodeToString(blob) + "\n-----END SSH SIGNATURE-----\n")
}

func dearmor(t *testing.T, sig []byte) []byte {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(string(sig)), "\n")
	b, err := base64.StdEncoding.DecodeString(strings.Join(lines[1:len(lines)-1], ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Each refusal, and the few accepted variants next to them, judged by
// nksrun and by ssh-keygen: both must agree.
func TestSignatureVerification(t *testing.T) {
	_, plan := savedPlan(t)
	dir := t.TempDir()
	alice := genKey(t, dir, "alice", "", "-t", "ed25519")
	mallory := genKey(t, dir, "mallory", "", "-t", "ed25519")
	good, err := openSigner(t, alice).SignPlan(plan)
	if err != nil {
		t.Fatal(err)
	}
	byMallory, err := openSigner(t, mallory).SignPlan(plan)
	if err != nil {
		t.Fatal(err)
	}
	edited := bytes.Clone(plan)
	edited[len(edited)/2] ^= 0x01 // one byte
	blob := dearmor(t, good)
	blob[len(blob)-5] ^= 0x80 // inside the ed25519 signature
	flipped := rearmor(blob)
	aliceKey := pubLine(t, alice)
	listed := "alice@example.com " + aliceKey + "\n"

	for _, tc := range []struct {
		name      string
		allowed   string
		principal string // "" = any listed principal (ssh-keygen gets "alice@example.com")
		plan, sig []byte
		wantErr   string // "" = accepted
	}{
		{name: "good", allowed: listed, plan: plan, sig: good},
		{name: "good, principal pinned", allowed: listed, principal: "alice@example.com", plan: plan, sig: good},
		{name: "wildcard principal", allowed: "*@example.com " + aliceKey + "\n", principal: "alice@example.com", plan: plan, sig: good},
		{name: "quoted principals, namespaces option allows", allowed: `"alice@example.com,ops" namespaces="git,nksrun-*" ` + aliceKey + "\n", principal: "ops", plan: plan, sig: good},
		{name: "valid window holds now", allowed: `alice@example.com valid-after="20200101",valid-before="29991231Z" ` + aliceKey + "\n", plan: plan, sig: good},
		{name: "signed with ssh-keygen -n git", allowed: listed, plan: plan, sig: sshKeygenSign(t, alice, "git", plan),
			wantErr: `signature is for namespace "git", not "nksrun-plan"`},
		{name: "one byte of the plan edited", allowed: listed, plan: edited, sig: good,
			wantErr: "does not match the plan file"},
		{name: "key not in allowed signers", allowed: listed, plan: plan, sig: byMallory,
			wantErr: "which is not listed in allowed signers"},
		{name: "principal pinned to someone else", allowed: listed + "bob@example.com " + pubLine(t, mallory) + "\n", principal: "bob@example.com", plan: plan, sig: good,
			wantErr: `lists it for "alice@example.com", not "bob@example.com"`},
		{name: "principal negated", allowed: "*,!alice@example.com " + aliceKey + "\n", principal: "alice@example.com", plan: plan, sig: good,
			wantErr: `not "alice@example.com"`},
		{name: "namespaces option excludes plans", allowed: `alice@example.com namespaces="git" ` + aliceKey + "\n", plan: plan, sig: good,
			wantErr: `allows it only for namespaces "git"`},
		{name: "key expired", allowed: `alice@example.com valid-before="20200101" ` + aliceKey + "\n", plan: plan, sig: good,
			wantErr: "key expired"},
		{name: "key not yet valid", allowed: `alice@example.com valid-after="29990101" ` + aliceKey + "\n", plan: plan, sig: good,
			wantErr: "not valid before"},
		{name: "only as cert-authority", allowed: "alice@example.com cert-authority " + aliceKey + "\n", plan: plan, sig: good,
			wantErr: "which is not listed in allowed signers"},
		{name: "truncated signature", allowed: listed, plan: plan, sig: good[:len(good)/2],
			wantErr: "truncated SSH signature"},
		{name: "truncated inside the signature", allowed: listed, plan: plan, sig: rearmor(dearmor(t, good)[:60]),
			wantErr: "truncated or garbled SSH signature"},
		{name: "garbled base64", allowed: listed, plan: plan, sig: bytes.Replace(good, []byte("U1NIU0lH"), []byte("U1NI*0lH"), 1),
			wantErr: "garbled SSH signature (base64"},
		{name: "garbled header", allowed: listed, plan: plan, sig: bytes.Replace(good, []byte("AAAA"), []byte("AAAB"), 1),
			wantErr: "SSH signature version 257"},
		{name: "garbled signature bytes", allowed: listed, plan: plan, sig: flipped,
			wantErr: "does not match the plan file"},
		{name: "empty signature", allowed: listed, plan: plan, sig: nil,
			wantErr: "not an SSH signature"},
		{name: "the plan given as its signature", allowed: listed, plan: plan, sig: plan,
			wantErr: "not an SSH signature"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			as := parseAllowed(t, tc.allowed)
			v, err := planfile.VerifyPlan(tc.plan, tc.sig, as, tc.principal, time.Now())
			t.Logf("nksrun: %v", err)
			if tc.wantErr == "" {
				if err != nil {
					t.Errorf("refused: %v", err)
				}
			} else {
				if !errors.Is(err, planfile.ErrBadSignature) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("err = %v (verified %v), want ErrBadSignature containing %q", err, v, tc.wantErr)
				}
			}
			principal := tc.principal
			if principal == "" {
				principal = "alice@example.com"
			}
			if ok, out := sshKeygenVerify(t, tc.allowed, principal, tc.plan, tc.sig); ok != (tc.wantErr == "") {
				t.Errorf("ssh-keygen disagrees (accepted=%v):\n%s", ok, out)
			}
		})
	}
}

func TestParseAllowedSignersRefusesBadLines(t *testing.T) {
	key := genKey(t, t.TempDir(), "k", "", "-t", "ed25519")
	pub := pubLine(t, key)
	for _, tc := range []struct{ name, file, wantErr string }{
		{"only comments", "# nobody\n\n", "no signers listed"},
		{"principal alone", "# x\nalice\n", ":2: want: principals"},
		{"no key", "alice namespaces=\"x\"\n", ":1: no valid key"},
		{"bad base64", "alice ssh-ed25519 AAAA!!!!\n", ":1: no valid key"},
		{"unknown option", "alice restrict " + pub + "\n", `unsupported option "restrict"`},
		{"unquoted option value", "alice namespaces=git " + pub + "\n", "double quotes"},
		{"bad time", `alice valid-after="2020-01-01" ` + pub + "\n", "YYYYMMDD"},
		{"unterminated quote", `"alice ` + pub + "\n", "unterminated quote"},
		{"type mismatch", "alice ssh-rsa " + strings.Fields(pub)[1] + "\n", ":1: no valid key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := planfile.ParseAllowedSigners("allowed_signers", []byte(tc.file))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "allowed_signers") {
				t.Errorf("err = %v, want it to name the file and contain %q", err, tc.wantErr)
			}
		})
	}
	// CRLF line ends and trailing comments are fine.
	as := parseAllowed(t, "# team\r\nalice "+pub+" laptop\r\n  \r\nbob,carol "+pub+"\r\n")
	if len(as.Signers) != 2 || as.Signers[1].Principals != "bob,carol" || as.Signers[1].Line != 4 {
		t.Errorf("parsed %+v", as.Signers)
	}
}

// startAgent runs a real ssh-agent on a private socket.
func startAgent(t *testing.T) (sock string, client agent.ExtendedAgent) {
	t.Helper()
	sock = filepath.Join(t.TempDir(), "agent.sock")
	cmd := exec.Command(needTool(t, "ssh-agent"), "-D", "-a", sock)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var conn net.Conn
	var err error
	for i := 0; i < 200; i++ { // bounded wait for the socket, not a timing assertion
		if conn, err = net.Dial("unix", sock); err == nil {
			break
		}
		time.Sleep(25 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("ssh-agent socket: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return sock, agent.NewClient(conn)
}

// Keys with a passphrase sign through ssh-agent; nksrun never asks for one.
func TestSignWithAgent(t *testing.T) {
	_, plan := savedPlan(t)
	dir := t.TempDir()
	sock, client := startAgent(t)
	const pass = "correct horse battery"
	var allowed strings.Builder
	keys := map[string]string{}
	for _, typ := range []string{"ed25519", "rsa", "ecdsa"} {
		key := genKey(t, dir, typ, pass, "-t", typ)
		raw, err := ssh.ParseRawPrivateKeyWithPassphrase(mustRead(t, key), []byte(pass))
		if err != nil {
			t.Fatal(err)
		}
		if err := client.Add(agent.AddedKey{PrivateKey: raw}); err != nil {
			t.Fatal(err)
		}
		keys[typ] = key
		allowed.WriteString("ops " + pubLine(t, key) + "\n")
	}
	notInAgent := genKey(t, dir, "other", pass, "-t", "ed25519")

	for _, tc := range []struct{ name, path, sock, wantErr string }{
		{"encrypted ed25519 key", keys["ed25519"], sock, ""},
		{"encrypted rsa key (rsa-sha2-512 from the agent)", keys["rsa"], sock, ""},
		{"public key file", keys["ecdsa"] + ".pub", sock, ""},
		{"encrypted key, no agent", keys["ed25519"], "", "SSH_AUTH_SOCK is not set"},
		{"key not in the agent", notInAgent, sock, "ssh-agent does not hold it"},
		{"no such agent", keys["ed25519"], filepath.Join(dir, "nothing.sock"), "ssh-agent"},
		{"not a key", writeFile(t, filepath.Join(dir, "junk"), []byte("hello\n")), sock, "signing key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := planfile.OpenSigner(tc.path, tc.sock)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			sig, err := s.SignPlan(plan)
			if err != nil {
				t.Fatal(err)
			}
			if ok, out := sshKeygenVerify(t, allowed.String(), "ops", plan, sig); !ok {
				t.Errorf("ssh-keygen refused the agent-made signature:\n%s", out)
			}
		})
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestExpectedChecksum(t *testing.T) {
	p, _ := savedPlan(t)
	for _, tc := range []struct{ name, expected, wantErr string }{
		{"same", p.Checksum, ""},
		{"pasted with space and prefix, upper case", "  sha256:" + strings.ToUpper(p.Checksum) + "\n", ""},
		{"another plan", strings.Repeat("ab", 32), "not the reviewed one"},
		{"prefix only", p.Checksum[:12], "full sha256"},
		{"not hex", strings.Repeat("zz", 32), "full sha256"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := planfile.CheckChecksum(p, tc.expected)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}
