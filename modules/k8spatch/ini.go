package k8spatch

import (
	"sort"
	"strings"
)

// SetINI sets options in one section of an INI document (the gcfg dialect
// of OpenStack cloud-config files) and changes nothing else: comments,
// order, blank lines and other sections are kept byte for byte.
//
//   - An option already set to the value is left alone (no change).
//   - An option set to another value is rewritten in place, keeping its
//     spelling and the file's `key = value` / `key=value` style; if the
//     section appears more than once (what the guide's script leaves behind
//     after several runs), every occurrence of the option is set.
//   - A missing option is added at the end of the first occurrence of the
//     section; a missing section is appended once. A section is never
//     duplicated.
//
// Section and option names match case-insensitively, as gcfg does. It
// returns the new document and one note per option it changed.
func SetINI(doc, section string, set map[string]string) (string, []string) {
	return SetINIWith(doc, section, set, nil)
}

// ValueEqual says whether an option's current value (bare: the key has no
// '=' at all) already means want.
type ValueEqual func(have string, bare bool, want string) bool

// BoolEqual compares values the way gcfg (and so the OpenStack cloud
// provider and the cinder CSI driver) parses a bool: true/yes/on/1 and
// false/no/off/0, any case, surrounding blanks ignored; a bare key is
// true. A value that is not a bool word is compared exactly.
func BoolEqual(have string, bare bool, want string) bool {
	w, ok := parseBool(want)
	if !ok {
		return !bare && have == want
	}
	if bare {
		return w
	}
	h, ok := parseBool(have)
	return ok && h == w
}

func parseBool(s string) (bool, bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true", "yes", "on", "1":
		return true, true
	case "false", "no", "off", "0":
		return false, true
	}
	return false, false
}

