package transport_test

import (
	"context"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"nksrun/engine/module"
	"nksrun/engine/transport"
	"nksrun/testdata/testbed"
)

// TestE2EAdmissionManyNodes connects to every node of a testbed at once
// (one goroutine per node, as the engine's forks do) with the CLI's default
// limits (10 s dial, 10 s handshake) and runs `sudo true` on each: with
// handshake admission every node must be reached, on this shared 2-core
// machine where the nodes' sshd and sudo compete with the controller for
// CPU. NKSRUN_ADMISSION_NODES sets the node count (default 40; the figures
// in the report were taken with 200).
func TestE2EAdmissionManyNodes(t *testing.T) {
	if testing.Short() && os.Getenv("CI") == "" {
		t.Skip("end-to-end")
	}
	n := 40
	if s := os.Getenv("NKSRUN_ADMISSION_NODES"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 1 {
			t.Fatalf("NKSRUN_ADMISSION_NODES=%q", s)
		}
	}
	tb := testbed.New(t, testbed.Options{N: n})
	d, err := transport.NewDialer(transport.Config{
		Identities:       []string{tb.KeyPath},
		KnownHosts:       tb.KnownHosts,
		DialTimeout:      10 * time.Second,
		HandshakeTimeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	start := time.Now()
	var wg sync.WaitGroup
	var failed atomic.Int64
	var maxWindow atomic.Int64
	for _, node := range tb.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := d.Dial(ctx, transport.Host{Name: node.Name, Address: node.Address, User: node.User, Port: node.Port})
			if w := int64(d.AdmissionStats().Window); w > maxWindow.Load() {
				maxWindow.Store(w) // a sample, for the log
			}
			if err == nil {
				defer c.Close()
				_, err = c.Run(ctx, "true", module.RunOpts{Sudo: true})
			}
			if err != nil {
				failed.Add(1)
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	st := d.AdmissionStats()
	t.Logf("%d nodes: %d failed in %v; admission window now %d (largest seen %d), %d handshake retries",
		n, failed.Load(), time.Since(start).Round(time.Millisecond), st.Window, maxWindow.Load(), st.Retries)
	if st.InFlight != 0 || st.Queued != 0 {
		t.Errorf("admission not drained: %+v", st)
	}
	if failed.Load() > 0 {
		t.Fatalf("%d of %d nodes not reached with admission", failed.Load(), n)
	}
}
