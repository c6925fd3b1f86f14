package reboot

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Lease annotations: who holds a reboot slot (beyond the holder identity
// string), for what, and in which phase, so `nksrun status` can say it.
const (
	// AnnotationHalted on the reboot Lease says why a rollout stopped with the
	// lock held (a node that did not come back).
	AnnotationHalted     = "nksrun.io/halted"
	AnnotationHolderHost = "nksrun.io/holder-host"
	AnnotationHolderPID  = "nksrun.io/holder-pid"
	AnnotationRunID      = "nksrun.io/run-id"
	AnnotationNode       = "nksrun.io/node"   // the node the slot is used for
	AnnotationPhase      = "nksrun.io/phase"  // cordoning, draining, rebooting, waiting-ready
	AnnotationReason     = "nksrun.io/reason" // the step's reason
	// LabelLock marks nksrun's reboot slot Leases (with app.kubernetes.io/managed-by=nksrun).
	LabelLock = "nksrun.io/lock"
)

var leaseAnnotations = []string{AnnotationHalted, AnnotationHolderHost, AnnotationHolderPID, AnnotationRunID, AnnotationNode, AnnotationPhase, AnnotationReason}

// Phases recorded on the Lease while a node is worked on.
const (
	PhaseCordoning    = "cordoning"
	PhaseDraining     = "draining"
	PhaseRebooting    = "rebooting"
	PhaseWaitingReady = "waiting-ready"
)

// Identity is who holds a slot: one nksrun process (one run).
type Identity struct {
	Host  string
	PID   int
	RunID string
}

// String is the Lease's holderIdentity.
func (i Identity) String() string { return fmt.Sprintf("nksrun@%s/%d/%s", i.Host, i.PID, i.RunID) }

func (i Identity) annotations() map[string]string {
	return map[string]string{AnnotationHolderHost: i.Host, AnnotationHolderPID: strconv.Itoa(i.PID), AnnotationRunID: i.RunID}
}

// lease is one reboot slot: a coordination.k8s.io/v1 Lease that at most one
// nksrun process holds, renewed every third of its (short) duration while
// the process works. A slot held by someone else is free once its renewal
// has lapsed: renewTime + leaseDurationSeconds is past on this machine's
// clock, or this process has watched the Lease stay unchanged for a whole
// duration (client-go's leader election rule, immune to clock skew). So a
// killed process (kill -9, OOM, its machine gone) blocks the rollout for at
// most one duration.
type lease struct {
	cs        kubernetes.Interface
	namespace string
	name      string
	id        Identity
	holder    string
	duration  time.Duration

	mu       sync.Mutex
	seenRV   string
	seenAt   time.Time
	stopRenw context.CancelFunc
	lost     string
}

// haltedError: the slot is kept by a rollout that halted (a node did not
// come back). Waiting for it is pointless: it is held until an operator
// has dealt with the node and runs `nksrun unlock` (or halt_hold passes).
type haltedError struct{ lease, holder, why string }

func (e *haltedError) Error() string {
	return fmt.Sprintf("the rolling reboot is halted: slot %s is kept by %s: %s; fix that node, then `nksrun unlock`", e.lease, e.holder, e.why)
}

// takeover describes the holder a slot was taken from after its renewal
// lapsed (a process that died), and the node it was working on.
type takeover struct {
	holder string
	node   string
	phase  string
}

func (l *lease) spec(now time.Time) coordinationv1.LeaseSpec {
	secs := int32(l.duration / time.Second)
	if secs < 1 {
		secs = 1
	}
	mt := metav1.NewMicroTime(now)
	return coordinationv1.LeaseSpec{HolderIdentity: &l.holder, LeaseDurationSeconds: &secs, AcquireTime: &mt, RenewTime: &mt}
}

// setAnnotations replaces the Lease's nksrun annotations by set.
func setAnnotations(obj *metav1.ObjectMeta, set map[string]string) {
	if obj.Annotations == nil {
		obj.Annotations = map[string]string{}
	}
	for _, k := range leaseAnnotations {
		delete(obj.Annotations, k)
	}
	for k, v := range set {
		if v != "" {
			obj.Annotations[k] = v
		}
	}
}

// lapsed reports whether a Lease's renewal has lapsed at now by its own
// record (renewTime + duration).
func lapsed(le *coordinationv1.Lease, now time.Time) bool {
	if le.Spec.RenewTime == nil {
		return true
	}
	return now.After(le.Spec.RenewTime.Add(leaseDuration(le)))
}

func leaseDuration(le *coordinationv1.Lease) time.Duration {
	if le.Spec.LeaseDurationSeconds != nil {
		return time.Duration(*le.Spec.LeaseDurationSeconds) * time.Second
	}
	return 15 * time.Second
}

func holderOf(le *coordinationv1.Lease) string {
	if le.Spec.HolderIdentity != nil {
		return *le.Spec.HolderIdentity
	}
	return ""
}

// tryAcquire takes the lease if it is free or its holder's renewal lapsed,
// recording why (node, reason). It returns who holds it otherwise (with the
// halt reason, if any), and whom it took the slot from.
func (l *lease) tryAcquire(ctx context.Context, why map[string]string) (bool, string, *takeover, error) {
	c := l.cs.CoordinationV1().Leases(l.namespace)
	now := time.Now()
	ann := l.id.annotations()
	for k, v := range why {
		ann[k] = v
	}
	cur, err := c.Get(ctx, l.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		obj := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: l.name, Namespace: l.namespace,
			Labels: map[string]string{"app.kubernetes.io/managed-by": "nksrun", LabelLock: "reboot"}}, Spec: l.spec(now)}
		setAnnotations(&obj.ObjectMeta, ann)
		if _, err := c.Create(ctx, obj, metav1.CreateOptions{}); err != nil {
			if apierrors.IsAlreadyExists(err) {
				return false, "another process (just created)", nil, nil
			}
			return false, "", nil, fmt.Errorf("creating Lease %s/%s: %w", l.namespace, l.name, err)
		}
		return true, "", nil, nil
	}
	if err != nil {
		return false, "", nil, fmt.Errorf("reading Lease %s/%s: %w", l.namespace, l.name, err)
	}
	holder := holderOf(cur)
	l.mu.Lock()
	// Compare the whole record, not only resourceVersion: a renewal
	// changes renewTime even where an API does not bump the version.
	rec := cur.ResourceVersion + "|" + holder
	if cur.Spec.RenewTime != nil {
		rec += "|" + cur.Spec.RenewTime.String()
	}
	if l.seenAt.IsZero() || rec != l.seenRV {
		l.seenRV, l.seenAt = rec, now
	}
	seenAt := l.seenAt
	l.mu.Unlock()
	expired := lapsed(cur, now) || now.Sub(seenAt) > leaseDuration(cur)
	if holder != "" && holder != l.holder && !expired {
		if why := cur.Annotations[AnnotationHalted]; why != "" {
			return false, holder + " (halted: " + why + ")", nil, &haltedError{lease: l.namespace + "/" + l.name, holder: holder, why: why}
		}
		return false, holder, nil, nil
	}
	var prev *takeover
	upd := cur.DeepCopy()
	upd.Spec = l.spec(now)
	if holder != "" && holder != l.holder {
		prev = &takeover{holder: holder, node: cur.Annotations[AnnotationNode], phase: cur.Annotations[AnnotationPhase]}
		if h := cur.Annotations[AnnotationHalted]; h != "" {
			prev.phase = "halted: " + h
		}
		n := int32(1)
		if cur.Spec.LeaseTransitions != nil {
			n = *cur.Spec.LeaseTransitions + 1
		}
		upd.Spec.LeaseTransitions = &n
	}
	if upd.Labels == nil {
		upd.Labels = map[string]string{}
	}
	upd.Labels["app.kubernetes.io/managed-by"], upd.Labels[LabelLock] = "nksrun", "reboot"
	setAnnotations(&upd.ObjectMeta, ann)
	// The resourceVersion makes this a compare-and-swap: of two processes
	// taking a free lease at once, one gets a conflict.
	if _, err := c.Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
		if apierrors.IsConflict(err) {
			return false, "another process (raced)", nil, nil
		}
		return false, "", nil, fmt.Errorf("taking Lease %s/%s: %w", l.namespace, l.name, err)
	}
	return true, "", prev, nil
}

