package shell

import (
	"os/exec"
	"testing"
)

// TestQuoteRoundTrip runs each quoted word through a real sh and checks it
// comes back as exactly one argument, byte for byte.
func TestQuoteRoundTrip(t *testing.T) {
	for _, s := range []string{"", "plain", "it's", "a b", "$(id)", "`id`", "\"q\"", "new\nline", "'", "''", "\\", "*", "-n", "semi;colon", "%s %d"} {
		out, err := exec.Command("sh", "-c", `printf '%s' `+Quote(s)+` "$@" ; printf '|%d' $#`, "sh").Output()
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		if got, want := string(out), s+"|0"; got != want {
			t.Errorf("Quote(%q) came back as %q, want %q", s, got, want)
		}
	}
}
