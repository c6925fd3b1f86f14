package reboot

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// podSet is a node's pods sorted into what a drain does with them.
type podSet struct {
	evict     []corev1.Pod
	daemonSet []string
	mirror    []string
	unmanaged []string // no controller: lost for good once evicted
}

func podName(p *corev1.Pod) string { return p.Namespace + "/" + p.Name }

func classify(pods []corev1.Pod) podSet {
	var s podSet
	for i := range pods {
		p := &pods[i]
		if _, ok := p.Annotations[corev1.MirrorPodAnnotationKey]; ok {
			s.mirror = append(s.mirror, podName(p))
			continue
		}
		ref := metav1.GetControllerOf(p)
		if ref != nil && ref.Kind == "DaemonSet" {
			s.daemonSet = append(s.daemonSet, podName(p))
			continue
		}
		if p.DeletionTimestamp != nil && (p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed) {
			continue
		}
		if ref == nil && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			s.unmanaged = append(s.unmanaged, podName(p))
		}
		s.evict = append(s.evict, *p)
	}
	sort.Slice(s.evict, func(i, j int) bool { return podName(&s.evict[i]) < podName(&s.evict[j]) })
	return s
}

func listPods(ctx context.Context, cs kubernetes.Interface, node string) ([]corev1.Pod, error) {
	l, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		return nil, fmt.Errorf("listing pods on %s: %w", node, err)
	}
	return l.Items, nil
}

func names(pods []corev1.Pod) []string {
	var out []string
	for i := range pods {
		out = append(out, podName(&pods[i]))
	}
	return out
}

// short lists at most n names.
func short(list []string, n int) string {
	if len(list) <= n {
		return strings.Join(list, ", ")
	}
	return strings.Join(list[:n], ", ") + fmt.Sprintf(", … (%d more)", len(list)-n)
}

// drain evicts every pod a drain must move, through the Eviction API
// (policy/v1), which enforces PodDisruptionBudgets: a 429 is retried every
// retry until deadline. It then waits until each evicted pod is gone (or
// its grace period is over).
func drain(ctx context.Context, cs kubernetes.Interface, node string, force bool, deadline time.Time, retry time.Duration, logf func(string, ...any)) (int, error) {
	pods, err := listPods(ctx, cs, node)
	if err != nil {
		return 0, err
	}
	set := classify(pods)
	if len(set.unmanaged) > 0 && !force {
		return 0, fmt.Errorf("cannot drain: pods without a controller would be deleted for good: %s (set force: true to evict them anyway)", short(set.unmanaged, 10))
	}
	if len(set.evict) == 0 {
		return 0, nil
	}
	logf("draining %d pod(s): %s", len(set.evict), short(names(set.evict), 10))
	dctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, len(set.evict))
	for i := range set.evict {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs[i] = evict(dctx, cs, &set.evict[i], retry, logf)
		}(i)
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	return len(set.evict), nil
}

func evict(ctx context.Context, cs kubernetes.Interface, p *corev1.Pod, retry time.Duration, logf func(string, ...any)) error {
	name := podName(p)
	ev := &policyv1.Eviction{
		ObjectMeta:    metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace},
		DeleteOptions: &metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &p.UID}},
	}
	start := time.Now()
	blocked := ""
	for {
		err := cs.PolicyV1().Evictions(p.Namespace).Evict(ctx, ev)
		switch {
		case err == nil:
		case apierrors.IsNotFound(err), apierrors.IsConflict(err) && ctx.Err() == nil:
			return nil // gone already (or replaced: a different UID)
		case apierrors.IsTooManyRequests(err):
			if blocked == "" {
				logf("eviction of %s refused (%v); retrying every %s", name, err, retry)
			}
			blocked = err.Error()
			select {
			case <-ctx.Done():
				return fmt.Errorf("evicting %s: still refused after %s: %s", name, time.Since(start).Round(time.Second), blocked)
			case <-time.After(retry):
			}
			continue
		default:
			if ctx.Err() != nil {
				if blocked != "" {
					return fmt.Errorf("evicting %s: still refused after %s: %s", name, time.Since(start).Round(time.Second), blocked)
				}
				return fmt.Errorf("evicting %s: drain timeout after %s (%v)", name, time.Since(start).Round(time.Second), err)
			}
			return fmt.Errorf("evicting %s: %w", name, err)
		}
		return waitGone(ctx, cs, p.Namespace, p.Name, p.UID)
	}
}

// waitGone waits until the pod is deleted or replaced, or its deletion grace
// period has passed (the kubelet has killed its containers by then).
func waitGone(ctx context.Context, cs kubernetes.Interface, ns, name string, uid types.UID) error {
	for {
		cur, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			return nil
		case err == nil && cur.UID != uid:
			return nil
		case err == nil && cur.DeletionTimestamp != nil && time.Now().After(cur.DeletionTimestamp.Time):
			return nil
		case err != nil && ctx.Err() == nil:
			return fmt.Errorf("waiting for %s/%s to go: %w", ns, name, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("evicted %s/%s but it is still terminating at the drain timeout", ns, name)
		case <-time.After(time.Second):
		}
	}
}