// startRenewing renews the lease every third of its duration until release.
func (l *lease) startRenewing() {
	ctx, cancel := context.WithCancel(context.Background())
	l.mu.Lock()
	l.stopRenw, l.lost = cancel, ""
	l.mu.Unlock()
	every := l.duration / 3
	if every < 500*time.Millisecond {
		every = 500 * time.Millisecond
	}
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if err := l.renew(ctx); err != nil && ctx.Err() == nil {
				l.mu.Lock()
				l.lost = err.Error()
				l.mu.Unlock()
			}
		}
	}()
}

func (l *lease) renew(ctx context.Context) error {
	return l.update(ctx, func(le *coordinationv1.Lease) bool {
		now := metav1.NewMicroTime(time.Now())
		le.Spec.RenewTime = &now
		return true
	})
}

// check is the last look before the reboot command: this process must still
// hold the slot (renewals never failed, the Lease still names it). It renews
// the slot at the same time, so the reboot starts with a full duration.
func (l *lease) check(ctx context.Context) error {
	l.mu.Lock()
	lost := l.lost
	l.mu.Unlock()
	if lost != "" {
		return fmt.Errorf("lost the reboot slot %s/%s: %s", l.namespace, l.name, lost)
	}
	if err := l.renew(ctx); err != nil {
		return fmt.Errorf("lost the reboot slot %s/%s: %w", l.namespace, l.name, err)
	}
	return nil
}

