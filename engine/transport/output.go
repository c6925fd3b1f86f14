package transport

import (
	"bytes"
	"errors"
	"io"
	"strconv"
	"sync"
)

// errOutputLimit stops the session's copy of stdout/stderr once the cap is
// reached: the SSH channel's flow-control window then stops the node from
// sending more, so memory stays bounded while the command is being ended.
var errOutputLimit = errors.New("output limit reached")

// outputCap is the budget that one command's stdout and stderr share.
type outputCap struct {
	mu    sync.Mutex
	limit int64
	used  int64
	over  chan struct{} // closed when a write did not fit
}

func newOutputCap(limit int64) *outputCap {
	return &outputCap{limit: limit, over: make(chan struct{})}
}

// cappedBuffer is one stream (stdout or stderr) of a command, charged to
// the shared outputCap. It keeps at most what fits in the budget, in
// fixed-size chunks: a growing bytes.Buffer would hold its old and new
// arrays at once and end up with up to twice the cap allocated, for every
// command that prints a lot.
type cappedBuffer struct {
	c      *outputCap
	chunks [][]byte
	n      int
}

const chunkSize = 64 << 10

func (b *cappedBuffer) Write(p []byte) (int, error) {
	c := b.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := c.limit - c.used; int64(len(p)) > room {
		// Keep what fits (a caller may show the head of the output), then
		// refuse: the stream is over the limit.
		n := int(max(room, 0))
		b.append(p[:n])
		c.used += int64(n)
		select {
		case <-c.over:
		default:
			close(c.over)
		}
		return n, errOutputLimit
	}
	b.append(p)
	c.used += int64(len(p))
	return len(p), nil
}

func (b *cappedBuffer) append(p []byte) {
	for len(p) > 0 {
		if len(b.chunks) == 0 || len(b.chunks[len(b.chunks)-1]) == chunkSize {
			b.chunks = append(b.chunks, make([]byte, 0, min(chunkSize, max(len(p), 512))))
		}
		last := &b.chunks[len(b.chunks)-1]
		if cap(*last) < chunkSize && len(*last)+len(p) > cap(*last) {
			// A small first chunk grows up to chunkSize (most commands
			// print a few bytes and should not cost 64 KiB each).
			grown := make([]byte, len(*last), min(chunkSize, max(2*cap(*last), len(*last)+len(p))))
			copy(grown, *last)
			*last = grown
		}
		k := min(len(p), cap(*last)-len(*last))
		*last = append(*last, p[:k]...)
		b.n += k
		p = p[k:]
	}
}

// bytes returns what the stream kept so far. It may be called while the
// session's copy goroutines are still running (a command being ended):
// later writes never change bytes already kept.
func (b *cappedBuffer) bytes() []byte {
	b.c.mu.Lock()
	defer b.c.mu.Unlock()
	return b.join()
}

// final is bytes once the session's copy goroutines are done (after Wait).
func (b *cappedBuffer) final() []byte { return b.join() }

func (b *cappedBuffer) join() []byte {
	if len(b.chunks) == 1 {
		return b.chunks[0]
	}
	out := make([]byte, 0, b.n)
	for _, c := range b.chunks {
		out = append(out, c...)
	}
	return out
}

// pgidMarker starts the line the command wrapper writes first on stderr:
// the id of the process group the command runs in (see wrapCommand).
const pgidMarker = "nksrun-pgid:"

// pgidFilter takes the wrapper's marker line off the head of stderr and
// passes everything else through. Only the very first line is looked at:
// the wrapper writes it before the user's command runs, so a command cannot
// forge it; when it is missing (sudo refused before the wrapper ran) the
// stream is passed through untouched.
type pgidFilter struct {
	dst  io.Writer
	head []byte
	done bool
	pgid chan int // buffered (1): receives the group id once
	// none is closed when stderr began with something else: no group id
	// will come (sudo refused, or a node without /proc or setsid).
	none chan struct{}
}

func newPgidFilter(dst io.Writer) *pgidFilter {
	return &pgidFilter{dst: dst, pgid: make(chan int, 1), none: make(chan struct{})}
}

func (f *pgidFilter) Write(p []byte) (int, error) {
	if f.done {
		return f.dst.Write(p)
	}
	n := len(p)
	f.head = append(f.head, p...)
	if i := bytes.IndexByte(f.head, '\n'); i >= 0 {
		f.done = true
		head := f.head
		f.head = nil
		if g, ok := parsePgidLine(head[:i]); ok {
			f.pgid <- g
			head = head[i+1:]
		} else {
			close(f.none)
		}
		if len(head) == 0 {
			return n, nil
		}
		if _, err := f.dst.Write(head); err != nil {
			return 0, err
		}
		return n, nil
	}
	// Still no newline: keep waiting only while this can be the marker.
	if len(f.head) > len(pgidMarker)+20 || !bytes.HasPrefix(f.head, []byte(pgidMarker)[:min(len(f.head), len(pgidMarker))]) {
		f.done = true
		close(f.none)
		head := f.head
		f.head = nil
		if _, err := f.dst.Write(head); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// flush hands on a partial head that never got its newline (a command that
// printed a few bytes to stderr without one and exited).
func (f *pgidFilter) flush() {
	if !f.done && len(f.head) > 0 {
		f.done = true
		close(f.none)
		f.dst.Write(f.head)
		f.head = nil
	}
}

func parsePgidLine(line []byte) (int, bool) {
	rest, ok := bytes.CutPrefix(line, []byte(pgidMarker))
	if !ok {
		return 0, false
	}
	g, err := strconv.Atoi(string(rest))
	// 0 and 1 would make `kill -- -G` hit the killer's own group or init's.
	if err != nil || g <= 1 {
		return 0, false
	}
	return g, true
}
