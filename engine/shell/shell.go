// Package shell builds command lines for the POSIX sh that runs on nodes
// (and for cron). It is the one place that quotes a value for a shell.
package shell

import "strings"

// Quote quotes s as one sh word: inside single quotes nothing is special
// except the quote itself, written as '\”.
func Quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
