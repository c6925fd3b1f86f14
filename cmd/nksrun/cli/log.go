package cli

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"nksrun/engine"
	"nksrun/engine/redact"
	"nksrun/engine/views"
)

// eventLog writes engine events as text lines or JSON lines (one object per
// event, schema in the README) to stderr or --log-file. The file is reopened
// on SIGHUP so logrotate can rotate it without losing lines: every line is
// written whole under the mutex, to the old file until the reopen, then to
// the new one.
type eventLog struct {
	mu       sync.Mutex
	json     bool
	w        io.Writer
	path     string
	file     *os.File
	hup      chan os.Signal
	stop     chan struct{}
	progress bool      // a terminal: one updating line instead of many
	tty      io.Writer // that terminal (stderr)
	verbose  bool      // -v: per-node lines on stderr too
	count    int
	total    int // targets expected in this phase (progress line)
	bad      int // unreachable or failed in this phase
	shown    bool
	secrets  *redact.Secrets
	run      string // run id, on every JSON line
	started  time.Time
	ended    bool
	phase    string // of the engine's last phase_start, for events without one
}

func newEventLog(format, path string, stderr io.Writer, secrets *redact.Secrets) (*eventLog, error) {
	l := &eventLog{w: stderr, secrets: secrets, started: time.Now()}
	var rnd [3]byte
	_, _ = rand.Read(rnd[:])
	l.run = fmt.Sprintf("%s-%d-%x", l.started.UTC().Format("20060102T150405Z"), os.Getpid(), rnd)
	switch format {
	case "json":
		l.json = true
	case "text", "":
	default:
		return nil, usageError{fmt.Sprintf("--log-format %q: want text or json", format)}
	}
	if path != "" {
		if err := l.open(path); err != nil {
			return nil, err
		}
		l.hup = make(chan os.Signal, 1)
		l.stop = make(chan struct{})
		signal.Notify(l.hup, syscall.SIGHUP)
		go l.reopenLoop()
	}
	// A terminal on stderr gets the progress line, unless stderr is where
	// the JSON lines go.
	if isTerminal(stderr) && (path != "" || !l.json) {
		l.progress, l.tty = true, stderr
	}
	return l, nil
}

func (l *eventLog) open(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("--log-file: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("--log-file: %w", err)
	}
	l.path, l.file, l.w = path, f, f
	return nil
}

func (l *eventLog) reopenLoop() {
	for {
		select {
		case <-l.hup:
			l.mu.Lock()
			old := l.file
			if err := l.open(l.path); err != nil {
				// Keep writing to the old file rather than losing lines.
				l.file, l.w = old, old
			} else {
				old.Close()
			}
			l.mu.Unlock()
		case <-l.stop:
			return
		}
	}
}

// event writes one engine event. The engine marks the start of each of its
// phases with phase_start; run_start and run_end, one per run, are written
// by start and end.
func (l *eventLog) event(ev engine.Event) {
	if l == nil {
		return
	}
	l.mu.Lock()
	// Each cluster's engine of a many-cluster run starts the same phase:
	// the progress counts over all of them.
	if ev.Type == engine.EventPhaseStart && (ev.Cluster == "" || ev.Phase != l.phase) {
		l.phase = ev.Phase
		l.count, l.bad = 0, 0
	}
	if ev.Phase == "" {
		ev.Phase = l.phase
	}
	l.mu.Unlock()
	l.write(ev)
}

func (l *eventLog) write(ev engine.Event) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	ev.V = engine.EventSchemaVersion
	ev.Run = l.run
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	ev.Time = ev.Time.UTC()
	ev.Message = l.secrets.Redact(ev.Message)
	if ev.Type == engine.EventTarget {
		l.count++
		if ev.Status == "unreachable" || ev.Status == "failed" {
			l.bad++
		}
	}
	if l.json {
		b, err := json.Marshal(ev)
		if err == nil {
			// One write per line: with O_APPEND a line is never interleaved
			// with another run's line in a shared log file.
			_, _ = l.w.Write(append(views.RedactJSON(b, l.secrets), '\n'))
		}
		if l.progress && engineEvent(ev) {
			l.drawProgress()
		}
		return
	}
	if l.progress && !l.verbose && l.file != nil {
		// A log file and a terminal: the lines to the file, the progress
		// line to the terminal.
		l.writeLine(ev)
		if engineEvent(ev) {
			l.drawProgress()
		}
		return
	}
	if l.progress && !l.verbose {
		// A terminal: one line that updates in place. Events in full are
		// in -v and in the JSON log; the plan and recap on stdout say
		// what happened to each node, so nothing is printed twice.
		l.drawProgress()
		return
	}
	if l.file == nil && !l.verbose {
		// Not a terminal, no log file: per-node events only with -v.
		return
	}
	l.writeLine(ev)
}

