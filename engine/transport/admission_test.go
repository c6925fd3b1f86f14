package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestAIMDWindow(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	fast := 100 * time.Millisecond

	a := newAIMD(64, 15*time.Second)
	if a.window() != initialHandshakes {
		t.Fatalf("starts at %d, want %d", a.window(), initialHandshakes)
	}
	// Slow start: one more per fast completion, so a round doubles it.
	for i := range 8 {
		a.succeeded(at(0), at(float64(i)/10), fast)
	}
	if a.window() != 16 {
		t.Fatalf("after a fast round: %d, want 16", a.window())
	}
	// A slow handshake (above 3x the fastest, and above the 1 s floor) halves it.
	a.succeeded(at(1), at(3), 2*time.Second)
	if a.window() != 8 {
		t.Fatalf("after a slow handshake: %d, want 8", a.window())
	}
	// Others admitted before that cut saw the old window: no second cut.
	a.congested(at(0.5), at(3.5))
	a.succeeded(at(2), at(4), 3*time.Second)
	if a.window() != 8 {
		t.Fatalf("a second cut for the same round: %d, want 8", a.window())
	}
	// Congestion avoidance: +1 per window of completions, no more doubling.
	for i := range 8 {
		a.succeeded(at(5), at(5+float64(i)/10), fast)
	}
	if a.window() != 8 && a.window() != 9 {
		t.Fatalf("after a fast round in avoidance: %d, want 8 or 9", a.window())
	}
	if a.limit < 8.9 || a.limit > 9.1 {
		t.Fatalf("limit %.2f, want about 9", a.limit)
	}
	// Timeouts in later rounds keep halving, never below the minimum.
	for i := range 10 {
		a.congested(at(10+float64(i)), at(10.5+float64(i)))
	}
	if a.window() != minHandshakes {
		t.Fatalf("after repeated timeouts: %d, want %d", a.window(), minHandshakes)
	}
	// And it grows back when handshakes are fast again, up to the ceiling.
	for i := range 3000 {
		a.succeeded(at(30), at(30+float64(i)/100), fast)
	}
	if a.window() != 64 {
		t.Fatalf("after many fast handshakes: %d, want the ceiling 64", a.window())
	}
}

func TestAIMDCeilingBelowStart(t *testing.T) {
	a := newAIMD(3, 15*time.Second)
	if a.window() != 3 {
		t.Fatalf("window %d, want the ceiling 3", a.window())
	}
	a.succeeded(time.Time{}, time.Unix(1, 0), time.Millisecond)
	if a.window() != 3 {
		t.Fatalf("grew past the ceiling: %d", a.window())
	}
}

func TestAIMDSlowAbove(t *testing.T) {
	for _, tc := range []struct {
		name    string
		samples []time.Duration
		timeout time.Duration
		want    time.Duration
	}{
		{"no samples: the floor", nil, 15 * time.Second, slowFloor},
		{"fast network: the floor", []time.Duration{30 * time.Millisecond, 50 * time.Millisecond}, 15 * time.Second, slowFloor},
		{"far network: 3x the fastest", []time.Duration{900 * time.Millisecond, 600 * time.Millisecond, 2 * time.Second}, 15 * time.Second, 1800 * time.Millisecond},
		{"never above half the timeout", []time.Duration{4 * time.Second}, 15 * time.Second, 7500 * time.Millisecond},
		{"short timeout", nil, time.Second, 500 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAIMD(64, tc.timeout)
			for _, d := range tc.samples {
				a.recent[a.n%len(a.recent)] = d
				a.n++
			}
			if got := a.slowAbove(); got != tc.want {
				t.Fatalf("slowAbove = %v, want %v", got, tc.want)
			}
		})
	}
	// The baseline follows the network: old fast samples age out.
	a := newAIMD(64, time.Minute)
	a.succeeded(time.Time{}, time.Unix(0, 0), 10*time.Millisecond)
	for range baselineSamples {
		a.recent[a.n%len(a.recent)] = time.Second
		a.n++
	}
	if got := a.slowAbove(); got != 3*time.Second {
		t.Fatalf("after the network slowed down: %v, want 3s", got)
	}
}

