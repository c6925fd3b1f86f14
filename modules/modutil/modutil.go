// Package modutil holds the small helpers several modules share: shell
// quoting, unified diffs and parameter decoding.
package modutil

import (
	"bytes"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/pmezard/go-difflib/difflib"
)

// MaxDiffBytes caps what a plan shows of one file: plans are read by people.
const MaxDiffBytes = 256 << 10

// Diff returns a unified diff of old and new text, "" when equal. Binary or
// oversized content is summarised instead of printed.
func Diff(old, new []byte, oldName, newName string) string {
	if bytes.Equal(old, new) {
		return ""
	}
	if !isText(old) || !isText(new) {
		return fmt.Sprintf("binary content differs (%d → %d bytes)\n", len(old), len(new))
	}
	if len(old) > MaxDiffBytes || len(new) > MaxDiffBytes {
		return fmt.Sprintf("content differs (%d → %d bytes; too large to show)\n", len(old), len(new))
	}
	d, err := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
		A: splitLines(old), B: splitLines(new),
		FromFile: oldName, ToFile: newName, Context: 3,
	})
	if err != nil {
		return fmt.Sprintf("content differs (%v)\n", err)
	}
	return d
}

// splitLines is difflib.SplitLines except that empty content has no lines
// (difflib would diff a new file against one empty line).
// splitLines splits b into lines that keep their "\n". A last line without
// one carries diff(1)'s "\ No newline at end of file" marker with it, so
// the marker follows that line wherever the diff prints it (removed, added
// or context), and "X" and "X\n" compare as different lines. (difflib's
// SplitLines adds a phantom empty last line instead.)
func splitLines(b []byte) []string {
	if len(b) == 0 {
		return nil
	}
	lines := strings.SplitAfter(string(b), "\n")
	if last := len(lines) - 1; lines[last] == "" {
		lines = lines[:last]
	} else {
		lines[last] += "\n\\ No newline at end of file\n"
	}
	return lines
}

func isText(b []byte) bool {
	return utf8.Valid(b) && !bytes.ContainsRune(b, 0)
}

// Short abbreviates a hash for summaries.
func Short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}
