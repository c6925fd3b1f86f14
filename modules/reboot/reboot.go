// Package reboot implements the reboot module: a safe rolling reboot in the
// way of kured and Ansible's reboot, safe to interrupt.
//
// At most `serial` nodes (default 1) are down at once, across every nksrun
// process working on the cluster: each node first takes a reboot slot, a
// coordination.k8s.io/v1 Lease (kube-system/nksrun-reboot, -1, -2, … for
// serial > 1) held with a per-process identity (host, pid, run id), the
// node and the reason, and renewed every third of lease_duration (60 s)
// while the node is worked on. A slot whose renewal lapsed belongs to a
// process that died and is taken over; the node that process left cordoned
// is finished (waited for, uncordoned) before the next one goes down.
//
// Then: cordon (recording on the node who and when; see Ownership), drain
// through the Eviction API (PodDisruptionBudgets honoured, 429s retried
// until drain_timeout, then the error names the budgets and pods; DaemonSet
// and mirror pods stay; pods without a controller or with emptyDir data are
// refused unless force / delete_emptydir_data), check the slot is still
// held, reboot, wait over SSH for a new /proc/sys/kernel/random/boot_id,
// wait for the Node to be Ready with that boot id, uncordon only what this
// run cordoned, release the slot.
//
// Interruption (Ctrl-C, SIGTERM, --timeout: the context is cancelled) starts
// no new node. A node not yet rebooted is uncordoned and its slot released
// at once; a node whose reboot command went out is seen through on a
// context of its own, bounded by reboot_timeout and ready_timeout (back with
// a new boot id, Ready, uncordoned, slot released). The error then wraps
// ErrInterrupted and says what was done.
//
// A node that does not come back halts the rollout: it stays cordoned, the
// lease stays held for halt_hold (annotated with the reason) so no other
// process takes a second node down, and every node of the run that has not
// started fails with the reason; `nksrun unlock` clears it. Other failures
// (a drain that times out, a refused reboot command, a lost slot) uncordon
// the node, release the slot and count towards max_failures; reaching it
// also stops the rollout before more nodes go down. Plan only reads: it
// tells which pods a drain would evict and which it would refuse.
package reboot

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"nksrun/engine/module"
	"nksrun/modules/nodeutil"
)

// ErrInterrupted is wrapped by every error of a reboot that stopped because
// its context was cancelled (Ctrl-C, SIGTERM, --timeout). The message says
// what was left done: never "did not come back".
var ErrInterrupted = errors.New("interrupted")

// Params are reboot's parameters. Durations are in seconds.
type Params struct {
	Serial             int    `yaml:"serial,omitempty"`               // nodes down at once (default 1)
	Command            string `yaml:"command,omitempty"`              // default "reboot" (as root)
	Force              bool   `yaml:"force,omitempty"`                // evict pods that have no controller
	DeleteEmptyDirData bool   `yaml:"delete_emptydir_data,omitempty"` // evict pods with emptyDir data
	DrainTimeout       int    `yaml:"drain_timeout,omitempty"`        // default 300
	EvictRetry         int    `yaml:"evict_retry,omitempty"`          // seconds between 429 retries (default 5)
	RebootTimeout      int    `yaml:"reboot_timeout,omitempty"`       // new boot id over SSH (default 600)
	ReadyTimeout       int    `yaml:"ready_timeout,omitempty"`        // Node Ready after boot (default 300)
	LockTimeout        int    `yaml:"lock_timeout,omitempty"`         // waiting for a slot (default 3600)
	LockNamespace      string `yaml:"lock_namespace,omitempty"`       // default kube-system
	LockName           string `yaml:"lock_name,omitempty"`            // default nksrun-reboot
	LeaseDuration      int    `yaml:"lease_duration,omitempty"`       // default 60
	HaltHold           int    `yaml:"halt_hold,omitempty"`            // how long a halted rollout keeps the lock (default 86400)
	MaxFailures        int    `yaml:"max_failures,omitempty"`         // failed nodes that stop the rollout (default 1)
	Reason             string `yaml:"reason,omitempty"`               // why, shown in plan, logs and on the Lease
}

