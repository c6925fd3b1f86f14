package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"nksrun/engine"
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
	progress bool // a terminal: one updating line instead of many
	count    int
}

func newEventLog(format, path string, stderr io.Writer) (*eventLog, error) {
	l := &eventLog{w: stderr}
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
	} else if !l.json && isTerminal(stderr) {
		l.progress = true
	}
	return l, nil
}

func (l *eventLog) open(path string) error {
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

func (l *eventLog) event(ev engine.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.json {
		b, err := json.Marshal(ev)
		if err == nil {
			l.w.Write(append(b, '\n'))
		}
		return
	}
	if ev.Type == engine.EventTarget {
		l.count++
	}
	line := ev.Type
	if ev.Phase != "" {
		line = ev.Phase + " " + line
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
	if l.progress {
		fmt.Fprintf(l.w, "\r\033[K[%d done] %s", l.count, truncate(line, 120))
		return
	}
	fmt.Fprintf(l.w, "%s %s\n", ev.Time.UTC().Format(time.RFC3339), line)
}

// done ends a progress line.
func (l *eventLog) done() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.progress && l.count > 0 {
		fmt.Fprint(l.w, "\r\033[K")
	}
}

func (l *eventLog) close() {
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
