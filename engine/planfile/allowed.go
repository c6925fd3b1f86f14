package planfile

// OpenSSH allowed_signers files (ssh-keygen(1), "ALLOWED SIGNERS"):
//
//	principals [options] keytype base64-key [comment]
//
// principals is a comma-separated list of patterns (* ? and !negation);
// options are cert-authority, namespaces="...", valid-after="...",
// valid-before="...". Lines that are blank or start with # are ignored.

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// AllowedSigner is one line of an allowed_signers file.
type AllowedSigner struct {
	Principals    string        // the pattern list as written
	Key           ssh.PublicKey // the signer's key (the CA's key on a cert-authority line)
	CertAuthority bool
	Namespaces    string    // pattern list; "" = any namespace
	ValidAfter    time.Time // zero = no limit
	ValidBefore   time.Time // zero = no limit
	Line          int
}

// AllowedSigners is a parsed allowed_signers file.
type AllowedSigners struct {
	Path    string
	Signers []AllowedSigner
}

// ReadAllowedSigners reads and parses an allowed_signers file.
func ReadAllowedSigners(path string) (*AllowedSigners, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("allowed signers: %w", err)
	}
	return ParseAllowedSigners(path, data)
}

// ParseAllowedSigners parses an allowed_signers file; name is used in
// errors. Unlike ssh-keygen, which stops at a bad line only when it gets
// there, any malformed line refuses the whole file: a typo must not silently
// drop or keep a signer.
func ParseAllowedSigners(name string, data []byte) (*AllowedSigners, error) {
	as := &AllowedSigners{Path: name}
	for i, line := range strings.Split(string(data), "\n") {
		s, err := parseAllowedLine(line)
		if err != nil {
			return nil, fmt.Errorf("allowed signers %s:%d: %w", name, i+1, err)
		}
		if s != nil {
			s.Line = i + 1
			as.Signers = append(as.Signers, *s)
		}
	}
	if len(as.Signers) == 0 {
		return nil, fmt.Errorf("allowed signers %s: no signers listed", name)
	}
	return as, nil
}