func TestAdmissionQueue(t *testing.T) {
	a := newAdmission(2, 15*time.Second) // window 2
	fake := time.Unix(1000, 0)
	a.now = func() time.Time { return fake }
	ctx := context.Background()
	s1, _ := a.acquire(ctx)
	s2, _ := a.acquire(ctx)

	// Three more queue, in order.
	order := make(chan int, 3)
	var wg sync.WaitGroup
	slots := make([]*slot, 3)
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := a.acquire(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			slots[i] = s
			order <- i
		}()
		waitQueued(t, a, i+1)
	}
	// One waiter gives up: it leaves the queue and is never admitted.
	cctx, cancel := context.WithCancel(ctx)
	gaveUp := make(chan error, 1)
	go func() { _, err := a.acquire(cctx); gaveUp <- err }()
	waitQueued(t, a, 4)
	cancel()
	if err := <-gaveUp; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled waiter: %v", err)
	}
	waitQueued(t, a, 3)

	s1.neutral()
	if i := <-order; i != 0 {
		t.Fatalf("admitted %d first, want 0 (FIFO)", i)
	}
	s2.succeeded(10 * time.Millisecond)
	if i := <-order; i != 1 {
		t.Fatalf("admitted %d second, want 1", i)
	}
	if st := a.stats(); st.InFlight != 2 || st.Queued != 1 {
		t.Fatalf("stats %+v", st)
	}
	slots[0].neutral()
	if i := <-order; i != 2 {
		t.Fatalf("admitted %d third, want 2", i)
	}
	wg.Wait()
	slots[1].neutral()
	slots[2].neutral()
	if st := a.stats(); st.InFlight != 0 || st.Queued != 0 {
		t.Fatalf("stats after all finished: %+v", st)
	}
}

func (a *admission) stats() AdmissionStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	return AdmissionStats{Window: a.ctl.window(), InFlight: a.inflight, Queued: len(a.queue)}
}

func waitQueued(t *testing.T, a *admission, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); a.stats().Queued != n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("queue never reached %d: %+v", n, a.stats())
		}
	}
}

// countingServer accepts TCP and then, per mode, says nothing ("hang") or
// hangs up at once ("reset"). It counts connections.
func countingServer(t *testing.T, mode string) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			if mode == "reset" {
				// Like sshd over MaxStartups: take the client's version
				// line, then drop the connection (RST, not FIN).
				go func() {
					c.Read(make([]byte, 256))
					c.(*net.TCPConn).SetLinger(0)
					c.Close()
				}()
				continue
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	return ln.Addr().String(), &n
}

// TestConnectRetryClassification: a handshake that times out or is reset
// is retried (bounded, with backoff); nothing answering is not; and the two
// messages tell "slow" from "absent".
func TestConnectRetryClassification(t *testing.T) {
	e := newEnv(t)
	hung, hungConns := countingServer(t, "hang")
	reset, resetConns := countingServer(t, "reset")
	closed := closedAddr(t)
	for _, tc := range []struct {
		name     string
		addr     string
		conns    *atomic.Int64
		want     error
		attempts int64
		msg      []string
	}{
		{"hung: accepted TCP, no SSH", hung, hungConns, ErrHandshakeTimeout, 3,
			[]string{"handshake timed out after 300ms", "accepts TCP", "gave up after 3 attempts (2 retries"}},
		{"reset during the handshake", reset, resetConns, ErrUnreachable, 3,
			[]string{"closed the connection during the handshake", "gave up after 3 attempts"}},
		{"refused: no answer at all", closed, nil, ErrNoAnswer, 1,
			[]string{"unreachable: no answer at all", "connection refused", "not retried"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := e.config()
			cfg.HandshakeTimeout = 300 * time.Millisecond
			d, err := NewDialer(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_, err = d.Dial(ctx, hostOf(t, "n1", tc.addr))
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			mustContain(t, err.Error(), append([]string{"node n1 (" + tc.addr + ")"}, tc.msg...)...)
			if errors.Is(err, ErrNoAnswer) != (tc.want == ErrNoAnswer) {
				t.Errorf("ErrNoAnswer must mark exactly the no-answer case: %v", err)
			}
			if got := d.AdmissionStats().Retries; got != tc.attempts-1 {
				t.Errorf("retries %d, want %d", got, tc.attempts-1)
			}
			if tc.conns != nil {
				if got := tc.conns.Load(); got != tc.attempts {
					t.Errorf("server saw %d connections, want %d", got, tc.attempts)
				}
			}
			if st := d.AdmissionStats(); st.InFlight != 0 || st.Queued != 0 {
				t.Errorf("admission not released: %+v", st)
			}
		})
	}
}

// TestHandshakeTimeoutExcludesQueue: handshakes that wait for admission
// longer than the handshake timeout still succeed; only the handshake
// itself is timed.
func TestHandshakeTimeoutExcludesQueue(t *testing.T) {
	e := newEnv(t)
	good := e.srv.listen()
	e.trust(t, good)
	hung, _ := countingServer(t, "hang")
	cfg := e.config()
	cfg.MaxHandshakes = 2
	cfg.HandshakeAttempts = 1
	cfg.HandshakeTimeout = 2 * time.Second
	d, err := NewDialer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// Two hung nodes hold both slots for a full handshake timeout.
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := d.Dial(ctx, hostOf(t, "hung", hung)); !errors.Is(err, ErrHandshakeTimeout) {
				t.Errorf("hung: %v", err)
			}
		}()
	}
	for deadline := time.Now().Add(10 * time.Second); d.AdmissionStats().InFlight != 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the hung dials were never admitted")
		}
	}
	start := time.Now()
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			c, err := d.Dial(ctx, hostOf(t, "n1", good))
			if err == nil {
				c.Close()
			}
			errs <- err
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Errorf("a node that queued for admission failed: %v", err)
		}
	}
	if waited := time.Since(start); waited < cfg.HandshakeTimeout {
		// Not a timing assertion on speed: it proves the dials did queue
		// behind the hung ones for longer than the handshake timeout.
		t.Fatalf("dials finished after %v, before the hung ones released their slots", waited)
	}
	wg.Wait()
}

