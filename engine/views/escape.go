package views

import (
	"fmt"
	"strings"
)

// Escape makes text from nodes and objects (names, summaries, errors,
// evidence, diffs) harmless on a terminal and in Markdown: C0 and C1 control
// characters (ESC, CSI, OSC 52 clipboard writes, BEL, carriage return that
// overwrites a line) and bidirectional overrides are shown as \xNN or \uNNNN
// instead of being interpreted. Newlines and tabs are kept: diffs are
// multi-line; single-line fields go through oneLine as well.
func Escape(s string) string {
	if !needsEscape(s) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\n' || r == '\t':
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r == 0xfffd || (r >= 0x80 && r <= 0x9f) || isBidi(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func needsEscape(s string) bool {
	for _, r := range s {
		if (r < 0x20 && r != '\n' && r != '\t') || r == 0x7f || (r >= 0x80 && r <= 0x9f) || r == 0xfffd || isBidi(r) {
			return true
		}
	}
	return false
}

// isBidi reports the Unicode bidirectional embedding, override and isolate
// controls ("Trojan Source"): they reorder what a reviewer sees.
func isBidi(r rune) bool {
	return (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) || r == 0x200e || r == 0x200f
}

// oneLine shows a multi-line value on one line (an error with the remote
// command's stderr, a reason): a newline in it could otherwise forge a line
// of the plan.
func oneLine(s string) string {
	return strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", `\n`)
}

// escapeJSONStrings escapes every string (keys too) of a JSON document;
// false when nothing needed escaping.
func escapeJSONStrings(doc []byte) ([]byte, bool) {
	return mapJSONStrings(doc, Escape, true)
}
