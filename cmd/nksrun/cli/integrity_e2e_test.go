package cli_test

// End-to-end: a signed, reviewed plan applies; the same plan edited and
// resealed (the attack of issue #10: a file_sync dest moved to
// /etc/default/evil, checksum recomputed the way engine/planfile does) is
// refused by the signature and by the pinned checksum, and no node changes.

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"nksrun/cmd/nksrun/cli"
	"nksrun/engine/planfile"
)

func TestE2ESignedPlan(t *testing.T) {
	e := newE2E(t)
	sshKeygen, err := exec.LookPath("ssh-keygen")
	if err != nil {
		t.Fatalf("ssh-keygen (openssh-client) is needed to check signatures as a reviewer would: %v", err)
	}
	keys := t.TempDir()
	key := filepath.Join(keys, "planner")
	if out, err := exec.Command(sshKeygen, "-q", "-t", "ed25519", "-N", "", "-C", "planner", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	attacker := filepath.Join(keys, "attacker")
	if out, err := exec.Command(sshKeygen, "-q", "-t", "ecdsa", "-N", "", "-C", "attacker", "-f", attacker).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	allowed := filepath.Join(keys, "allowed_signers")
	if err := os.WriteFile(allowed, []byte("# trusted planners\nci@nksrun "+string(pub)), 0o644); err != nil {
		t.Fatal(err)
	}
	// plan --out --sign-key, and the checksum as the reviewer reads it in
	// the text view.
	signedPlan := func(t *testing.T) (planFile, checksum string) {
		t.Helper()
		planFile = filepath.Join(t.TempDir(), "plan.json")
		code, out, stderr := nksrun(t, append([]string{"plan", "--out", planFile, "--sign-key", key}, append(e.conn(), e.runbook)...)...)
		if code != 0 || !strings.Contains(stderr, "Signed "+planFile) {
			t.Fatalf("plan --sign-key: exit %d", code)
		}
		m := regexp.MustCompile(`Plan checksum ([0-9a-f]{64})`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("the text view shows no plan checksum:\n%s", out)
		}
		return planFile, m[1]
	}
	// The reviewer's check, with ssh-keygen alone.
	reviewerVerifies := func(t *testing.T, planFile string) (bool, string) {
		t.Helper()
		cmd := exec.Command(sshKeygen, "-Y", "verify", "-f", allowed, "-I", "ci@nksrun", "-n", "nksrun-plan", "-s", planFile+".sig")
		plan, err := os.ReadFile(planFile)
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdin = bytes.NewReader(plan)
		out, err := cmd.CombinedOutput()
		return err == nil, string(out)
	}

	t.Run("signed and pinned plan applies", func(t *testing.T) {
		e.reset(t)
		planFile, checksum := signedPlan(t)
		if ok, out := reviewerVerifies(t, planFile); !ok {
			t.Fatalf("ssh-keygen -Y verify refused the plan signature:\n%s", out)
		}
		code, _, stderr := nksrun(t, append([]string{"apply", "--auto-approve", "--lock-file", e.lockFile,
			"--allowed-signers", allowed, "--signer", "ci@nksrun", "--expect-checksum", checksum}, append(e.conn(), planFile)...)...)
		if code != 0 || !strings.Contains(stderr, "signed by ci@nksrun") {
			t.Fatalf("apply of the signed, reviewed plan: exit %d", code)
		}
		for _, n := range e.docker {
			if got := e.file(t, n); got != string(e.want) {
				t.Errorf("%s not applied: %q", n.Name, got)
			}
		}
		// A new unsigned plan saved at the same path does not keep the old
		// plan's signature next to it.
		if code, _, _ := nksrun(t, append([]string{"plan", "--out", planFile}, append(e.conn(), e.runbook)...)...); code != 0 {
			t.Fatalf("plan: exit %d", code)
		}
		if _, err := os.Stat(planFile + ".sig"); !os.IsNotExist(err) {
			t.Errorf("the earlier plan's signature is still there (%v)", err)
		}
	})

	t.Run("edited and resealed plan is refused", func(t *testing.T) {
		e.reset(t)
		planFile, checksum := signedPlan(t)
		resealed := resealWithDest(t, planFile, "/etc/logrotate.d/docker", "/etc/default/evil")
		// The attack is real: the resealed file passes the checksum check.
		if _, err := planfile.Read(resealed, 0, time.Now()); err != nil {
			t.Fatalf("resealed plan not accepted by planfile.Read, the attack did not reseal: %v", err)
		}
		if ok, _ := reviewerVerifies(t, planFile); ok {
			t.Error("ssh-keygen -Y verify accepted the resealed plan")
		}
		for _, tc := range []struct {
			name, want string
			flags      []string
			env        map[string]string
			resignWith string // a key that signs the resealed plan with ssh-keygen
			removeSig  bool
		}{
			{name: "allowed signers", want: "does not match the plan file", flags: []string{"--allowed-signers", allowed}},
			{name: "pinned checksum", want: "plan checksum is not the reviewed one", flags: []string{"--expect-checksum", checksum}},
			{name: "pinned checksum in the environment", want: "plan checksum is not the reviewed one", env: map[string]string{"NKSRUN_EXPECT_CHECKSUM": checksum}},
			{name: "re-signed with the attacker's key", want: "which is not listed in allowed signers", flags: []string{"--allowed-signers", allowed}, resignWith: attacker},
			{name: "signature removed", want: "no signature", flags: []string{"--allowed-signers", allowed}, removeSig: true},
		} {
			t.Run(tc.name, func(t *testing.T) {
				for k, v := range tc.env {
					t.Setenv(k, v)
				}
				if tc.resignWith != "" {
					os.Remove(planFile + ".sig")
					if out, err := exec.Command(sshKeygen, "-Y", "sign", "-n", "nksrun-plan", "-f", tc.resignWith, planFile).CombinedOutput(); err != nil {
						t.Fatalf("ssh-keygen -Y sign: %v\n%s", err, out)
					}
				}
				if tc.removeSig {
					if err := os.Remove(planFile + ".sig"); err != nil {
						t.Fatal(err)
					}
				}
				code, _, stderr := nksrun(t, append(append([]string{"apply", "--auto-approve", "--lock-file", e.lockFile}, tc.flags...), append(e.conn(), planFile)...)...)
				if code != cli.ExitError || !strings.Contains(stderr, tc.want) {
					t.Errorf("exit %d, stderr %q; want exit %d and %q", code, stderr, cli.ExitError, tc.want)
				}
				for _, n := range e.tb.Nodes {
					if _, err := os.Stat(n.Path("/etc/default/evil")); !os.IsNotExist(err) {
						t.Errorf("%s: /etc/default/evil exists (%v)", n.Name, err)
					}
				}
				for _, n := range e.docker {
					if got := e.file(t, n); got != drifted {
						t.Errorf("%s changed by a refused plan: %q", n.Name, got)
					}
				}
			})
		}
	})
}

// resealWithDest is the attacker's edit: every "dest" equal to from becomes
// to (its step's fingerprint says the new file is absent), then the checksum is recomputed exactly as engine/planfile computes
// it (the JSON document without "checksum", numbers as written, marshalled
// with sorted keys, sha256). It returns the new file.
func resealWithDest(t *testing.T, planFile, from, to string) []byte {
	t.Helper()
	data, err := os.ReadFile(planFile)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		t.Fatal(err)
	}
	edits := 0
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if v["dest"] == from {
				v["dest"] = to
				edits++
			}
			// A step that now writes to a new file: record it as absent, so
			// the apply-time staleness check passes as it would for a real
			// new file and only the signature or the pin can stop it.
			if params, ok := v["params"].(map[string]any); ok && params["dest"] == from {
				if fp, ok := v["fingerprint"].(map[string]any); ok {
					fp["sha256"] = "absent"
				}
			}
			for _, c := range v {
				walk(c)
			}
		case []any:
			for _, c := range v {
				walk(c)
			}
		}
	}
	walk(doc)
	if edits == 0 {
		t.Fatalf("no dest %q in the plan to edit", from)
	}
	delete(doc, "checksum")
	norm, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(norm)
	doc["checksum"] = hex.EncodeToString(sum[:])
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(planFile, append(out, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}
