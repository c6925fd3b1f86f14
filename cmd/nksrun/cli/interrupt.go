package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"nksrun/engine/module"
	"nksrun/modules/reboot"
)

// lastCluster is the cluster this process talks to, for saying what a run
// left behind when a second interrupt ends it at once.
var lastCluster atomic.Pointer[module.Cluster]

// HandleInterrupts turns the first Ctrl-C or SIGTERM into cancellation of
// the returned context: no new node is started, in-flight commands are
// ended on their nodes, and a node in the middle of its reboot is seen
// through (back Ready, uncordoned, its slot released) before the run exits
// non-zero with "interrupted". A second interrupt exits at once (130) and
// says what is left in the cluster. stop releases the signals.
func HandleInterrupts(parent context.Context, stderr io.Writer) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(parent)
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-sigs:
			cancel(fmt.Errorf("interrupted (%s)", s))
			fmt.Fprintln(stderr, "nksrun: interrupted: starting nothing new; a node in the middle of a reboot is seen through first. Interrupt again to exit at once.")
		case <-done:
			return
		}
		select {
		case <-sigs:
			fmt.Fprintln(stderr, "nksrun: interrupted again: exiting now.")
			reportLeftBehind(stderr, 3*time.Second)
			os.Exit(130)
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(sigs)
		close(done)
		cancel(nil)
	}
}

// reportLeftBehind prints what rollouts left in the cluster (reboot slots,
// cordons, nodes not back), within limit.
func reportLeftBehind(w io.Writer, limit time.Duration) {
	c := lastCluster.Load()
	if c == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	st, err := reboot.Status(ctx, c)
	if err != nil {
		fmt.Fprintf(w, "nksrun: could not read what was left (%v): run `nksrun status`\n", err)
		return
	}
	if err := writeState(w, st, time.Now()); err != nil {
		fmt.Fprintf(w, "nksrun: %v\n", err)
	}
}