func defaults(p *Params) Params {
	d := *p
	set := func(v *int, def int) {
		if *v == 0 {
			*v = def
		}
	}
	set(&d.Serial, 1)
	set(&d.DrainTimeout, 300)
	set(&d.EvictRetry, 5)
	set(&d.RebootTimeout, 600)
	set(&d.ReadyTimeout, 300)
	set(&d.LockTimeout, 3600)
	set(&d.LeaseDuration, 60)
	set(&d.HaltHold, 86400)
	set(&d.MaxFailures, 1)
	if d.Command == "" {
		d.Command = "reboot"
	}
	if d.LockNamespace == "" {
		d.LockNamespace = "kube-system"
	}
	if d.LockName == "" {
		d.LockName = "nksrun-reboot"
	}
	return d
}

func sec(n int) time.Duration { return time.Duration(n) * time.Second }

// cleanupTimeout bounds each clean-up call (uncordon, lease release) made on
// a context detached from a cancelled run.
const cleanupTimeout = 30 * time.Second

// Module is reboot. One instance serves every node of a run and keeps the
// run-wide state: which slots this process uses, failures, the halt reason.
type Module struct {
	id     Identity
	holder string

	mu       sync.Mutex
	inUse    map[int]bool
	leases   map[int]*lease
	failed   []string
	halted   string
	haltNode string
}

// NewIdentity is a fresh identity for this process's run.
func NewIdentity() Identity {
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return Identity{Host: host, PID: os.Getpid(), RunID: hex.EncodeToString(b[:])}
}

// New is the registry factory: a fresh identity per run.
func New() module.Module {
	return module.Adapt[Params](newModule())
}

// newModule is one run's reboot state: a fresh identity, no slot in use.
func newModule() *Module {
	id := NewIdentity()
	return &Module{id: id, holder: id.String(), inUse: map[int]bool{}, leases: map[int]*lease{}}
}

var _ module.Typed[Params] = (*Module)(nil)

func (*Module) Scope() module.Scope { return module.ScopeNode }

// Outputs are the keys later steps read as steps.<id>.<key>: whether the node was rebooted and its boot id after.
func (*Module) Outputs() []string { return []string{"rebooted", "boot_id"} }

func (*Module) Validate(ps *Params) error {
	for name, v := range map[string]int{"serial": ps.Serial, "drain_timeout": ps.DrainTimeout, "evict_retry": ps.EvictRetry, "reboot_timeout": ps.RebootTimeout,
		"ready_timeout": ps.ReadyTimeout, "lock_timeout": ps.LockTimeout, "lease_duration": ps.LeaseDuration, "halt_hold": ps.HaltHold, "max_failures": ps.MaxFailures} {
		if v < 0 {
			return fmt.Errorf("%s must not be negative", name)
		}
	}
	if ps.Serial > 50 {
		return errors.New("serial above 50 is not a rolling reboot")
	}
	if strings.TrimSpace(ps.Command) == "" && ps.Command != "" {
		return errors.New("command is blank")
	}
	return nil
}

