package grubarg

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
)

// Edit ensures that arg is present (or absent) exactly once in the shell
// variable `variable` (GRUB_CMDLINE_LINUX) of an /etc/default/grub file.
//
// /etc/default/grub is a shell fragment, so Edit understands what a shell
// would do with it and refuses what it cannot edit safely rather than
// guessing:
//   - double-quoted, single-quoted and unquoted values; the quoting, the
//     other arguments, their order and any trailing comment are kept;
//   - several assignments: the last one that does not refer to itself wins,
//     and later ones of the form VAR="$VAR more" extend it; only those
//     lines count and only the last one gets the new argument;
//   - duplicates of arg among them are removed (the first one stays);
//   - no assignment at all: `VAR="arg"` is appended.
//
// Command substitution, backslashes, other variables or multi-line values
// are refused with an error naming the line. Arguments are compared as whole
// words: `cgroup.memory=nokmem` is not `cgroup.memory=nosocket` (the kernel
// applies every occurrence of a key like cgroup.memory= or console=, so
// other values of the same key are left alone).
func Edit(src []byte, variable, arg string, present bool) ([]byte, error) {
	if !varRE.MatchString(variable) {
		return nil, fmt.Errorf("variable %q is not a shell variable name", variable)
	}
	if err := ValidArg(arg); err != nil {
		return nil, err
	}
	lines := splitLines(src)
	assignRE := regexp.MustCompile(`^(\s*(?:export\s+)?` + variable + `=)(.*)$`)
	var assigns []*assignment
	for i, l := range lines {
		body := strings.TrimRight(l, "\r\n")
		m := assignRE.FindStringSubmatch(body)
		if m == nil {
			continue
		}
		a, err := parseAssignment(variable, m[1], m[2], l[len(body):])
		if err != nil {
			return nil, fmt.Errorf("line %d: cannot edit %s safely: %v (edit the file by hand)", i+1, variable, err)
		}
		a.index = i
		assigns = append(assigns, a)
	}
	if len(assigns) == 0 {
		if !present {
			return src, nil
		}
		out := append([]byte{}, src...)
		if len(out) > 0 && out[len(out)-1] != '\n' {
			out = append(out, '\n')
		}
		return append(out, fmt.Sprintf("%s=\"%s\"\n", variable, arg)...), nil
	}
	// Lines that make up the effective value.
	start := 0
	for i, a := range assigns {
		if !a.selfRef {
			start = i
		}
	}
	live := assigns[start:]
	seen := false
	for _, a := range live {
		for j := 0; j < len(a.words); {
			w := a.words[j]
			if w.text != arg {
				j++
				continue
			}
			if present && !seen {
				seen = true
				j++
				continue
			}
			a.remove(j)
		}
	}
	if present && !seen {
		live[len(live)-1].add(arg)
	}
	for _, a := range live {
		lines[a.index] = a.String()
	}
	out := []byte(strings.Join(lines, ""))
	if bytes.Equal(out, src) {
		return src, nil
	}
	return out, nil
}

var (
	varRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	argRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.,:/=+@%~-]*$`)
)

// ValidArg checks that arg is one kernel argument that needs no shell
// quoting (no spaces, quotes, $ or backslashes).
func ValidArg(arg string) error {
	if !argRE.MatchString(arg) {
		return fmt.Errorf("kernel argument %q: want one word of letters, digits and _ . , : / = + @ %% ~ - (no spaces, quotes or $)", arg)
	}
	return nil
}

func splitLines(src []byte) []string {
	if len(src) == 0 {
		return nil
	}
	return strings.SplitAfter(string(src), "\n")
}

type word struct {
	text       string
	start, end int // byte offsets in inner
}

type assignment struct {
	index   int
	prefix  string // up to and including '='
	quote   string // `"`, `'` or ""
	inner   string // the value between the quotes
	suffix  string // after the closing quote: spaces, comment
	eol     string
	words   []word
	selfRef bool // the value refers to the variable itself ($VAR / ${VAR})
}

