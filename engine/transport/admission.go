package transport

import (
	"context"
	"sync"
	"time"
)

// Connection admission (issue 14). A handshake costs CPU on both sides
// (key exchange, sshd's re-exec, the signature check); started all at once
// on a CPU-starved controller, hundreds of them share the cores, each one
// takes longer than its timeout and nodes are reported unreachable although
// they are fine. So handshakes are admitted separately from the engine's
// forks, at a concurrency that follows how long handshakes take, the way
// TCP's congestion window follows round trips (and in the spirit of sshd's
// MaxStartups): start modest, grow while handshakes stay fast (doubling
// until the first sign of congestion, then by one per window), halve when
// one is slow, times out or is reset. A TCP dial is part of the admitted
// attempt: an accepted connection already costs the node an sshd process.

// Admission defaults.
const (
	// DefaultMaxHandshakes is the ceiling of the admission window.
	DefaultMaxHandshakes = 64
	// initialHandshakes is where the window starts ("modest": a 2-core
	// controller with sshd+sudo at ~0.2 s CPU per node sustains about
	// that many without handshakes slowing down).
	initialHandshakes = 8
	minHandshakes     = 2
	// slowFloor: a handshake is never called slow below this, so that the
	// scheduling noise of a fast network does not shrink the window.
	slowFloor = time.Second
	// slowFactor: slow means this many times the recent fastest handshake.
	slowFactor = 3
	// baselineSamples is how many recent handshakes the baseline (the
	// fastest) is taken from, so it follows a network that changed.
	baselineSamples = 32
)

// aimd is the admission window: pure, driven by the outcomes and the times
// it is given, so it is tested without a clock.
type aimd struct {
	max      float64
	limit    float64   // current window
	ssthresh float64   // slow start below it
	lastCut  time.Time // outcomes of handshakes admitted before it do not cut again
	timeout  time.Duration

	recent [baselineSamples]time.Duration
	n      int // samples recorded (ring index is n % len)
}

func newAIMD(maxWindow int, handshakeTimeout time.Duration) *aimd {
	m := float64(max(maxWindow, minHandshakes))
	return &aimd{max: m, limit: min(initialHandshakes, m), ssthresh: m, timeout: handshakeTimeout}
}

// window is how many attempts may be in flight.
func (a *aimd) window() int { return int(a.limit) }

// slowAbove is the duration above which a handshake signals congestion:
// slowFactor times the fastest recent one, at least slowFloor, and at most
// half the handshake timeout, so the window shrinks well before handshakes
// start to time out.
func (a *aimd) slowAbove() time.Duration {
	base := time.Duration(0)
	for i := range min(a.n, len(a.recent)) {
		if d := a.recent[i]; base == 0 || d < base {
			base = d
		}
	}
	return min(max(slowFactor*base, slowFloor), a.timeout/2)
}

// succeeded records a handshake admitted at start that completed in took.
func (a *aimd) succeeded(start, now time.Time, took time.Duration) {
	slow := took > a.slowAbove()
	a.recent[a.n%len(a.recent)] = took
	a.n++
	if slow {
		a.cut(start, now)
		return
	}
	if a.limit < a.ssthresh {
		a.limit++ // slow start: +1 per completion doubles the window per round
	} else {
		a.limit += 1 / a.limit // congestion avoidance: +1 per window of completions
	}
	a.limit = min(a.limit, a.max)
}

// congested records a handshake admitted at start that timed out or was
// reset by the server.
func (a *aimd) congested(start, now time.Time) { a.cut(start, now) }

// cut halves the window, once per round: handshakes that were admitted
// before the last cut saw the old, larger window and say nothing new.
func (a *aimd) cut(start, now time.Time) {
	if !a.lastCut.IsZero() && start.Before(a.lastCut) {
		return
	}
	a.limit = max(a.limit/2, minHandshakes)
	a.ssthresh = a.limit
	a.lastCut = now
}

// admission queues connection attempts (FIFO) behind the aimd window.
type admission struct {
	now func() time.Time

	mu       sync.Mutex
	ctl      *aimd
	inflight int
	queue    []chan struct{}
}

func newAdmission(maxWindow int, handshakeTimeout time.Duration) *admission {
	return &admission{now: time.Now, ctl: newAIMD(maxWindow, handshakeTimeout)}
}

// slot is one admitted attempt; exactly one of its methods must be called.
type slot struct {
	a     *admission
	start time.Time
}

// acquire waits for a slot, for as long as ctx allows: time in this queue
// is not charged to any timeout of the attempt.
func (a *admission) acquire(ctx context.Context) (*slot, error) {
	a.mu.Lock()
	if a.inflight < a.ctl.window() && len(a.queue) == 0 {
		a.inflight++
		s := &slot{a: a, start: a.now()}
		a.mu.Unlock()
		return s, nil
	}
	ch := make(chan struct{})
	a.queue = append(a.queue, ch)
	a.mu.Unlock()
	select {
	case <-ch:
		return &slot{a: a, start: a.now()}, nil
	case <-ctx.Done():
		a.mu.Lock()
		defer a.mu.Unlock()
		for i, q := range a.queue {
			if q == ch {
				a.queue = append(a.queue[:i], a.queue[i+1:]...)
				return nil, ctx.Err()
			}
		}
		// Granted just as ctx ended: hand the slot on.
		a.inflight--
		a.grantLocked()
		return nil, ctx.Err()
	}
}

// grantLocked admits queued attempts while the window has room.
func (a *admission) grantLocked() {
	for len(a.queue) > 0 && a.inflight < a.ctl.window() {
		ch := a.queue[0]
		a.queue = a.queue[1:]
		a.inflight++
		close(ch)
	}
}

func (s *slot) finish(update func(now time.Time)) {
	a := s.a
	a.mu.Lock()
	defer a.mu.Unlock()
	if update != nil {
		update(a.now())
	}
	a.inflight--
	a.grantLocked()
}

// succeeded: the handshake completed in took (the dial not included).
func (s *slot) succeeded(took time.Duration) {
	s.finish(func(now time.Time) { s.a.ctl.succeeded(s.start, now, took) })
}

// congested: the handshake timed out or the server hung up during it.
func (s *slot) congested() {
	s.finish(func(now time.Time) { s.a.ctl.congested(s.start, now) })
}

// neutral: the attempt says nothing about load (refused, no route, wrong
// key, host key mismatch, cancelled).
func (s *slot) neutral() { s.finish(nil) }

// AdmissionStats is a snapshot of the handshake admission, for progress
// output and benchmarks.
type AdmissionStats struct {
	Window   int // attempts allowed in flight now
	InFlight int
	Queued   int
	Retries  int64 // handshakes retried after a timeout or reset, so far
}