func (m *Module) Plan(ctx context.Context, t module.Target, _ string, params *Params, _ map[string]module.ProbeResult) (module.Planned, error) {
	p := defaults(params)
	if t.Cluster == nil || t.Cluster.Clientset == nil {
		return module.Planned{}, errors.New("a safe reboot needs the cluster (cordon, drain, Ready): set --kubeconfig")
	}
	cs := t.Cluster.Clientset
	node, err := cs.CoreV1().Nodes().Get(ctx, t.Node.Name, metav1.GetOptions{})
	if err != nil {
		return module.Planned{}, fmt.Errorf("Node %s: %w", t.Node.Name, err)
	}
	pods, err := listPods(ctx, cs, node.Name)
	if err != nil {
		return module.Planned{}, err
	}
	set := classify(pods)
	bootID := nodeutil.HostString(t.Node, "bootID")
	own := ownershipOf(node)
	var steps []string
	keep := node.Spec.Unschedulable && !own.Ours
	switch {
	case keep:
		steps = append(steps, "already cordoned (stays cordoned)")
	case own.Ours:
		steps = append(steps, fmt.Sprintf("cordoned by an earlier nksrun run (%s): finished and uncordoned by this one if that run is gone", own.Holder))
	default:
		steps = append(steps, "cordon")
	}
	if own.Stale {
		steps = append(steps, "remove nksrun's stale cordoned-by annotation")
	}
	drainStep := fmt.Sprintf("drain %d pod(s)", len(set.evict))
	if len(set.evict) > 0 {
		drainStep += " (" + short(names(set.evict), 5) + ")"
	}
	if n := len(set.daemonSet) + len(set.mirror); n > 0 {
		drainStep += fmt.Sprintf(", leave %d DaemonSet/mirror pod(s)", n)
	}
	if len(set.localData) > 0 {
		if p.DeleteEmptyDirData {
			drainStep += fmt.Sprintf(", deleting the emptyDir data of %s", short(set.localData, 5))
		} else {
			drainStep += fmt.Sprintf(", REFUSED: emptyDir data in %s", short(set.localData, 5))
		}
	}
	steps = append(steps, drainStep, "`"+p.Command+"`", "wait for a new boot id and Ready")
	if !keep {
		steps = append(steps, "uncordon")
	}
	out := module.Planned{
		Action:      module.Change,
		Summary:     fmt.Sprintf("would reboot node %s (%s)", node.Name, strings.Join(steps, ", ")),
		Fingerprint: map[string]string{"boot_id": bootID},
		Outputs:     map[string]any{"rebooted": true},
	}
	why := []string{fmt.Sprintf("at most %d node(s) at a time under Lease %s/%s", p.Serial, p.LockNamespace, p.LockName)}
	if p.Reason != "" {
		why = append([]string{p.Reason}, why...)
	}
	for _, r := range refusals(set, drainOpts{force: p.Force, deleteEmptyDir: p.DeleteEmptyDirData}) {
		why = append(why, "WARNING: the drain will fail: "+r)
	}
	out.Reason = strings.Join(why, "; ")
	if len(set.localData) > 0 {
		f := module.FindingInfo{Severity: "warning", Evidence: set.localData}
		if p.DeleteEmptyDirData {
			f.Title = fmt.Sprintf("the drain of %s deletes the emptyDir data of %d pod(s) (delete_emptydir_data: true)", node.Name, len(set.localData))
		} else {
			f.Title = fmt.Sprintf("the drain of %s will refuse %d pod(s) with emptyDir data, and the node will not be rebooted", node.Name, len(set.localData))
			f.Recommendation = "if that data may go, set delete_emptydir_data: true (kubectl drain --delete-emptydir-data)"
		}
		out.Findings = append(out.Findings, f)
	}
	return out, nil
}

// stopped reports why the rollout must not take another node down.
func (m *Module) stopped(p Params) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.halted != "" {
		return "rollout halted: " + m.halted
	}
	if len(m.failed) >= p.MaxFailures {
		return fmt.Sprintf("rollout stopped: failure threshold reached (max_failures %d): %s", p.MaxFailures, strings.Join(m.failed, "; "))
	}
	return ""
}

func (m *Module) fail(node string, err error) error {
	m.mu.Lock()
	m.failed = append(m.failed, fmt.Sprintf("%s: %v", node, err))
	m.mu.Unlock()
	return err
}

func (m *Module) halt(node, why string) {
	m.mu.Lock()
	if m.halted == "" {
		m.halted, m.haltNode = why, node
	}
	m.failed = append(m.failed, node+": "+why)
	m.mu.Unlock()
}

func interrupted(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInterrupted}, args...)...)
}