func parseAssignment(variable, prefix, rest, eol string) (*assignment, error) {
	a := &assignment{prefix: prefix, eol: eol}
	switch {
	case strings.HasPrefix(rest, `"`), strings.HasPrefix(rest, `'`):
		a.quote = rest[:1]
		if a.quote == `"` && strings.Contains(rest, "\\") {
			return nil, fmt.Errorf("backslash in the value")
		}
		end := strings.Index(rest[1:], a.quote)
		if end < 0 {
			return nil, fmt.Errorf("the quoted value does not end on this line")
		}
		a.inner = rest[1 : 1+end]
		a.suffix = rest[2+end:]
		if err := checkSuffix(a.suffix); err != nil {
			return nil, err
		}
		if a.quote == `"` && strings.ContainsAny(a.inner, "\\`") {
			return nil, fmt.Errorf("backslash or backquote in the value")
		}
	default:
		i := strings.IndexAny(rest, " \t")
		if i < 0 {
			i = len(rest)
		}
		a.inner, a.suffix = rest[:i], rest[i:]
		if err := checkSuffix(a.suffix); err != nil {
			return nil, err
		}
		if strings.ContainsAny(a.inner, "\"'\\`") {
			return nil, fmt.Errorf("partly quoted value")
		}
	}
	self := []string{"$" + variable, "${" + variable + "}"}
	for _, w := range fieldsWithOffsets(a.inner) {
		if a.quote != `'` && strings.Contains(w.text, "$") {
			if w.text == self[0] || w.text == self[1] {
				a.selfRef = true
			} else {
				return nil, fmt.Errorf("the value uses %q (only $%s itself is understood)", w.text, variable)
			}
		}
		a.words = append(a.words, w)
	}
	return a, nil
}

// checkSuffix accepts only blanks and a comment after a value.
func checkSuffix(s string) error {
	if s == "" {
		return nil
	}
	if s[0] != ' ' && s[0] != '\t' {
		return fmt.Errorf("unexpected %q right after the value", s)
	}
	if t := strings.TrimLeft(s, " \t"); t != "" && !strings.HasPrefix(t, "#") {
		return fmt.Errorf("unexpected %q after the value", t)
	}
	return nil
}

func fieldsWithOffsets(s string) []word {
	var out []word
	start := -1
	for i := 0; i <= len(s); i++ {
		sp := i == len(s) || s[i] == ' ' || s[i] == '\t'
		switch {
		case sp && start >= 0:
			out = append(out, word{text: s[start:i], start: start, end: i})
			start = -1
		case !sp && start < 0:
			start = i
		}
	}
	return out
}

// remove deletes word j and the blank before it (or after it, for the first).
func (a *assignment) remove(j int) {
	w := a.words[j]
	from, to := w.start, w.end
	if j > 0 {
		from = a.words[j-1].end
	} else if j+1 < len(a.words) {
		to = a.words[j+1].start
	}
	a.inner = a.inner[:from] + a.inner[to:]
	a.words = fieldsWithOffsets(a.inner)
}

// add appends word w after the last word, keeping trailing blanks.
func (a *assignment) add(w string) {
	trimmed := strings.TrimRight(a.inner, " \t")
	trail := a.inner[len(trimmed):]
	if trimmed == "" {
		a.inner = w + trail
	} else {
		a.inner = trimmed + " " + w + trail
	}
	if a.quote == "" && len(fieldsWithOffsets(a.inner)) > 1 {
		a.quote = `"`
	}
	if a.quote == "" && a.suffix != "" && !strings.HasPrefix(a.suffix, " ") && !strings.HasPrefix(a.suffix, "\t") {
		a.suffix = " " + a.suffix
	}
	a.words = fieldsWithOffsets(a.inner)
}

func (a *assignment) String() string {
	return a.prefix + a.quote + a.inner + a.quote + a.suffix + a.eol
}

// Words returns the effective words of variable in an /etc/default/grub
// (after the same rules as Edit); used for plan summaries.
func Words(src []byte, variable string) ([]string, error) {
	lines := splitLines(src)
	assignRE := regexp.MustCompile(`^(\s*(?:export\s+)?` + regexp.QuoteMeta(variable) + `=)(.*)$`)
	var out []string
	for i, l := range lines {
		body := strings.TrimRight(l, "\r\n")
		m := assignRE.FindStringSubmatch(body)
		if m == nil {
			continue
		}
		a, err := parseAssignment(variable, m[1], m[2], "")
		if err != nil {
			return nil, fmt.Errorf("line %d: %v", i+1, err)
		}
		var ws []string
		for _, w := range a.words {
			if a.selfRef && (w.text == "$"+variable || w.text == "${"+variable+"}") {
				ws = append(ws, out...)
				continue
			}
			ws = append(ws, w.text)
		}
		out = ws
	}
	return out, nil
}