func parseAllowedLine(line string) (*AllowedSigner, error) {
	line = strings.TrimSpace(strings.TrimSuffix(line, "\r"))
	if line == "" || line[0] == '#' {
		return nil, nil
	}
	var principals, rest string
	if line[0] == '"' {
		// A quoted principals field, as OpenSSH's strdelimw allows.
		end := strings.IndexByte(line[1:], '"')
		if end < 0 {
			return nil, errors.New("unterminated quote in principals")
		}
		principals, rest = line[1:end+1], line[end+2:]
	} else {
		i := strings.IndexAny(line, " \t")
		if i < 0 {
			return nil, errors.New("want: principals [options] keytype base64-key [comment]")
		}
		principals, rest = line[:i], line[i:]
	}
	if principals == "" {
		return nil, errors.New("empty principals")
	}
	rest = strings.TrimLeft(rest, " \t")
	if rest == "" || rest[0] == '#' {
		return nil, errors.New("no key after the principals")
	}
	key, _, options, _, err := ssh.ParseAuthorizedKey([]byte(rest))
	if err != nil {
		return nil, fmt.Errorf("no valid key (want: principals [options] keytype base64-key [comment]): %v", err)
	}
	s := &AllowedSigner{Principals: principals, Key: key}
	for _, opt := range options {
		if err := s.setOption(opt); err != nil {
			return nil, err
		}
	}
	if !s.CertAuthority {
		if err := checkKeyType(key); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (s *AllowedSigner) setOption(opt string) error {
	name, value, hasValue := strings.Cut(opt, "=")
	name = strings.ToLower(name) // OpenSSH matches option names case-insensitively
	if hasValue {
		v, err := dequote(value)
		if err != nil {
			return fmt.Errorf("option %s: %w", name, err)
		}
		value = v
	}
	var err error
	switch {
	case name == "cert-authority" && !hasValue:
		s.CertAuthority = true
	case name == "namespaces" && hasValue:
		s.Namespaces = value
	case name == "valid-after" && hasValue:
		s.ValidAfter, err = parseSSHTime(value)
	case name == "valid-before" && hasValue:
		s.ValidBefore, err = parseSSHTime(value)
	default:
		return fmt.Errorf("unsupported option %q (cert-authority, namespaces=\"...\", valid-after=\"...\", valid-before=\"...\")", opt)
	}
	if err != nil {
		return fmt.Errorf("option %s: %w", name, err)
	}
	return nil
}

// dequote undoes OpenSSH's option quoting: "value", with \" inside.
func dequote(v string) (string, error) {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return "", errors.New("value must be in double quotes")
	}
	return strings.ReplaceAll(v[1:len(v)-1], `\"`, `"`), nil
}

// parseSSHTime reads OpenSSH's absolute times: YYYYMMDD, YYYYMMDDHHMM or
// YYYYMMDDHHMMSS, in local time, or UTC with a trailing Z.
func parseSSHTime(v string) (time.Time, error) {
	loc := time.Local
	if s, ok := strings.CutSuffix(v, "Z"); ok {
		v, loc = s, time.UTC
	} else if s, ok := strings.CutSuffix(v, "UTC"); ok {
		v, loc = s, time.UTC
	}
	layout := map[int]string{8: "20060102", 12: "200601021504", 14: "20060102150405"}[len(v)]
	if layout == "" {
		return time.Time{}, fmt.Errorf("time %q: want YYYYMMDD[HHMM[SS]][Z]", v)
	}
	t, err := time.ParseInLocation(layout, v, loc)
	if err != nil {
		return time.Time{}, fmt.Errorf("time %q: want YYYYMMDD[HHMM[SS]][Z]", v)
	}
	return t, nil
}

// matchPattern is OpenSSH's match_pattern: * matches any run, ? one byte.
func matchPattern(s, pattern string) bool {
	for {
		if pattern == "" {
			return s == ""
		}
		switch pattern[0] {
		case '*':
			for pattern != "" && pattern[0] == '*' {
				pattern = pattern[1:]
			}
			if pattern == "" {
				return true
			}
			for i := 0; i <= len(s); i++ {
				if matchPattern(s[i:], pattern) {
					return true
				}
			}
			return false
		case '?':
			if s == "" {
				return false
			}
		default:
			if s == "" || s[0] != pattern[0] {
				return false
			}
		}
		s, pattern = s[1:], pattern[1:]
	}
}

// matchPatternList is OpenSSH's match_pattern_list for a comma-separated
// list: false if any !negated pattern matches, else true if any pattern
// matches.
func matchPatternList(s, list string) bool {
	matched := false
	for _, p := range strings.Split(list, ",") {
		if neg, ok := strings.CutPrefix(p, "!"); ok {
			if matchPattern(s, neg) {
				return false
			}
		} else if matchPattern(s, p) {
			matched = true
		}
	}
	return matched
}

// Verified is who signed a plan.
type Verified struct {
	Principals  string // the allowed_signers line's principals (or the pinned principal)
	KeyType     string
	Fingerprint string // SHA256:...
	Line        int    // of the allowed_signers file
}

func (v *Verified) String() string {
	return fmt.Sprintf("%s (%s key %s)", v.Principals, v.KeyType, v.Fingerprint)
}

// allow finds the line that lets key sign in namespace at now, for
// principal if it is not empty (as `ssh-keygen -Y verify -I principal`),
// or for any principal. The error says why each candidate line did not.
func (as *AllowedSigners) allow(key ssh.PublicKey, namespace, principal string, now time.Time) (*Verified, error) {
	want := key.Marshal()
	fp := ssh.FingerprintSHA256(key)
	var why []string
	for _, s := range as.Signers {
		if s.CertAuthority || !bytes.Equal(s.Key.Marshal(), want) {
			continue
		}
		switch {
		case principal != "" && !matchPatternList(principal, s.Principals):
			why = append(why, fmt.Sprintf("line %d lists it for %q, not %q", s.Line, s.Principals, principal))
		case s.Namespaces != "" && !matchPatternList(namespace, s.Namespaces):
			why = append(why, fmt.Sprintf("line %d (%s) allows it only for namespaces %q, not %q", s.Line, s.Principals, s.Namespaces, namespace))
		case !s.ValidAfter.IsZero() && now.Before(s.ValidAfter):
			why = append(why, fmt.Sprintf("line %d (%s): key not valid before %s", s.Line, s.Principals, s.ValidAfter.Format(time.RFC3339)))
		case !s.ValidBefore.IsZero() && now.After(s.ValidBefore):
			why = append(why, fmt.Sprintf("line %d (%s): key expired at %s", s.Line, s.Principals, s.ValidBefore.Format(time.RFC3339)))
		default:
			v := &Verified{Principals: s.Principals, KeyType: key.Type(), Fingerprint: fp, Line: s.Line}
			if principal != "" {
				v.Principals = principal
			}
			return v, nil
		}
	}
	who := ""
	if principal != "" {
		who = fmt.Sprintf(" for principal %q", principal)
	}
	if len(why) == 0 {
		return nil, fmt.Errorf("signed by %s key %s, which is not listed in allowed signers %s%s", key.Type(), fp, as.Path, who)
	}
	return nil, fmt.Errorf("signed by %s key %s, which allowed signers %s does not allow%s: %s", key.Type(), fp, as.Path, who, strings.Join(why, "; "))
}
