package cli_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"nksrun/engine/shell"
)

// tmuxTerm is a real terminal (a tmux pane) that records every byte the
// programs in it write to the terminal.
type tmuxTerm struct {
	t    *testing.T
	sock string
	dir  string
	n    int
}

func newTmux(t *testing.T) *tmuxTerm {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Fatalf("tmux is needed for the terminal test: %v", err)
	}
	dir := t.TempDir()
	tm := &tmuxTerm{t: t, sock: filepath.Join(dir, "sock"), dir: dir}
	tm.tmux("new-session", "-d", "-s", "t", "-x", "220", "-y", "50", "sh")
	t.Cleanup(func() { _ = exec.Command("tmux", "-S", tm.sock, "kill-server").Run() })
	return tm
}

func (tm *tmuxTerm) tmux(args ...string) string {
	tm.t.Helper()
	cmd := exec.Command("tmux", append([]string{"-S", tm.sock}, args...)...)
	cmd.Env = append(os.Environ(), "TERM=xterm-256color")
	out, err := cmd.CombinedOutput()
	if err != nil {
		tm.t.Fatalf("tmux %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// run types line into the shell and waits (bounded) until it has finished;
// answer, when not empty, is typed once the pane shows prompt. It returns
// the exit code and everything written to the terminal meanwhile.
func (tm *tmuxTerm) run(line, prompt, answer string) (string, string) {
	tm.t.Helper()
	tm.n++
	raw := filepath.Join(tm.dir, "raw"+string(rune('0'+tm.n)))
	done := filepath.Join(tm.dir, "done"+string(rune('0'+tm.n)))
	tm.tmux("pipe-pane", "-t", "t", "-o", "cat >> "+shell.Quote(raw))
	tm.tmux("send-keys", "-t", "t", line+"; echo $? > "+shell.Quote(done), "Enter")
	answered := prompt == ""
	deadline := time.Now().Add(4 * time.Minute)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(done); err == nil && len(b) > 0 {
			tm.tmux("pipe-pane", "-t", "t") // stop recording
			time.Sleep(100 * time.Millisecond)
			r, _ := os.ReadFile(raw)
			return strings.TrimSpace(string(b)), string(r)
		}
		if !answered && strings.Contains(tm.tmux("capture-pane", "-p", "-t", "t"), prompt) {
			tm.tmux("send-keys", "-t", "t", answer, "Enter")
			answered = true
		}
		time.Sleep(200 * time.Millisecond)
	}
	tm.t.Fatalf("%s: did not finish; pane:\n%s", line, tm.tmux("capture-pane", "-p", "-t", "t"))
	return "", ""
}

// TestE2ETerminal: on a terminal nksrun shows a live progress line and
// colours; NO_COLOR and a redirected stdout turn colour off; the
// confirmation prompt goes to the terminal, never into redirected stdout.
func TestE2ETerminal(t *testing.T) {
	e := newE2E(t)
	e.reset(t)
	bin := binary(t)
	tm := newTmux(t)
	conn := strings.Join(quoteAll(e.conn()), " ")
	out := filepath.Join(tm.dir, "stdout.txt")
	planFile := filepath.Join(tm.dir, "plan.json")

	// apply with stdout redirected: the plan goes to the file, the prompt
	// and the progress line to the terminal; "no" cancels.
	code, raw := tm.run(shell.Quote(bin)+" apply --lock-file "+shell.Quote(e.lockFile)+" "+conn+" "+shell.Quote(e.runbook)+" > "+shell.Quote(out), "Only 'yes' is accepted", "no")
	file, _ := os.ReadFile(out)
	if code != "1" || !strings.Contains(raw, "Apply these changes?") || strings.Contains(string(file), "Apply these changes?") {
		t.Errorf("prompt: exit %s; terminal:\n%q\nstdout file:\n%s", code, raw, file)
	}
	if !strings.Contains(raw, "planning ") || !strings.Contains(raw, "/4 targets") {
		t.Errorf("no progress line (\"planning N/4 targets\") on the terminal:\n%q", raw)
	}
	if !strings.Contains(string(file), "changes on 3 nodes") || strings.Contains(string(file), "\033[") {
		t.Errorf("redirected stdout: want the grouped plan without colour:\n%s", file)
	}
	for _, n := range e.docker {
		if e.file(t, n) != drifted {
			t.Errorf("%s changed although the answer was no", n.Name)
		}
	}

	// A saved plan shown on the terminal is coloured, not with NO_COLOR.
	if code, _, errs := nksrun(t, append([]string{"plan", "--out", planFile}, append(e.conn(), e.runbook)...)...); code != 0 {
		t.Fatalf("plan --out: %d %s", code, errs)
	}
	code, raw = tm.run(shell.Quote(bin)+" show "+shell.Quote(planFile), "", "")
	if code != "0" || !strings.Contains(raw, "\033[33m~\033[0m") {
		t.Errorf("show on a terminal: exit %s, want colour:\n%q", code, raw)
	}
	code, raw = tm.run("NO_COLOR=1 "+shell.Quote(bin)+" show "+shell.Quote(planFile), "", "")
	if code != "0" || strings.Contains(raw, "\033[33m") || !strings.Contains(raw, "changes on 3 nodes") {
		t.Errorf("show with NO_COLOR: exit %s, want no colour:\n%q", code, raw)
	}
}

func quoteAll(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = shell.Quote(a)
	}
	return out
}
