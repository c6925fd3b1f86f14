package cli

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"nksrun/engine/planfile"
	"nksrun/engine/plans"
)

// integrityFixture is a saved plan for the real logrotate runbook, keys,
// an allowed_signers file, and a kubeconfig whose API server only counts
// requests: a refused plan must not make one.
type integrityFixture struct {
	dir, plan, allowed, alice, mallory, kubeconfig string
	checksum                                       string
	requests                                       atomic.Int64
}

func newIntegrityFixture(t *testing.T) *integrityFixture {
	t.Helper()
	f := &integrityFixture{dir: t.TempDir()}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.requests.Add(1)
		http.Error(w, "counting only", http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	f.kubeconfig = f.write(t, "kubeconfig", `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "`+srv.URL+`"}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`)
	rbPath, err := filepath.Abs("../../../runbooks/logrotate.yaml")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(rbPath)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(src)
	p := &plans.Plan{FormatVersion: plans.FormatVersion, Tool: "test", CreatedAt: time.Now().UTC(),
		Runbooks: []plans.RunbookPlan{{Name: "logrotate", Path: rbPath, Source: string(src), SourceHash: hex.EncodeToString(sum[:])}}}
	if err := planfile.Seal(p); err != nil {
		t.Fatal(err)
	}
	f.checksum = p.Checksum
	b, _ := json.MarshalIndent(p, "", "  ")
	f.plan = f.write(t, "plan.json", string(b)+"\n")
	var alicePub string
	f.alice, alicePub = writeKey(t, f.dir, "alice")
	f.mallory, _ = writeKey(t, f.dir, "mallory")
	f.allowed = f.write(t, "allowed_signers", "# who may sign plans\nalice@example.com "+alicePub+"\n")
	return f
}

func (f *integrityFixture) write(t *testing.T, name, data string) string {
	t.Helper()
	p := filepath.Join(f.dir, name)
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func writeKey(t *testing.T, dir, name string) (path, pub string) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, name)
	if err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	sp, _ := ssh.NewPublicKey(priv.Public())
	return path, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp)))
}

// sign writes plan.json.sig with key.
func (f *integrityFixture) sign(t *testing.T, key string) {
	t.Helper()
	s, err := planfile.OpenSigner(key, "")
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(f.plan)
	sig, err := s.SignPlan(data)
	if err != nil {
		t.Fatal(err)
	}
	f.write(t, "plan.json.sig", string(sig))
}

// reseal edits the plan and recomputes its checksum, as an attacker can.
func (f *integrityFixture) reseal(t *testing.T) {
	t.Helper()
	data, _ := os.ReadFile(f.plan)
	var p plans.Plan
	if err := json.Unmarshal(data, &p); err != nil {
		t.Fatal(err)
	}
	p.Runbooks[0].Params = map[string]any{"dest": "/etc/default/evil"}
	if err := planfile.Seal(&p); err != nil {
		t.Fatal(err)
	}
	b, _ := json.MarshalIndent(&p, "", "  ")
	f.write(t, "plan.json", string(b)+"\n")
}

