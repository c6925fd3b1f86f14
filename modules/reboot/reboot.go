// Package reboot implements the reboot module: a safe rolling reboot in the
// way of kured and Ansible's reboot.
//
// At most `serial` nodes (default 1) are down at once, across every nksrun
// process working on the cluster: each node first takes a reboot slot, a
// coordination.k8s.io/v1 Lease (kube-system/nksrun-reboot, -1, -2, … for
// serial > 1) held with a per-process identity and renewed while the node
// is out. Then: cordon (remembering whether the node was cordoned already),
// drain through the Eviction API (PodDisruptionBudgets honoured, 429s
// retried until drain_timeout; DaemonSet and mirror pods stay; pods
// without a controller stop the drain unless force), reboot, wait over SSH
// for a new /proc/sys/kernel/random/boot_id, wait for the Node to be Ready
// with that boot id, uncordon only if nksrun cordoned it, release the slot.
//
// A node that does not come back halts the rollout: it stays cordoned, the
// lease stays held (annotated with the reason) so no other process takes a
// second node down, and every node of the run that has not started fails
// with the reason. Other failures (a drain that times out, a refused reboot
// command) uncordon the node, release the slot and count towards
// max_failures; reaching it also stops the rollout before more nodes go
// down. Plan only reads: it tells which pods a drain would evict.
package reboot

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"nksrun/engine/module"
	"nksrun/modules/nodeutil"
)

// AnnotationCordonedBy marks a Node nksrun cordoned (value: the holder
// identity), so only what nksrun cordoned is uncordoned, even by a later run.
const AnnotationCordonedBy = "nksrun.io/cordoned-by"

