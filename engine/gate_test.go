package engine

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"nksrun/engine/module"
	"nksrun/engine/runbook"
	"nksrun/inventory"
)

// countingConnector records how many nodes are being connected at once
// across every engine that uses it.
type countingConnector struct {
	localConnector
	inflight, max atomic.Int64
}

func (c *countingConnector) Connect(ctx context.Context, h inventory.Host) (module.Runner, error) {
	n := c.inflight.Add(1)
	for {
		m := c.max.Load()
		if n <= m || c.max.CompareAndSwap(m, n) {
			break
		}
	}
	// Hold the slot a moment so that, were the gate not shared, other
	// nodes would get in meanwhile (the assertion is on the count, never
	// on time).
	time.Sleep(2 * time.Millisecond)
	c.inflight.Add(-1)
	return c.localConnector.Connect(ctx, h)
}

// Engines given one Gate (one per cluster of a many-cluster plan) work on
// at most cap(Gate) nodes at once between them, whatever their Forks.
func TestGateSharedByEngines(t *testing.T) {
	for _, width := range []int{1, 3} {
		t.Run(fmt.Sprint(width), func(t *testing.T) {
			conn := &countingConnector{}
			gate := make(chan struct{}, width)
			var engines []*Engine
			var rbs []*runbook.Runbook
			for c := 0; c < 3; c++ {
				var nodes []node
				for i := 0; i < 6; i++ {
					nodes = append(nodes, node{name: fmt.Sprintf("c%d-n%d", c, i), ready: true, file: "v1"})
				}
				e, rb, _ := setupEngine(t, nodes, nil, Options{Connector: conn, Forks: 256, Gate: gate}, testRunbook)
				engines = append(engines, e)
				rbs = append(rbs, rb)
			}
			var wg sync.WaitGroup
			for i, e := range engines {
				wg.Add(1)
				go func() {
					defer wg.Done()
					p, err := e.Plan(context.Background(), []*runbook.Runbook{rbs[i]}, nil)
					if err != nil {
						t.Error(err)
						return
					}
					if got := len(p.Runbooks[0].Targets); got != 6 {
						t.Errorf("engine %d planned %d targets, want 6", i, got)
					}
				}()
			}
			wg.Wait()
			if m := conn.max.Load(); m > int64(width) || m < 1 {
				t.Errorf("%d nodes at once across engines sharing a gate of %d", m, width)
			}
		})
	}
}