// TestSavedPlanIntegrityFlags: what apply and plan do with --allowed-signers,
// --signer, --expect-checksum, --sign-key and their environment variables,
// and that a refused plan makes no API request (the accepted ones show the
// counting server is reached).
func TestSavedPlanIntegrityFlags(t *testing.T) {
	wrong := strings.Repeat("0", 64)
	for _, tc := range []struct {
		name    string
		prepare func(t *testing.T, f *integrityFixture)
		env     map[string]string
		args    func(f *integrityFixture) []string
		code    int    // ExitOK: accepted (apply goes on and fails at the fake API server)
		stderr  string // refusal message, or the signer line when accepted
	}{
		{name: "signed by a listed key",
			prepare: func(t *testing.T, f *integrityFixture) { f.sign(t, f.alice) },
			args:    func(f *integrityFixture) []string { return []string{"--allowed-signers", f.allowed, f.plan} },
			stderr:  "signed by alice@example.com (ssh-ed25519 key SHA256:"},
		{name: "signed, principal pinned",
			prepare: func(t *testing.T, f *integrityFixture) { f.sign(t, f.alice) },
			args: func(f *integrityFixture) []string {
				return []string{"--allowed-signers", f.allowed, "--signer", "alice@example.com", f.plan}
			},
			stderr: "signed by alice@example.com"},
		{name: "allowed signers from the environment",
			prepare: func(t *testing.T, f *integrityFixture) { f.sign(t, f.alice) },
			env:     map[string]string{envAllowedSigners: "ALLOWED"},
			args:    func(f *integrityFixture) []string { return []string{f.plan} },
			stderr:  "signed by alice@example.com"},
		{name: "reviewed checksum",
			args:   func(f *integrityFixture) []string { return []string{"--expect-checksum", f.checksum, f.plan} },
			stderr: ""},
		{name: "no signature file",
			args: func(f *integrityFixture) []string { return []string{"--allowed-signers", f.allowed, f.plan} },
			code: ExitError, stderr: "plan signature refused: no signature"},
		{name: "edited and resealed after signing",
			prepare: func(t *testing.T, f *integrityFixture) { f.sign(t, f.alice); f.reseal(t) },
			args:    func(f *integrityFixture) []string { return []string{"--allowed-signers", f.allowed, f.plan} },
			code:    ExitError, stderr: "does not match the plan file"},
		{name: "signed by a key not listed",
			prepare: func(t *testing.T, f *integrityFixture) { f.sign(t, f.mallory) },
			args:    func(f *integrityFixture) []string { return []string{"--allowed-signers", f.allowed, f.plan} },
			code:    ExitError, stderr: "which is not listed in allowed signers"},
		{name: "signed by alice, bob required",
			prepare: func(t *testing.T, f *integrityFixture) { f.sign(t, f.alice) },
			args: func(f *integrityFixture) []string {
				return []string{"--allowed-signers", f.allowed, "--signer", "bob@example.com", f.plan}
			},
			code: ExitError, stderr: `not "bob@example.com"`},
		{name: "edited and resealed, checksum pinned",
			prepare: func(t *testing.T, f *integrityFixture) { f.reseal(t) },
			args:    func(f *integrityFixture) []string { return []string{"--expect-checksum", f.checksum, f.plan} },
			code:    ExitError, stderr: "plan checksum is not the reviewed one"},
		{name: "checksum pinned from the environment",
			env:  map[string]string{envExpectChecksum: wrong},
			args: func(f *integrityFixture) []string { return []string{f.plan} },
			code: ExitError, stderr: "plan checksum is not the reviewed one"},
		{name: "checksum prefix only",
			args: func(f *integrityFixture) []string { return []string{"--expect-checksum", f.checksum[:16], f.plan} },
			code: ExitUsage, stderr: "full sha256"},
		{name: "oversized signature file",
			prepare: func(t *testing.T, f *integrityFixture) {
				f.write(t, "plan.json.sig", strings.Repeat("A", maxSignatureSize+1))
			},
			args: func(f *integrityFixture) []string { return []string{"--allowed-signers", f.allowed, f.plan} },
			code: ExitError, stderr: "larger than 64 KiB: not an SSH signature"},
		{name: "signer without allowed signers",
			args: func(f *integrityFixture) []string { return []string{"--signer", "alice@example.com", f.plan} },
			code: ExitUsage, stderr: "--signer needs --allowed-signers"},
		{name: "bad allowed signers file",
			prepare: func(t *testing.T, f *integrityFixture) { f.sign(t, f.alice); f.write(t, "allowed_signers", "alice\n") },
			args:    func(f *integrityFixture) []string { return []string{"--allowed-signers", f.allowed, f.plan} },
			code:    ExitError, stderr: "allowed_signers:1:"},
		{name: "runbooks with a required signature",
			args: func(f *integrityFixture) []string {
				return []string{"--allowed-signers", f.allowed, "../../../runbooks/logrotate.yaml"}
			},
			code: ExitUsage, stderr: "--allowed-signers applies to a saved plan"},
		{name: "runbooks when the environment requires a signature",
			env:  map[string]string{envAllowedSigners: "ALLOWED"},
			args: func(f *integrityFixture) []string { return []string{"../../../runbooks/logrotate.yaml"} },
			code: ExitError, stderr: "NKSRUN_ALLOWED_SIGNERS is set, so only a saved plan"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newIntegrityFixture(t)
			if tc.prepare != nil {
				tc.prepare(t, f)
			}
			for k, v := range tc.env {
				t.Setenv(k, strings.ReplaceAll(v, "ALLOWED", f.allowed))
			}
			args := append([]string{"apply", "--auto-approve", "--no-lock", "--max-plan-age", "0", "--kubeconfig", f.kubeconfig}, tc.args(f)...)
			code, _, stderr := run(args...)
			t.Logf("exit %d, %d API request(s), stderr:\n%s", code, f.requests.Load(), stderr)
			if !strings.Contains(stderr, tc.stderr) {
				t.Errorf("stderr lacks %q", tc.stderr)
			}
			if tc.code == ExitOK {
				// Accepted: apply went on to the cluster.
				if f.requests.Load() == 0 || strings.Contains(stderr, "refused") {
					t.Errorf("accepted plan did not reach the API server")
				}
				return
			}
			if code != tc.code {
				t.Errorf("exit %d, want %d", code, tc.code)
			}
			if n := f.requests.Load(); n != 0 {
				t.Errorf("refused plan made %d API request(s)", n)
			}
		})
	}
}

func TestPlanSignKeyFlag(t *testing.T) {
	f := newIntegrityFixture(t)
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"without --out", []string{"--sign-key", f.alice}, ExitUsage, "--sign-key signs the saved plan: pass --out FILE too"},
		{"missing key", []string{"--sign-key", filepath.Join(f.dir, "nope"), "--out", filepath.Join(f.dir, "p.json")}, ExitError, "signing key: open"},
		{"public key without agent", []string{"--sign-key", f.write(t, "k.pub", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHbQ1oW0Zi6z0oTL1hQ9E2TK1NQqcyXNEYJ2b8K0dP8n k\n"), "--out", filepath.Join(f.dir, "p.json")}, ExitError, "must be in ssh-agent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("SSH_AUTH_SOCK", "")
			code, _, stderr := run(append(append([]string{"plan", "--kubeconfig", f.kubeconfig}, tc.args...), "../../../runbooks/logrotate.yaml")...)
			if code != tc.code || !strings.Contains(stderr, tc.stderr) {
				t.Errorf("exit %d (want %d), stderr %q, want %q", code, tc.code, stderr, tc.stderr)
			}
			if n := f.requests.Load(); n != 0 {
				t.Errorf("a bad --sign-key was found only after %d API request(s)", n)
			}
		})
	}
}
