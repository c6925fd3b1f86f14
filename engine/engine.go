// Package engine plans and applies runbooks: runbook → inventory → facts →
// plan → (review) → apply → verify → report. Plan is read-only and plain
// data; apply takes a plan (fresh or saved) and changes only what it says.
package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"nksrun/engine/module"
	"nksrun/engine/redact"
	"nksrun/engine/runbook"
	"nksrun/inventory"
)

// Connector opens the one SSH connection a run keeps per host.
type Connector interface {
	Connect(ctx context.Context, h inventory.Host) (module.Runner, error)
}

// Options configure an Engine.
type Options struct {
	Registry  module.Registry
	Connector Connector        // nil: node steps fail with "no SSH configured"
	Cluster   *module.Cluster  // nil: cluster steps and k8s facts fail clearly
	Hosts     []inventory.Host // inventory after --limit
	// Forks bounds how many nodes are worked on at once.
	Forks int
	// Gate, when set, is a semaphore shared with other Engines of the
	// process (one per cluster in a many-cluster plan): its capacity is the
	// process-wide --forks, so N clusters never work on N×forks nodes at
	// once on one controller's CPU. Nil: each phase has its own Forks slots.
	Gate chan struct{}
	// IncludeNotReady plans NotReady nodes too (they are skipped by default).
	IncludeNotReady bool
	// MaxFailures stops starting new targets once this many have failed or
	// were unreachable (0 = no limit).
	MaxFailures int
	Secrets     *redact.Secrets
	// Observer receives progress events (may be nil). Called concurrently.
	Observer func(Event)
	Version  string
	Now      func() time.Time
	// ClosePlanned closes a node's connection as soon as the node is
	// planned, for runs that only plan (plan, doctor): with every
	// connection kept to the end, 1,000 nodes peaked at 137–158 MB; apply
	// keeps them, since its second exec would otherwise pay a handshake.
	ClosePlanned bool
}

// Engine runs plans and applies. One Engine is one run: it keeps one
// connection per host and one instance per module.
type Engine struct {
	o         Options
	planTime  time.Time // the time modules write into changes (see withPlanTime)
	mu        sync.Mutex
	conns     map[string]*connEntry
	instances map[string]module.Module
	clusterMu sync.Mutex
	clusterEv *runbook.Cluster
}

type connEntry struct {
	once   sync.Once
	runner module.Runner
	err    error
}

// New makes an Engine.
func New(o Options) *Engine {
	if o.Forks <= 0 {
		o.Forks = 256
	}
	if o.Secrets == nil {
		o.Secrets = &redact.Secrets{}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Engine{o: o, conns: map[string]*connEntry{}, instances: map[string]module.Module{}}
}

// Close closes every connection the run opened, all at once: closing one
// can take a round trip (a root shell is let exit first).
func (e *Engine) Close() {
	e.mu.Lock()
	conns := e.conns
	e.conns = map[string]*connEntry{}
	e.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() {
			c.once.Do(func() {}) // a dial still under way ends first
			if cl, ok := c.runner.(io.Closer); ok && cl != nil {
				_ = cl.Close()
			}
		})
	}
	wg.Wait()
}

func (e *Engine) emit(ev Event) {
	if e.o.Observer != nil {
		ev.Time = e.o.Now()
		ev.Message = e.o.Secrets.Redact(ev.Message)
		e.o.Observer(ev)
	}
}

func (e *Engine) instance(name string) (module.Module, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if m, ok := e.instances[name]; ok {
		return m, nil
	}
	f, ok := e.o.Registry[name]
	if !ok {
		return nil, fmt.Errorf("unknown module %q", name)
	}
	m := f()
	e.instances[name] = m
	return m, nil
}

// release closes host's connection, if the run opened one.
func (e *Engine) release(host string) {
	e.mu.Lock()
	c, ok := e.conns[host]
	delete(e.conns, host)
	e.mu.Unlock()
	if !ok {
		return
	}
	// Wait for a dial still under way (a done once returns at once).
	c.once.Do(func() {})
	if cl, ok := c.runner.(io.Closer); ok && cl != nil {
		_ = cl.Close()
	}
}