// SetINIWith is SetINI with a value comparison (nil: exact).
func SetINIWith(doc, section string, set map[string]string, equal ValueEqual) (string, []string) {
	// Section and key names are compared as the file's are read: trimmed
	// (a name with outer blanks could never be found again, and every run
	// would add another copy; found by FuzzSetINI).
	section = strings.TrimSpace(section)
	if len(set) > 0 {
		trimmed := make(map[string]string, len(set))
		for k, v := range set {
			trimmed[strings.TrimSpace(k)] = v
		}
		set = trimmed
	}
	if equal == nil {
		equal = func(have string, bare bool, want string) bool { return !bare && have == want }
	}
	keys := make([]string, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var notes []string
	for _, k := range keys {
		var note string
		doc, note = setOne(doc, section, k, set[k], equal)
		if note != "" {
			notes = append(notes, note)
		}
	}
	return doc, notes
}

// UnsetINI removes options from a section (every occurrence).
func UnsetINI(doc, section string, keys []string) (string, []string) {
	var notes []string
	for _, k := range keys {
		lines := splitLines(doc)
		recs := parseINI(lines)
		var keep []string
		removed := false
		for i, r := range recs {
			if r.kind == lineKey && strings.EqualFold(r.section, section) && strings.EqualFold(r.key, k) {
				removed = true
				continue
			}
			keep = append(keep, lines[i])
		}
		if removed {
			doc = strings.Join(keep, "")
			notes = append(notes, "unset "+k)
		}
	}
	return doc, notes
}

type lineKind int

const (
	lineOther lineKind = iota // blank or comment
	lineSection
	lineKey
)

type iniLine struct {
	kind    lineKind
	section string // the section the line is in (for a header: its own name)
	key     string
	value   string
	sepAt   int // byte offset of '=' in the line, -1 when the key has no value
}

// splitLines splits keeping line terminators, so joining restores the text.
func splitLines(doc string) []string {
	if doc == "" {
		return nil
	}
	lines := strings.SplitAfter(doc, "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	return lines
}

func parseINI(lines []string) []iniLine {
	out := make([]iniLine, len(lines))
	cur := ""
	for i, raw := range lines {
		l := strings.TrimSpace(strings.TrimRight(raw, "\r\n"))
		switch {
		case l == "" || l[0] == ';' || l[0] == '#':
			out[i] = iniLine{kind: lineOther, section: cur}
		case l[0] == '[':
			name := l[1:]
			if j := strings.IndexByte(name, ']'); j >= 0 {
				name = name[:j]
			}
			cur = strings.TrimSpace(name)
			out[i] = iniLine{kind: lineSection, section: cur}
		default:
			eq := strings.IndexByte(raw, '=')
			if eq < 0 {
				out[i] = iniLine{kind: lineKey, section: cur, key: l, sepAt: -1}
				continue
			}
			out[i] = iniLine{kind: lineKey, section: cur, key: strings.TrimSpace(raw[:eq]), value: iniValue(raw[eq+1:]), sepAt: eq}
		}
	}
	return out
}

// iniValue is a value as gcfg reads it: trimmed, trailing comment dropped,
// surrounding quotes removed.
func iniValue(s string) string {
	s = strings.TrimSpace(strings.TrimRight(s, "\r\n"))
	if strings.HasPrefix(s, `"`) {
		if j := strings.Index(s[1:], `"`); j >= 0 {
			return s[1 : j+1]
		}
		return s
	}
	for _, c := range []string{" ;", " #", "\t;", "\t#"} {
		if j := strings.Index(s, c); j >= 0 {
			s = strings.TrimSpace(s[:j])
		}
	}
	return s
}

// style is the separator new lines use: the first option's, else "=".
func style(recs []iniLine, lines []string) string {
	for i, r := range recs {
		if r.kind == lineKey && r.sepAt >= 0 {
			l := lines[i]
			before := r.sepAt > 0 && (l[r.sepAt-1] == ' ' || l[r.sepAt-1] == '\t')
			after := r.sepAt+1 < len(l) && (l[r.sepAt+1] == ' ' || l[r.sepAt+1] == '\t')
			if before && after {
				return " = "
			}
			return "="
		}
	}
	return "="
}

func quoteValue(v string) string {
	if v == "" || strings.ContainsAny(v, ";#\"") || strings.TrimSpace(v) != v {
		return `"` + strings.ReplaceAll(strings.ReplaceAll(v, `\`, `\\`), `"`, `\"`) + `"`
	}
	return v
}

func setOne(doc, section, key, value string, equal ValueEqual) (string, string) {
	lines := splitLines(doc)
	recs := parseINI(lines)
	sep := style(recs, lines)
	found, changed := false, false
	for i, r := range recs {
		if r.kind != lineKey || !strings.EqualFold(r.section, section) || !strings.EqualFold(r.key, key) {
			continue
		}
		found = true
		if equal(r.value, r.sepAt < 0, value) {
			continue
		}
		lines[i] = replaceValue(lines[i], r.sepAt, r.key, sep, value)
		changed = true
	}
	if found {
		if !changed {
			return doc, ""
		}
		return strings.Join(lines, ""), "set " + key
	}
	// Insert after the last option (or the header) of the first occurrence.
	insertAt := -1
	for i, r := range recs {
		if r.kind == lineSection && strings.EqualFold(r.section, section) {
			insertAt = i + 1
			for j := i + 1; j < len(recs) && recs[j].kind != lineSection; j++ {
				if recs[j].kind == lineKey {
					insertAt = j + 1
				}
			}
			break
		}
	}
	newLine := key + sep + quoteValue(value) + "\n"
	if insertAt >= 0 {
		if insertAt > 0 && !strings.HasSuffix(lines[insertAt-1], "\n") {
			lines[insertAt-1] += "\n"
		}
		out := append(append(append([]string{}, lines[:insertAt]...), newLine), lines[insertAt:]...)
		return strings.Join(out, ""), "add " + key
	}
	var b strings.Builder
	b.WriteString(doc)
	if doc != "" {
		if !strings.HasSuffix(doc, "\n") {
			b.WriteString("\n")
		}
		if strings.TrimSpace(lines[len(lines)-1]) != "" {
			b.WriteString("\n")
		}
	}
	b.WriteString("[" + section + "]\n" + newLine)
	return b.String(), "add section " + section + " with " + key
}

// replaceValue rewrites the value of an option line, keeping its indent,
// spacing around '=', trailing comment and line ending.
func replaceValue(raw string, sepAt int, key, sep, value string) string {
	body := strings.TrimRight(raw, "\r\n")
	eol := raw[len(body):]
	if sepAt < 0 {
		indent := raw[:len(raw)-len(strings.TrimLeft(raw, " \t"))]
		return indent + key + sep + quoteValue(value) + eol
	}
	rest := body[sepAt+1:]
	lead := rest[:len(rest)-len(strings.TrimLeft(rest, " \t"))]
	tail := ""
	if !strings.HasPrefix(strings.TrimSpace(rest), `"`) {
		for _, c := range []string{" ;", " #", "\t;", "\t#"} {
			if j := strings.Index(rest, c); j >= 0 && (tail == "" || j < len(rest)-len(tail)) {
				tail = rest[j:]
			}
		}
	}
	return body[:sepAt+1] + lead + quoteValue(value) + tail + eol
}