// engineEvent: run_start and run_end are the run's, not progress.
func engineEvent(ev engine.Event) bool {
	return ev.Type != engine.EventRunStart && ev.Type != engine.EventRunEnd
}

// writeLine writes ev as one text line to the log (stderr or the file).
func (l *eventLog) writeLine(ev engine.Event) {
	line := ev.Type
	if ev.Phase != "" {
		line = ev.Phase + " " + line
	}
	if ev.Cluster != "" {
		line = "cluster=" + ev.Cluster + " " + line
	}
	if ev.Runbook != "" {
		line += " " + ev.Runbook
	}
	if ev.Target != "" {
		line += " " + ev.Target
	}
	if ev.Step != "" {
		line += " step=" + ev.Step
	}
	if ev.Status != "" {
		line += ": " + ev.Status
	}
	if ev.Message != "" {
		line += ": " + ev.Message
	}
	line = strings.ReplaceAll(views.Escape(line), "\n", `\n`)
	if l.progress && l.w == l.tty {
		fmt.Fprint(l.w, "\r\033[K")
		l.shown = false
	}
	fmt.Fprintf(l.w, "%s %s\n", ev.Time.Format(time.RFC3339), line)
}

// phaseWords names the phases in the progress line.
var phaseWords = map[string]string{"plan": "planning", "apply": "applying", "recheck": "re-checking"}

// drawProgress rewrites the progress line: "planning 412/1000 nodes, 3
// unreachable".
func (l *eventLog) drawProgress() {
	word := phaseWords[l.phase]
	if word == "" {
		word = "working"
	}
	line := fmt.Sprintf("%s %d", word, l.count)
	if l.total > 0 {
		line += fmt.Sprintf("/%d", l.total)
	}
	line += " targets"
	if l.bad > 0 {
		line += fmt.Sprintf(", %d unreachable or failed", l.bad)
	}
	fmt.Fprintf(l.tty, "\r\033[K%s", line)
	l.shown = true
}

// expect sets how many targets the next phase works on.
func (l *eventLog) expect(n int) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total = n
}

// expectMore adds n to the targets the current phase works on (each
// cluster of a many-cluster run adds its own once its inventory is known).
func (l *eventLog) expectMore(n int) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total += n
}

// start writes run_start: JSON logs always, text logs only to a file (on a
// terminal it would be noise).
func (l *eventLog) start(command string) {
	if l == nil || (!l.json && l.file == nil) {
		return
	}
	l.write(engine.Event{Type: engine.EventRunStart, Command: command, Version: version(), PID: os.Getpid(), Time: l.started,
		Message: fmt.Sprintf("nksrun %s %s", command, version())})
}

// end writes run_end with the exit code, how long the run took, the targets
// by status and, for a failed run, the error.
func (l *eventLog) end(status string, code int, counts map[string]int, msg string) {
	if l == nil || l.ended || (!l.json && l.file == nil) {
		return
	}
	l.ended = true
	d := time.Since(l.started).Seconds()
	l.write(engine.Event{Type: engine.EventRunEnd, Status: status, ExitCode: &code, DurationSeconds: &d, Counts: counts, Message: msg})
}

// done ends a progress line.
func (l *eventLog) done() {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.progress && l.shown {
		fmt.Fprint(l.tty, "\r\033[K")
		l.shown = false
	}
}

func (l *eventLog) close() {
	if l == nil {
		return
	}
	if l.stop != nil {
		signal.Stop(l.hup)
		close(l.stop)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.file != nil {
		l.file.Close()
		l.file = nil
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n-1] + "…"
	}
	return s
}

// startTime is when the run started (now for a nil log).
func (l *eventLog) startTime() time.Time {
	if l == nil {
		return time.Now()
	}
	return l.started
}
