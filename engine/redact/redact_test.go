package redact

import (
	"strings"
	"testing"
)

func TestSecretsRedact(t *testing.T) {
	s := &Secrets{}
	s.AddSecret("hunter2-password")
	s.AddSecret("[Global]\nusername=admin\npassword=very-secret-value\n")
	s.AddSecret("abc") // too short to redact safely
	in := "pw hunter2-password b64 aHVudGVyMi1wYXNzd29yZA== line password=very-secret-value abc"
	got := s.Redact(in)
	for _, leak := range []string{"hunter2-password", "aHVudGVyMi1wYXNzd29yZA==", "very-secret-value"} {
		if strings.Contains(got, leak) {
			t.Errorf("Redact left %q in %q", leak, got)
		}
	}
	if !strings.Contains(got, "abc") {
		t.Errorf("short value was redacted: %q", got)
	}
}

func TestSecretsNone(t *testing.T) {
	var nilSecrets *Secrets
	s := &Secrets{}
	if !nilSecrets.None() || !s.None() {
		t.Fatal("no secrets registered, but None is false")
	}
	s.AddSecret("short") // below MinLen: not registered
	if !s.None() {
		t.Fatal("a value below MinLen counted as a secret")
	}
	s.AddSecret("hunter2-password")
	if s.None() {
		t.Fatal("a registered secret, but None is true")
	}
}
