// Package redact keeps secret values out of every output: plans, diffs, logs
// and errors pass through Secrets.Redact at the output boundary.
package redact

import (
	"encoding/base64"
	"sort"
	"strings"
	"sync"
)

// Redacted replaces every secret value in output.
const Redacted = "(redacted)"

// Secrets collects values that must never be printed: secret params, values
// read from Kubernetes Secrets, registry credentials. Every rendering of a
// plan, every log line and every error passes through Redact at the output
// boundary, so a module that forgets is still covered.
type Secrets struct {
	mu     sync.RWMutex
	values map[string]bool
	sorted []string
}

// MinLen is the shortest value that is registered as a secret. A shorter
// value would match ordinary words of the output ("ok", "status",
// "changes"), so redacting it would let whoever chose it rewrite a review;
// secret params shorter than this are refused (engine) rather than printed.
const MinLen = 8

// AddSecret registers a value, its base64 forms and, for multi-line values,
// each line of MinLen characters or more (diffs print lines). Values shorter
// than MinLen are ignored.
func (s *Secrets) AddSecret(v string) { s.add(v, true) }

// AddSecretWhole registers a value and its base64 forms but not its lines.
// Modules use it for documents (an INI cloud-config, a docker config.json)
// whose structural lines ("[BlockStorage]", "rescan-on-resize=true") are
// public, after registering the document's secret parts one by one;
// AddSecret would redact those lines from every output (runbook text and
// saved plans included).
func (s *Secrets) AddSecretWhole(v string) { s.add(v, false) }

func (s *Secrets) add(v string, lines bool) {
	if len(v) < MinLen {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.values == nil {
		s.values = map[string]bool{}
	}
	for _, form := range []string{
		v,
		base64.StdEncoding.EncodeToString([]byte(v)),
		base64.RawStdEncoding.EncodeToString([]byte(v)),
		base64.URLEncoding.EncodeToString([]byte(v)),
	} {
		s.values[form] = true
	}
	if lines {
		for _, line := range strings.Split(v, "\n") {
			if len(strings.TrimSpace(line)) >= MinLen {
				s.values[line] = true
			}
		}
	}
	s.sorted = s.sorted[:0]
	for k := range s.values {
		s.sorted = append(s.sorted, k)
	}
	// Longest first, so a value containing another is replaced whole.
	sort.Slice(s.sorted, func(i, j int) bool { return len(s.sorted[i]) > len(s.sorted[j]) })
}

// None says whether no secret is registered (yet): Redact changes nothing
// then, so a caller may skip the work of preparing text for it.
func (s *Secrets) None() bool {
	if s == nil {
		return true
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.sorted) == 0
}

// Redact returns text with every registered secret replaced.
func (s *Secrets) Redact(text string) string {
	if s == nil {
		return text
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, v := range s.sorted {
		if strings.Contains(text, v) {
			text = strings.ReplaceAll(text, v, Redacted)
		}
	}
	return text
}