// acquire takes a free slot: a local one no other node of this run uses,
// then its Lease. Cancellation while waiting starts nothing.
func (m *Module) acquire(ctx context.Context, t module.Target, p Params) (int, *lease, *takeover, error) {
	deadline := time.Now().Add(sec(p.LockTimeout))
	lastMsg, external := "", ""
	why := map[string]string{AnnotationNode: t.Node.Name, AnnotationReason: p.Reason, AnnotationPhase: PhaseCordoning}
	for {
		if why := m.stopped(p); why != "" {
			return 0, nil, nil, errors.New("not rebooted: " + why)
		}
		if ctx.Err() != nil {
			return 0, nil, nil, interrupted("node %s not started (was waiting for a reboot slot); nothing changed on it", t.Node.Name)
		}
		var held []string
		for i := 0; i < p.Serial; i++ {
			m.mu.Lock()
			if m.inUse[i] {
				m.mu.Unlock()
				held = append(held, "this run (another node)")
				continue
			}
			m.inUse[i] = true
			l := m.leases[i]
			if l == nil {
				name := p.LockName
				if i > 0 {
					name = fmt.Sprintf("%s-%d", p.LockName, i)
				}
				l = &lease{cs: t.Cluster.Clientset, namespace: p.LockNamespace, name: name, id: m.id, holder: m.holder, duration: sec(p.LeaseDuration)}
				m.leases[i] = l
			}
			m.mu.Unlock()
			ok, holder, prev, err := l.tryAcquire(ctx, why)
			if ok {
				return i, l, prev, nil
			}
			m.free(i)
			var he *haltedError
			if errors.As(err, &he) {
				return 0, nil, nil, fmt.Errorf("not rebooted: %w", err)
			}
			if err != nil {
				if ctx.Err() != nil {
					return 0, nil, nil, interrupted("node %s not started (was waiting for a reboot slot); nothing changed on it", t.Node.Name)
				}
				return 0, nil, nil, err
			}
			held = append(held, holder)
			external = holder
		}
		msg := "waiting for a reboot slot: held by " + strings.Join(held, ", ")
		if msg != lastMsg {
			nodeutil.Logf(t, "%s", msg)
			lastMsg = msg
		}
		if time.Now().After(deadline) {
			if external == "" {
				external = "other nodes of this run"
			}
			return 0, nil, nil, fmt.Errorf("not rebooted: no reboot slot within lock_timeout %ds (held by %s; see `nksrun status`)", p.LockTimeout, external)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (m *Module) free(slot int) {
	m.mu.Lock()
	m.inUse[slot] = false
	m.mu.Unlock()
}

func (m *Module) Apply(ctx context.Context, t module.Target, _ string, params *Params, pl module.Planned) (module.Applied, error) {
	p := defaults(params)
	if t.Cluster == nil || t.Cluster.Clientset == nil {
		return module.Applied{}, errors.New("a safe reboot needs the cluster: set --kubeconfig")
	}
	rc, ok := t.Node.Runner.(module.Reconnector)
	if !ok {
		return module.Applied{}, errors.New("this transport cannot reconnect, so nksrun could not wait for the node to come back; not rebooting")
	}
	slot, l, prev, err := m.acquire(ctx, t, p)
	if err != nil {
		return module.Applied{}, err
	}
	l.startRenewing()
	nodeutil.Logf(t, "holding reboot slot %s/%s", l.namespace, l.name)
	release := func() {
		if err := l.release(); err != nil {
			nodeutil.Logf(t, "releasing %s/%s: %v", l.namespace, l.name, err)
		}
		m.free(slot)
	}
	if prev != nil {
		nodeutil.Logf(t, "took reboot slot %s/%s over from %s, whose renewal lapsed (last phase %q on node %q)", l.namespace, l.name, prev.holder, prev.phase, prev.node)
		if prev.node != "" && prev.node != t.Node.Name {
			if err := m.finishLeftover(ctx, t, p, prev.node, prev.holder); err != nil {
				if errors.Is(err, ErrInterrupted) {
					release()
					return module.Applied{}, err
				}
				// The dead run's node is not back: as if it were this
				// run's own, the rollout halts with the slot held.
				m.halt(prev.node, err.Error())
				if herr := l.holdHalted(prev.node+": "+err.Error(), sec(p.HaltHold)); herr != nil {
					nodeutil.Logf(t, "keeping %s/%s held: %v", l.namespace, l.name, herr)
				}
				m.free(slot)
				return module.Applied{}, fmt.Errorf("not rebooted: %w", err)
			}
		}
	}
	res, halt, err := m.rebootNode(ctx, t, rc, p, pl, l)
	if halt != "" {
		m.halt(t.Node.Name, halt)
		if herr := l.holdHalted(t.Node.Name+": "+halt, sec(p.HaltHold)); herr != nil {
			nodeutil.Logf(t, "keeping %s/%s held: %v", l.namespace, l.name, herr)
		}
		m.free(slot)
		return module.Applied{}, err
	}
	lost := l.stopRenewing()
	release()
	if err != nil {
		if errors.Is(err, ErrInterrupted) {
			return module.Applied{}, err
		}
		return module.Applied{}, m.fail(t.Node.Name, err)
	}
	if lost != "" {
		res.Summary += " (WARNING: lost the reboot lease while the node was out: " + lost + ")"
	}
	return res, nil
}

// finishLeftover sees through the node a dead holder left in its slot: if
// nksrun's cordon on it is still that holder's, wait (bounded) for it to be
// back (new boot id if the reboot was sent) and Ready, then uncordon it.
// An error means the slot must not be used for another node.
func (m *Module) finishLeftover(ctx context.Context, t module.Target, p Params, node, holder string) error {
	cs := t.Cluster.Clientset
	if ctx.Err() != nil {
		// Not taken on: status and unlock still show it.
		return interrupted("node %s not started; node %s, left cordoned by %s, was not taken over", t.Node.Name, node, holder)
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	ok, err := adoptNode(cctx, cs, node, holder, m.holder)
	cancel()
	if err != nil {
		return fmt.Errorf("taking over node %s: %w", node, err)
	}
	if !ok {
		return nil // not nksrun's cordon any more (or never was): nothing to finish
	}
	nodeutil.Logf(t, "finishing node %s, left cordoned by %s: waiting for it to be Ready", node, holder)
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sec(p.RebootTimeout+p.ReadyTimeout))
	defer cancel()
	n, err := cs.CoreV1().Nodes().Get(wctx, node, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("node %s: %w", node, err)
	}
	before := n.Annotations[AnnotationBootIDBefore]
	if err := waitReadyNot(wctx, cs, node, before); err != nil {
		return fmt.Errorf("node %s, left cordoned by %s, is not back: %v; it stays cordoned", node, holder, err)
	}
	uctx, cancel2 := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel2()
	if _, err := uncordonNode(uctx, cs, node, m.holder, true); err != nil {
		return fmt.Errorf("node %s: %w", node, err)
	}
	nodeutil.Logf(t, "node %s is Ready and uncordoned", node)
	if ctx.Err() != nil {
		return interrupted("finished node %s left by %s (Ready, uncordoned); node %s not started", node, holder, t.Node.Name)
	}
	return nil
}

// rebootNode does one node's cordon → drain → reboot → wait → uncordon
// while holding a slot. halt is set when the node went down and did not
// come back (the rollout must stop with the node cordoned).
func (m *Module) rebootNode(ctx context.Context, t module.Target, rc module.Reconnector, p Params, pl module.Planned, l *lease) (res module.Applied, halt string, err error) {
	cs := t.Cluster.Clientset
	name := t.Node.Name
	if why := m.stopped(p); why != "" {
		return res, "", errors.New("not rebooted: " + why)
	}
	notStarted := func() error {
		return interrupted("node %s not started; nothing changed on it", name)
	}
	if ctx.Err() != nil {
		return res, "", notStarted()
	}
	// The plan saw one boot; if the node booted since (another operator's
	// run rebooted it while we waited for the slot), that reboot is the one
	// the plan asked for: do not take the node down twice.
	before, err := readBootID(ctx, t.Node.Runner)
	if err != nil && ctx.Err() == nil {
		// The connection may have dropped while we waited (another
		// process rebooted this node): dial again once.
		rctx, cancel := context.WithTimeout(ctx, sec(p.RebootTimeout))
		if rerr := rc.Reconnect(rctx); rerr == nil {
			before, err = readBootID(ctx, t.Node.Runner)
		}
		cancel()
	}
	if ctx.Err() != nil {
		return res, "", notStarted()
	}
	if err != nil {
		return res, "", fmt.Errorf("reading the boot id: %w", err)
	}
	if planned := pl.Fingerprint["boot_id"]; planned != "" && before != planned {
		// A run that died mid-reboot of this very node left it cordoned:
		// finish that run's work before reporting.
		if n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{}); err == nil {
			if o := ownershipOf(n); o.Ours && o.Holder != m.holder {
				if alive, _ := holderAlive(ctx, cs, p.LockNamespace, o.Holder); !alive {
					if err := m.finishLeftover(ctx, t, p, name, o.Holder); err != nil {
						return res, "", err
					}
				}
			}
		}
		return module.Applied{Changed: false, Summary: fmt.Sprintf("node %s has rebooted since the plan (boot id %s → %s): not rebooting again", name, shortID(planned), shortID(before)),
			Outputs: map[string]any{"rebooted": false, "boot_id": before}}, "", nil
	}
	start := time.Now()
	// Clean-up must happen even after the run was cancelled: on a context
	// of its own, each call bounded.
	detached := context.WithoutCancel(ctx)
	cctx, cancel := context.WithTimeout(detached, cleanupTimeout)
	node, err := cs.CoreV1().Nodes().Get(cctx, name, metav1.GetOptions{})
	cancel()
	if err != nil {
		return res, "", fmt.Errorf("Node %s: %w", name, err)
	}
	own := ownershipOf(node)
	if own.Stale {
		cctx, cancel := context.WithTimeout(detached, cleanupTimeout)
		if ok, err := clearStale(cctx, cs, name); err == nil && ok {
			nodeutil.Logf(t, "removed nksrun's stale annotation from %s (%s)", name, own.Why)
		}
		cancel()
	}
	// What the drain would refuse (pods without a controller, emptyDir
	// data) is refused before the node is touched at all.
	if pods, err := listPods(ctx, cs, name); err == nil {
		if r := refusals(classify(pods), drainOpts{force: p.Force, deleteEmptyDir: p.DeleteEmptyDirData}); len(r) > 0 {
			return res, "", fmt.Errorf("cannot drain: %s; not rebooted; node not cordoned", strings.Join(r, "; "))
		}
	} else if ctx.Err() != nil {
		return res, "", notStarted()
	}
	ours := false
	switch {
	case !node.Spec.Unschedulable:
		cctx, cancel := context.WithTimeout(detached, cleanupTimeout)
		ours, err = cordonNode(cctx, cs, name, m.holder, time.Now())
		cancel()
		if err != nil {
			return res, "", err
		}
		if ours {
			nodeutil.Logf(t, "cordoned %s", name)
		} else {
			nodeutil.Logf(t, "%s was cordoned by someone else just now: it stays cordoned", name)
		}
	case own.Ours && own.Holder == m.holder:
		ours = true // this run's own cordon (an earlier attempt on this node)
	case own.Ours:
		// A cordon of a run that is gone (its slot lapsed): this run
		// finishes it. A live run's cordon is its own business.
		if alive, aerr := holderAlive(ctx, cs, p.LockNamespace, own.Holder); alive {
			if aerr != nil {
				return res, "", fmt.Errorf("not rebooted: node %s is cordoned by nksrun run %s, which cannot be shown gone: %w", name, own.Holder, aerr)
			}
			return res, "", fmt.Errorf("not rebooted: node %s is cordoned by nksrun run %s, which is still running", name, own.Holder)
		}
		cctx, cancel := context.WithTimeout(detached, cleanupTimeout)
		ours, err = adoptNode(cctx, cs, name, own.Holder, m.holder)
		cancel()
		if err != nil {
			return res, "", err
		}
		if ours {
			nodeutil.Logf(t, "%s was cordoned by nksrun run %s, which is gone: this run takes it over", name, own.Holder)
		}
	default:
		nodeutil.Logf(t, "%s was cordoned before this run: it stays cordoned", name)
	}
	// cleanup lifts this run's cordon (and only it) on a detached context.
	cleanup := func() string {
		if !ours {
			return "node left cordoned as it was before this run"
		}
		cctx, cancel := context.WithTimeout(detached, cleanupTimeout)
		defer cancel()
		did, err := uncordonNode(cctx, cs, name, m.holder, true)
		switch {
		case err != nil:
			return fmt.Sprintf("UNCORDON FAILED: %v (see `nksrun status`, `nksrun unlock`)", err)
		case did:
			return "node uncordoned"
		default:
			return "node left cordoned: someone else cordoned it since"
		}
	}
	if ctx.Err() != nil {
		return res, "", interrupted("node %s not rebooted (interrupted while cordoning); %s", name, cleanup())
	}
	l.setPhase(ctx, PhaseDraining)
	n, err := drain(ctx, cs, name, drainOpts{force: p.Force, deleteEmptyDir: p.DeleteEmptyDirData, deadline: time.Now().Add(sec(p.DrainTimeout)), retry: sec(p.EvictRetry),
		logf: func(f string, a ...any) { nodeutil.Logf(t, f, a...) }})
	if ctx.Err() != nil {
		return res, "", interrupted("node %s not rebooted (interrupted while draining); %s", name, cleanup())
	}
	if err != nil {
		return res, "", fmt.Errorf("drain failed: %v; not rebooted; %s", err, cleanup())
	}
	// The last look before the reboot: a slot lost (renewals failed, taken
	// over) means another process may be taking a node down right now.
	cctx, cancel = context.WithTimeout(ctx, cleanupTimeout)
	err = l.check(cctx)
	cancel()
	if ctx.Err() != nil {
		return res, "", interrupted("node %s not rebooted (interrupted after the drain); %s", name, cleanup())
	}
	if err != nil {
		return res, "", fmt.Errorf("%v; not rebooted; %s", err, cleanup())
	}
	nodeutil.Logf(t, "drained %d pod(s); rebooting with `%s`", n, p.Command)
	// From here the reboot is seen through even if the run is cancelled:
	// every call uses the detached context, bounded by its own timeout.
	cctx, cancel = context.WithTimeout(detached, cleanupTimeout)
	if ours {
		if err := markRebootSent(cctx, cs, name, m.holder, before, time.Now()); err != nil {
			nodeutil.Logf(t, "recording the reboot on %s: %v", name, err)
		}
	}
	l.setPhase(cctx, PhaseRebooting)
	cancel()
	r, rerr := t.Node.Runner.Run(detached, p.Command, module.RunOpts{Sudo: true, Timeout: 30 * time.Second})
	// A reboot kills every process of the node, the session running the
	// command included: exit by SIGHUP, SIGKILL or SIGTERM means it worked
	// (the new boot id below is what proves it).
	if rerr == nil && r.ExitCode != 0 && r.ExitCode != 128+1 && r.ExitCode != 128+9 && r.ExitCode != 128+15 {
		return res, "", fmt.Errorf("reboot command `%s` failed (exit %d): %s; %s", p.Command, r.ExitCode, strings.TrimSpace(string(r.Stderr)), cleanup())
	}
	if ctx.Err() != nil {
		nodeutil.Logf(t, "interrupted: seeing %s through its reboot first (up to reboot_timeout %ds + ready_timeout %ds)", name, p.RebootTimeout, p.ReadyTimeout)
	}
	// rerr != nil is the expected connection drop.
	after, err := waitNewBoot(detached, t.Node.Runner, rc, before, sec(p.RebootTimeout))
	if err != nil {
		halt = fmt.Sprintf("did not come back within reboot_timeout %ds after `%s`: %v; it stays cordoned; the reboot lock %s/%s stays held (`nksrun unlock` once the node is fixed)", p.RebootTimeout, p.Command, err, l.namespace, l.name)
		if ctx.Err() != nil {
			return res, halt, interrupted("node %s %s", name, halt)
		}
		return res, halt, errors.New("node " + name + " " + halt)
	}
	nodeutil.Logf(t, "back with boot id %s after %s; waiting for Ready", shortID(after), time.Since(start).Round(time.Second))
	cctx, cancel = context.WithTimeout(detached, cleanupTimeout)
	l.setPhase(cctx, PhaseWaitingReady)
	cancel()
	if err := waitReady(detached, cs, name, after, sec(p.ReadyTimeout)); err != nil {
		halt = fmt.Sprintf("rebooted (boot id %s) but not Ready within ready_timeout %ds: %v; it stays cordoned; the reboot lock %s/%s stays held (`nksrun unlock` once the node is fixed)", shortID(after), p.ReadyTimeout, err, l.namespace, l.name)
		if ctx.Err() != nil {
			return res, halt, interrupted("node %s %s", name, halt)
		}
		return res, halt, errors.New("node " + name + " " + halt)
	}
	state := cleanup()
	if strings.HasPrefix(state, "UNCORDON FAILED") {
		return res, "", fmt.Errorf("rebooted and Ready, but %s", state)
	}
	if ctx.Err() != nil {
		return res, "", interrupted("node %s was rebooted (boot id %s → %s) and is Ready; %s; no further node started", name, shortID(before), shortID(after), state)
	}
	return module.Applied{
		Changed: true,
		Summary: fmt.Sprintf("rebooted %s (boot id %s → %s) in %s; drained %d pod(s); Ready; %s", name, shortID(before), shortID(after), time.Since(start).Round(time.Second), n, state),
		Outputs: map[string]any{"rebooted": true, "boot_id": after},
	}, "", nil
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// waitReadyNot waits for the Node to be Ready with a boot id other than
// before (any boot id when before is unknown).
func waitReadyNot(ctx context.Context, cs kubernetes.Interface, name, before string) error {
	last := "not seen yet"
	for {
		n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			ready := isReady(n)
			last = fmt.Sprintf("Ready=%v, boot id %s", ready, shortID(n.Status.NodeInfo.BootID))
			if ready && (before == "" || n.Status.NodeInfo.BootID != before) {
				return nil
			}
		} else if !apierrors.IsNotFound(err) {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return errors.New(last)
		case <-time.After(time.Second):
		}
	}
}

func isReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

const bootIDCmd = "cat /proc/sys/kernel/random/boot_id"

func readBootID(ctx context.Context, r module.Runner) (string, error) {
	res, err := r.Run(ctx, bootIDCmd, module.RunOpts{Timeout: 20 * time.Second})
	if err != nil {
		return "", err
	}
	id := strings.TrimSpace(string(res.Stdout))
	if res.ExitCode != 0 || id == "" {
		return "", fmt.Errorf("%s: exit %d: %s", bootIDCmd, res.ExitCode, strings.TrimSpace(string(res.Stderr)))
	}
	return id, nil
}

// waitNewBoot reconnects until the node answers with a boot id other than
// old (Ansible's reboot does the same).
func waitNewBoot(ctx context.Context, r module.Runner, rc module.Reconnector, old string, timeout time.Duration) (string, error) {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		if err := rc.Reconnect(wctx); err != nil {
			if last != nil && wctx.Err() != nil {
				return "", last
			}
			return "", err
		}
		id, err := readBootID(wctx, r)
		switch {
		case err != nil:
			last = err
		case id != old:
			return id, nil
		default:
			last = fmt.Errorf("still the old boot id %s: the node has not rebooted", shortID(old))
		}
		select {
		case <-wctx.Done():
			return "", last
		case <-time.After(time.Second):
		}
	}
}

// waitReady waits for the Node's Ready condition with the new boot id in
// status.nodeInfo (so a Ready left over from before the reboot does not count).
func waitReady(ctx context.Context, cs kubernetes.Interface, name, bootID string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	last := "not seen yet"
	for {
		n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			ready := false
			for _, c := range n.Status.Conditions {
				if c.Type == corev1.NodeReady {
					ready = c.Status == corev1.ConditionTrue
					last = fmt.Sprintf("Ready=%s (%s)", c.Status, c.Reason)
				}
			}
			sameBoot := n.Status.NodeInfo.BootID == "" || n.Status.NodeInfo.BootID == bootID
			if ready && sameBoot {
				return nil
			}
			if ready {
				last = "Ready but status.nodeInfo.bootID is still the old one"
			}
		} else if !apierrors.IsNotFound(err) {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			return errors.New(last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}