// TestSlowDialLendsItsSlot: hosts that never answer TCP (powered off,
// filtered) must not hold the admission window for their whole dial
// timeout: with a window of 2 and two such dials pending, other nodes are
// still reached.
func TestSlowDialLendsItsSlot(t *testing.T) {
	e := newEnv(t)
	good := e.srv.listen()
	e.trust(t, good)
	cfg := e.config()
	cfg.MaxHandshakes = 2
	d, err := NewDialer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	release := make(chan struct{})
	d.dialHook = func(ctx context.Context, addr string) (net.Conn, error) {
		if addr == "10.0.0.1:22" {
			<-release // no answer until the test says so
			return nil, fmt.Errorf("%w: %w (test: filtered)", ErrUnreachable, ErrNoAnswer)
		}
		var nd net.Dialer
		return nd.DialContext(ctx, "tcp", addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dead := make(chan error, 2)
	for range 2 {
		go func() { _, err := d.Dial(ctx, Host{Name: "dead", Address: "10.0.0.1", User: "u"}); dead <- err }()
	}
	for deadline := time.Now().Add(10 * time.Second); d.AdmissionStats().InFlight != 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the dead dials were never admitted")
		}
	}
	// Both slots are taken by dials that will not finish before these do.
	for i := range 3 {
		c, err := d.Dial(ctx, hostOf(t, "n1", good))
		if err != nil {
			t.Fatalf("dial %d while dead hosts dial: %v", i, err)
		}
		c.Close()
	}
	close(release)
	for range 2 {
		if err := <-dead; !errors.Is(err, ErrNoAnswer) {
			t.Fatalf("dead: %v", err)
		}
	}
	if st := d.AdmissionStats(); st.InFlight != 0 || st.Queued != 0 {
		t.Fatalf("admission not drained: %+v", st)
	}
}

func TestRetryable(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("%w after 10s (the host accepts TCP ...)", ErrHandshakeTimeout), true},
		{fmt.Errorf("%w: %w (EOF)", ErrUnreachable, errHandshakeReset), true},
		{fmt.Errorf("%w: %w (connect: connection refused)", ErrUnreachable, ErrNoAnswer), false},
		{fmt.Errorf("%w: %w: no TCP connection within 10s", ErrUnreachable, ErrNoAnswer), false},
		{fmt.Errorf("%w as user %q", ErrAuth, "centos"), false},
		{fmt.Errorf("%w: MAN-IN-THE-MIDDLE", ErrHostKeyChanged), false},
		{ErrHostKeyUnknown, false},
		{fmt.Errorf("ssh handshake canceled: %w", context.Canceled), false},
		{errors.New("ssh: unexpected message"), false},
	} {
		if got := retryable(tc.err); got != tc.want {
			t.Errorf("retryable(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
