package reboot

import (
	"context"
	"fmt"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// AnnotationHalted on the reboot Lease says why a rollout stopped with the
// lock held (a node that did not come back).
const AnnotationHalted = "nksrun.io/halted"

// lease is one reboot slot: a coordination.k8s.io/v1 Lease that at most one
// nksrun process holds. A lease held by someone else is respected until it
// has not been renewed for its whole duration, measured on this machine's
// clock from when this process last saw it change (as client-go's leader
// election does), so clock skew between operators' machines cannot make a
// live lease look expired.
type lease struct {
	cs        kubernetes.Interface
	namespace string
	name      string
	holder    string
	duration  time.Duration

	mu       sync.Mutex
	seenRV   string
	seenAt   time.Time
	stopRenw context.CancelFunc
	renewed  chan struct{}
	lost     string
}

func (l *lease) spec(now time.Time) coordinationv1.LeaseSpec {
	secs := int32(l.duration / time.Second)
	mt := metav1.NewMicroTime(now)
	return coordinationv1.LeaseSpec{HolderIdentity: &l.holder, LeaseDurationSeconds: &secs, AcquireTime: &mt, RenewTime: &mt}
}

// tryAcquire takes the lease if it is free or expired. It returns who
// holds it otherwise (with the halt reason, if any).
func (l *lease) tryAcquire(ctx context.Context) (bool, string, error) {
	c := l.cs.CoordinationV1().Leases(l.namespace)
	now := time.Now()
	cur, err := c.Get(ctx, l.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		obj := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: l.name, Namespace: l.namespace, Labels: map[string]string{"app.kubernetes.io/managed-by": "nksrun"}}, Spec: l.spec(now)}
		if _, err := c.Create(ctx, obj, metav1.CreateOptions{}); err != nil {
			if apierrors.IsAlreadyExists(err) {
				return false, "another process (just created)", nil
			}
			return false, "", fmt.Errorf("creating Lease %s/%s: %w", l.namespace, l.name, err)
		}
		return true, "", nil
	}
	if err != nil {
		return false, "", fmt.Errorf("reading Lease %s/%s: %w", l.namespace, l.name, err)
	}
	holder := ""
	if cur.Spec.HolderIdentity != nil {
		holder = *cur.Spec.HolderIdentity
	}
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
	dur := 15 * time.Second
	if cur.Spec.LeaseDurationSeconds != nil {
		dur = time.Duration(*cur.Spec.LeaseDurationSeconds) * time.Second
	}
	expired := now.Sub(seenAt) > dur
	if holder != "" && holder != l.holder && !expired {
		if why := cur.Annotations[AnnotationHalted]; why != "" {
			holder += " (halted: " + why + ")"
		}
		return false, holder, nil
	}
	upd := cur.DeepCopy()
	upd.Spec = l.spec(now)
	if holder != "" && holder != l.holder {
		n := int32(1)
		if cur.Spec.LeaseTransitions != nil {
			n = *cur.Spec.LeaseTransitions + 1
		}
		upd.Spec.LeaseTransitions = &n
	}
	delete(upd.Annotations, AnnotationHalted)
	// The resourceVersion makes this a compare-and-swap: of two processes
	// taking a free lease at once, one gets a conflict.
	if _, err := c.Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
		if apierrors.IsConflict(err) {
			return false, "another process (raced)", nil
		}
		return false, "", fmt.Errorf("taking Lease %s/%s: %w", l.namespace, l.name, err)
	}
	return true, "", nil
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
			if err := l.update(ctx, func(le *coordinationv1.Lease) bool {
				now := metav1.NewMicroTime(time.Now())
				le.Spec.RenewTime = &now
				return true
			}); err != nil && ctx.Err() == nil {
				l.mu.Lock()
				l.lost = err.Error()
				l.mu.Unlock()
			}
		}
	}()
}

// update applies f to the lease if this process still holds it.
func (l *lease) update(ctx context.Context, f func(*coordinationv1.Lease) bool) error {
	c := l.cs.CoordinationV1().Leases(l.namespace)
	for i := 0; i < 5; i++ {
		cur, err := c.Get(ctx, l.name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cur.Spec.HolderIdentity == nil || *cur.Spec.HolderIdentity != l.holder {
			h := "nobody"
			if cur.Spec.HolderIdentity != nil && *cur.Spec.HolderIdentity != "" {
				h = *cur.Spec.HolderIdentity
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

// release frees the lease (holder cleared) so the next node can go.
func (l *lease) release() error {
	l.stopRenewing()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return l.update(ctx, func(le *coordinationv1.Lease) bool {
		le.Spec.HolderIdentity = nil
		return true
	})
}

// holdHalted keeps the lease held for hold (stopping renewals) and records
// why, so no other process reboots a node while this one is down.
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