func (e *Engine) connect(ctx context.Context, h inventory.Host) (module.Runner, error) {
	if e.o.Connector == nil {
		return nil, errors.New("no SSH transport configured")
	}
	e.mu.Lock()
	c, ok := e.conns[h.Name]
	if !ok {
		c = &connEntry{}
		e.conns[h.Name] = c
	}
	e.mu.Unlock()
	c.once.Do(func() { c.runner, c.err = e.o.Connector.Connect(ctx, h) })
	return c.runner, c.err
}

// clusterEnv is the cluster.* environment, computed once per run.
func (e *Engine) clusterEnv(ctx context.Context) *runbook.Cluster {
	e.clusterMu.Lock()
	defer e.clusterMu.Unlock()
	if e.clusterEv != nil {
		return e.clusterEv
	}
	c := &runbook.Cluster{Connected: e.o.Cluster != nil, Nodes: make([]map[string]any, 0, len(e.o.Hosts))}
	for _, h := range e.o.Hosts {
		c.Nodes = append(c.Nodes, h.Facts)
	}
	if e.o.Cluster != nil && e.o.Cluster.Clientset != nil {
		if v, err := e.o.Cluster.Clientset.Discovery().ServerVersion(); err == nil {
			c.Version = v.GitVersion
		}
	}
	e.clusterEv = c
	return c
}

// failures counts failed targets for MaxFailures.
type failures struct {
	mu    sync.Mutex
	n     int
	limit int
}

func (f *failures) add() {
	f.mu.Lock()
	f.n++
	f.mu.Unlock()
}

func (f *failures) exceeded() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.limit > 0 && f.n >= f.limit
}

// slots is the semaphore of one forEach: the shared Gate, or Forks of its own.
func (e *Engine) slots() chan struct{} {
	if e.o.Gate != nil {
		return e.o.Gate
	}
	return make(chan struct{}, e.o.Forks)
}

// forEach runs fn for each index with at most cap(sem) at once. A panic in
// fn (a module's bug, a malformed plan) is recovered and handed to onPanic
// for that index: it fails that target, never the run or the other targets.
// fn must not call forEach with the same sem (a shared Gate would deadlock).
func forEach(ctx context.Context, n int, sem chan struct{}, fn func(i int), onPanic func(i int, v any)) {
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			// Remaining targets still get a result (canceled), never a gap.
			sem <- struct{}{}
		}
		wg.Add(1)
		go func(i int) {
			defer func() { <-sem; wg.Done() }()
			defer func() {
				if v := recover(); v != nil {
					onPanic(i, v)
				}
			}()
			fn(i)
		}(i)
	}
	wg.Wait()
}

func (e *Engine) target(rb *runbook.Runbook, node *module.Node) module.Target {
	name := "cluster"
	if node != nil {
		name = node.Name
	}
	return module.Target{
		Now:        e.planTime,
		Node:       node,
		Cluster:    e.o.Cluster,
		RunbookDir: rb.Dir,
		Secrets:    e.o.Secrets,
		Log: func(format string, args ...any) {
			e.emit(Event{Type: EventProgress, Runbook: rb.Name, Target: name, Message: fmt.Sprintf(format, args...)})
		},
	}
}

// registerSecrets adds a runbook's secret params to the redactor. A
// non-empty secret shorter than redact.MinLen is refused: it could neither
// be redacted safely nor printed.
func (e *Engine) registerSecrets(rb *runbook.Runbook, params map[string]any) error {
	for _, name := range rb.SecretParams() {
		s, ok := params[name].(string)
		if !ok || s == "" {
			continue
		}
		if len(s) < redact.MinLen {
			return fmt.Errorf("secret param %s is shorter than %d characters: refused (a value that short cannot be kept out of the output)", name, redact.MinLen)
		}
		e.o.Secrets.AddSecret(s)
	}
	return nil
}

// withPlanTime runs fn with the plan's creation time as the time modules
// write into changes (rollout_restart's restartedAt), so planning a saved
// plan's runbook again gives the very same change, byte for byte.
func (e *Engine) withPlanTime(t time.Time, fn func()) {
	e.mu.Lock()
	prev := e.planTime
	e.planTime = t
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		e.planTime = prev
		e.mu.Unlock()
	}()
	fn()
}