// Params are reboot's parameters. Durations are in seconds.
type Params struct {
	Serial        int    `yaml:"serial" json:"serial,omitempty"`                 // nodes down at once (default 1)
	Command       string `yaml:"command" json:"command,omitempty"`               // default "reboot" (as root)
	Force         bool   `yaml:"force" json:"force,omitempty"`                   // evict pods that have no controller
	DrainTimeout  int    `yaml:"drain_timeout" json:"drain_timeout,omitempty"`   // default 300
	EvictRetry    int    `yaml:"evict_retry" json:"evict_retry,omitempty"`       // seconds between 429 retries (default 5)
	RebootTimeout int    `yaml:"reboot_timeout" json:"reboot_timeout,omitempty"` // new boot id over SSH (default 600)
	ReadyTimeout  int    `yaml:"ready_timeout" json:"ready_timeout,omitempty"`   // Node Ready after boot (default 300)
	LockTimeout   int    `yaml:"lock_timeout" json:"lock_timeout,omitempty"`     // waiting for a slot (default 3600)
	LockNamespace string `yaml:"lock_namespace" json:"lock_namespace,omitempty"` // default kube-system
	LockName      string `yaml:"lock_name" json:"lock_name,omitempty"`           // default nksrun-reboot
	LeaseDuration int    `yaml:"lease_duration" json:"lease_duration,omitempty"` // default 60
	HaltHold      int    `yaml:"halt_hold" json:"halt_hold,omitempty"`           // how long a halted rollout keeps the lock (default 86400)
	MaxFailures   int    `yaml:"max_failures" json:"max_failures,omitempty"`     // failed nodes that stop the rollout (default 1)
	Reason        string `yaml:"reason" json:"reason,omitempty"`                 // why, shown in plan and logs
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

// Module is reboot. One instance serves every node of a run and keeps the
// run-wide state: which slots this process uses, failures, the halt reason.
type Module struct {
	holder string

	mu       sync.Mutex
	inUse    map[int]bool
	leases   map[int]*lease
	failed   []string
	halted   string
	haltNode string
}

// New is the registry factory: a fresh identity per run.
func New() module.Module {
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return &Module{
		holder: fmt.Sprintf("nksrun@%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b[:])),
		inUse:  map[int]bool{}, leases: map[int]*lease{},
	}
}

var _ module.Module = (*Module)(nil)

func (*Module) Name() string        { return "reboot" }
func (*Module) Scope() module.Scope { return module.ScopeNode }

// Outputs are the keys later steps read as steps.<id>.<key>: whether the node was rebooted and its boot id after.
func (*Module) Outputs() []string { return []string{"rebooted", "boot_id"} }

func (*Module) NewParams() any { return &Params{} }

func (*Module) Validate(p any) error {
	ps := p.(*Params)
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

func (*Module) Probes(module.Target, module.Step) ([]module.Probe, error) { return nil, nil }

func (m *Module) Plan(ctx context.Context, t module.Target, s module.Step, _ map[string]module.ProbeResult) (module.Planned, error) {
	p := defaults(s.Params.(*Params))
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
	var steps []string
	if node.Spec.Unschedulable && node.Annotations[AnnotationCordonedBy] == "" {
		steps = append(steps, "already cordoned (stays cordoned)")
	} else {
		steps = append(steps, "cordon")
	}
	drainStep := fmt.Sprintf("drain %d pod(s)", len(set.evict))
	if len(set.evict) > 0 {
		drainStep += " (" + short(names(set.evict), 5) + ")"
	}
	if n := len(set.daemonSet) + len(set.mirror); n > 0 {
		drainStep += fmt.Sprintf(", leave %d DaemonSet/mirror pod(s)", n)
	}
	steps = append(steps, drainStep, "`"+p.Command+"`", "wait for a new boot id and Ready")
	if !(node.Spec.Unschedulable && node.Annotations[AnnotationCordonedBy] == "") {
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
	if len(set.unmanaged) > 0 && !p.Force {
		why = append(why, fmt.Sprintf("WARNING: the drain will fail: pods without a controller: %s (set force: true to evict them)", short(set.unmanaged, 5)))
	}
	out.Reason = strings.Join(why, "; ")
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

// acquire takes a free slot: a local one no other node of this run uses,
// then its Lease.
func (m *Module) acquire(ctx context.Context, t module.Target, p Params) (int, *lease, error) {
	deadline := time.Now().Add(sec(p.LockTimeout))
	lastMsg, external := "", ""
	for {
		if why := m.stopped(p); why != "" {
			return 0, nil, errors.New("not rebooted: " + why)
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
				l = &lease{cs: t.Cluster.Clientset, namespace: p.LockNamespace, name: name, holder: m.holder, duration: sec(p.LeaseDuration)}
				m.leases[i] = l
			}
			m.mu.Unlock()
			ok, holder, err := l.tryAcquire(ctx)
			if ok {
				return i, l, nil
			}
			m.mu.Lock()
			m.inUse[i] = false
			m.mu.Unlock()
			if err != nil {
				return 0, nil, err
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
			return 0, nil, fmt.Errorf("not rebooted: no reboot slot within lock_timeout %ds (held by %s)", p.LockTimeout, external)
		}
		select {
		case <-ctx.Done():
			return 0, nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func (m *Module) free(slot int) {
	m.mu.Lock()
	m.inUse[slot] = false
	m.mu.Unlock()
}

func (m *Module) Apply(ctx context.Context, t module.Target, s module.Step, pl module.Planned) (module.Applied, error) {
	p := defaults(s.Params.(*Params))
	if t.Cluster == nil || t.Cluster.Clientset == nil {
		return module.Applied{}, errors.New("a safe reboot needs the cluster: set --kubeconfig")
	}
	rc, ok := t.Node.Runner.(module.Reconnector)
	if !ok {
		return module.Applied{}, errors.New("this transport cannot reconnect, so nksrun could not wait for the node to come back; not rebooting")
	}
	slot, l, err := m.acquire(ctx, t, p)
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
	res, halt, err := m.rebootNode(ctx, t, rc, p, pl, l)
	if halt != "" {
		m.mu.Lock()
		if m.halted == "" {
			m.halted, m.haltNode = halt, t.Node.Name
		}
		m.failed = append(m.failed, t.Node.Name+": "+halt)
		m.mu.Unlock()
		if herr := l.holdHalted(t.Node.Name+": "+halt, sec(p.HaltHold)); herr != nil {
			nodeutil.Logf(t, "keeping %s/%s held: %v", l.namespace, l.name, herr)
		}
		m.free(slot)
		return module.Applied{}, err
	}
	lost := l.stopRenewing()
	release()
	if err != nil {
		return module.Applied{}, m.fail(t.Node.Name, err)
	}
	if lost != "" {
		res.Summary += " (WARNING: lost the reboot lease while the node was out: " + lost + ")"
	}
	return res, nil
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
	// The plan saw one boot; if the node booted since (another operator's
	// run rebooted it while we waited for the slot), that reboot is the one
	// the plan asked for: do not take the node down twice.
	before, err := readBootID(ctx, t.Node.Runner)
	if err != nil {
		// The connection may have dropped while we waited (another
		// process rebooted this node): dial again once.
		rctx, cancel := context.WithTimeout(ctx, sec(p.RebootTimeout))
		if rerr := rc.Reconnect(rctx); rerr == nil {
			before, err = readBootID(ctx, t.Node.Runner)
		}
		cancel()
		if err != nil {
			return res, "", fmt.Errorf("reading the boot id: %w", err)
		}
	}
	if planned := pl.Fingerprint["boot_id"]; planned != "" && before != planned {
		return module.Applied{Changed: false, Summary: fmt.Sprintf("node %s has rebooted since the plan (boot id %s → %s): not rebooting again", name, shortID(planned), shortID(before)),
			Outputs: map[string]any{"rebooted": false, "boot_id": before}}, "", nil
	}
	start := time.Now()
	node, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return res, "", fmt.Errorf("Node %s: %w", name, err)
	}
	ours := !node.Spec.Unschedulable || node.Annotations[AnnotationCordonedBy] != ""
	if !node.Spec.Unschedulable {
		if err := cordon(ctx, cs, name, m.holder, true); err != nil {
			return res, "", err
		}
		nodeutil.Logf(t, "cordoned %s", name)
	} else if !ours {
		nodeutil.Logf(t, "%s was cordoned before this run: it stays cordoned", name)
	}
	uncordon := func() error {
		if !ours {
			return nil
		}
		return cordon(context.Background(), cs, name, m.holder, false)
	}
	n, err := drain(ctx, cs, name, p.Force, time.Now().Add(sec(p.DrainTimeout)), sec(p.EvictRetry), func(f string, a ...any) { nodeutil.Logf(t, f, a...) })
	if err != nil {
		msg := fmt.Sprintf("drain failed: %v; not rebooted", err)
		if ours {
			if uerr := uncordon(); uerr != nil {
				msg += fmt.Sprintf("; UNCORDON FAILED: %v", uerr)
			} else {
				msg += "; node uncordoned"
			}
		}
		return res, "", errors.New(msg)
	}
	nodeutil.Logf(t, "drained %d pod(s); rebooting with `%s`", n, p.Command)
	r, rerr := t.Node.Runner.Run(ctx, p.Command, module.RunOpts{Sudo: true, Timeout: 30 * time.Second})
	// A reboot kills every process of the node, the session running the
	// command included: exit by SIGHUP, SIGKILL or SIGTERM means it worked
	// (the new boot id below is what proves it).
	if rerr == nil && r.ExitCode != 0 && r.ExitCode != 128+1 && r.ExitCode != 128+9 && r.ExitCode != 128+15 {
		msg := fmt.Sprintf("reboot command `%s` failed (exit %d): %s", p.Command, r.ExitCode, strings.TrimSpace(string(r.Stderr)))
		if ours {
			if uerr := uncordon(); uerr != nil {
				msg += fmt.Sprintf("; UNCORDON FAILED: %v", uerr)
			} else {
				msg += "; node uncordoned"
			}
		}
		return res, "", errors.New(msg)
	}
	// rerr != nil is the expected connection drop.
	after, err := waitNewBoot(ctx, t.Node.Runner, rc, before, sec(p.RebootTimeout))
	if err != nil {
		halt = fmt.Sprintf("did not come back within reboot_timeout %ds after `%s`: %v; it stays cordoned; the reboot lock %s/%s stays held (delete it once the node is fixed)", p.RebootTimeout, p.Command, err, l.namespace, l.name)
		return res, halt, errors.New("node " + name + " " + halt)
	}
	nodeutil.Logf(t, "back with boot id %s after %s; waiting for Ready", shortID(after), time.Since(start).Round(time.Second))
	if err := waitReady(ctx, cs, name, after, sec(p.ReadyTimeout)); err != nil {
		halt = fmt.Sprintf("rebooted (boot id %s) but not Ready within ready_timeout %ds: %v; it stays cordoned; the reboot lock %s/%s stays held (delete it once the node is fixed)", shortID(after), p.ReadyTimeout, err, l.namespace, l.name)
		return res, halt, errors.New("node " + name + " " + halt)
	}
	state := "left cordoned (it was cordoned before the run)"
	if ours {
		if err := uncordon(); err != nil {
			return res, "", fmt.Errorf("rebooted and Ready, but uncordoning failed: %w", err)
		}
		state = "uncordoned"
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

// cordon sets or clears spec.unschedulable, with nksrun's annotation
// recording that nksrun did it.
func cordon(ctx context.Context, cs kubernetes.Interface, name, holder string, on bool) error {
	ann := "null"
	if on {
		ann = strconv.Quote(holder)
	}
	patch := fmt.Sprintf(`{"spec":{"unschedulable":%t},"metadata":{"annotations":{%q:%s}}}`, on, AnnotationCordonedBy, ann)
	var err error
	for i := 0; i < 5; i++ {
		if _, err = cs.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err == nil {
			return nil
		}
		time.Sleep(time.Second)
	}
	verb := "uncordoning"
	if on {
		verb = "cordoning"
	}
	return fmt.Errorf("%s %s: %w", verb, name, err)
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
