package cli_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"nksrun/cmd/nksrun/cli"
	"nksrun/engine/shell"
	"nksrun/testdata/testbed"
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
	bin := testbed.NksrunBinary(t)
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

	// With a log file the events go to the file and the terminal still
	// gets the progress line (cleared at the end), nothing else.
	logFile := filepath.Join(tm.dir, "run.log")
	code, raw = tm.run(shell.Quote(bin)+" plan --log-format json --log-file "+shell.Quote(logFile)+" "+conn+" "+shell.Quote(e.runbook)+" > /dev/null", "", "")
	logged, _ := os.ReadFile(logFile)
	if code != "0" || !strings.Contains(raw, "planning 4/4 targets") || strings.Contains(raw, "host_result") || !strings.HasSuffix(strings.TrimRight(raw, "# "), "\r\033[K") {
		t.Errorf("plan --log-file on a terminal: exit %s, want the progress line only, cleared:\n%q", code, raw)
	}
	if strings.Count(string(logged), `"type":"host_result"`) != 4 {
		t.Errorf("log file: want 4 host_result lines:\n%s", logged)
	}
}

func quoteAll(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = shell.Quote(a)
	}
	return out
}

// TestE2EDoctor: doctor (the built-in runbooks, from a directory without
// any) lists rows in guide order, exits 2 with --detailed-exitcode when it
// finds a problem, and its FIX is a command that runs as printed, with the
// connection flags given: typed into a terminal and confirmed, it repairs
// the drift.
func TestE2EDoctor(t *testing.T) {
	e := newE2E(t)
	e.reset(t)
	bin := testbed.NksrunBinary(t) // before leaving the module's directory
	t.Chdir(t.TempDir())
	code, out, errs := nksrun(t, append([]string{"doctor", "--detailed-exitcode", "-o", "json"}, e.conn()...)...)
	if code != cli.ExitChanges {
		t.Fatalf("doctor --detailed-exitcode: exit %d, want 2\n%s\n%s", code, out, errs)
	}
	var rows []struct{ Section, Runbook, Status, Fix string }
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatal(err)
	}
	var sections []string
	fix := ""
	for _, r := range rows {
		sections = append(sections, r.Section)
		if r.Runbook == "logrotate" {
			if r.Status != "found" {
				t.Errorf("logrotate: %s, want found", r.Status)
			}
			fix = r.Fix
		}
	}
	if strings.Join(sections, " ") != "1 2 3 4 5 6 7 8 9 10 11 12 13" {
		t.Errorf("rows in order %v, want guide order §1..§13", sections)
	}
	want := "nksrun apply --kubeconfig " + e.tb.Kubeconfig + " --identity " + e.tb.KeyPath + " --known-hosts " + e.tb.KnownHosts + " logrotate"
	if fix != want {
		t.Fatalf("FIX = %q\nwant  %q", fix, want)
	}
	// Run it as printed (nksrun is the binary under test) and answer yes.
	tm := newTmux(t)
	tm.tmux("send-keys", "-t", "t", "PATH="+shell.Quote(filepath.Dir(bin))+":$PATH; export NKSRUN_CONFIG=/nonexistent; cd "+shell.Quote(t.TempDir()), "Enter")
	if code, raw := tm.run(fix+" --lock-file "+shell.Quote(e.lockFile), "Only 'yes' is accepted", "yes"); code != "0" {
		t.Fatalf("FIX command: exit %s\n%q", code, raw)
	}
	for _, n := range e.docker {
		if got := e.file(t, n); got != string(e.want) {
			t.Errorf("%s not repaired by the FIX command:\n%s", n.Name, got)
		}
	}
	// Nothing left to apply: no FIX, no docker node in the evidence (the
	// containerd node's kubelet log limits may still be reported).
	code, out, _ = nksrun(t, append([]string{"doctor", "-o", "json"}, append(e.conn(), "logrotate")...)...)
	if code != 0 || strings.Contains(out, `"fix"`) {
		t.Errorf("doctor after the fix: exit %d\n%s", code, out)
	}
	for _, n := range e.docker {
		if strings.Contains(out, n.Name) {
			t.Errorf("doctor after the fix still names %s:\n%s", n.Name, out)
		}
	}
}

// TestBashCompletion loads the bash script into a real bash and completes
// a command, a runbook name and an -o value with the built binary.
func TestBashCompletion(t *testing.T) {
	bin := testbed.NksrunBinary(t)
	script := `source <(nksrun completion bash)
c() { COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _nksrun; echo "${COMPREPLY[*]}"; }
c nksrun pl; c nksrun plan logr; c nksrun plan -o m; c nksrun inventory --output j`
	cmd := exec.Command("bash", "-c", script)
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"), "HOME="+t.TempDir(), "XDG_CACHE_HOME=", "XDG_CONFIG_HOME=")
	out, err := cmd.CombinedOutput()
	if got, want := string(out), "plan\nlogrotate\nmarkdown\njson\n"; err != nil || got != want {
		t.Errorf("bash completion: %v\ngot:\n%s\nwant:\n%s", err, got, want)
	}
}