// setPhase records the phase on the Lease (best effort: it is for status).
func (l *lease) setPhase(ctx context.Context, phase string) {
	_ = l.update(ctx, func(le *coordinationv1.Lease) bool {
		if le.Annotations == nil {
			le.Annotations = map[string]string{}
		}
		le.Annotations[AnnotationPhase] = phase
		now := metav1.NewMicroTime(time.Now())
		le.Spec.RenewTime = &now
		return true
	})
}

// update applies f to the lease if this process still holds it.
func (l *lease) update(ctx context.Context, f func(*coordinationv1.Lease) bool) error {
	c := l.cs.CoordinationV1().Leases(l.namespace)
	for i := 0; i < 5; i++ {
		cur, err := c.Get(ctx, l.name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if h := holderOf(cur); h != l.holder {
			if h == "" {
				h = "nobody"
			}
			return fmt.Errorf("lease %s/%s is now held by %s", l.namespace, l.name, h)
		}
		if !f(cur) {
			return nil
		}
		if _, err = c.Update(ctx, cur, metav1.UpdateOptions{}); err == nil || !apierrors.IsConflict(err) {
			return err
		}
	}
	return fmt.Errorf("lease %s/%s: too many conflicts", l.namespace, l.name)
}

func (l *lease) stopRenewing() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopRenw != nil {
		l.stopRenw()
		l.stopRenw = nil
	}
	return l.lost
}

// release frees the lease (holder and nksrun annotations cleared) so the
// next node can go.
func (l *lease) release() error {
	l.stopRenewing()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return l.update(ctx, func(le *coordinationv1.Lease) bool {
		clearLease(le)
		return true
	})
}

func clearLease(le *coordinationv1.Lease) {
	le.Spec.HolderIdentity = nil
	setAnnotations(&le.ObjectMeta, nil)
}

// holdHalted keeps the lease held for hold (stopping renewals) and records
// why, so no other process reboots a node while this one is down. `nksrun
// unlock` releases it once the node is dealt with.
func (l *lease) holdHalted(why string, hold time.Duration) error {
	l.stopRenewing()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return l.update(ctx, func(le *coordinationv1.Lease) bool {
		secs := int32(hold / time.Second)
		now := metav1.NewMicroTime(time.Now())
		le.Spec.LeaseDurationSeconds, le.Spec.RenewTime = &secs, &now
		if le.Annotations == nil {
			le.Annotations = map[string]string{}
		}
		le.Annotations[AnnotationHalted] = why
		return true
	})
}
