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
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// podSet is a node's pods sorted into what a drain does with them.
type podSet struct {
	evict     []corev1.Pod
	daemonSet []string
	mirror    []string
	unmanaged []string // no controller: lost for good once evicted
	localData []string // running pods with emptyDir volumes: the data goes with the pod
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
		finished := p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
		if ref == nil && !finished {
			s.unmanaged = append(s.unmanaged, podName(p))
		}
		// As kubectl drain: a finished pod's emptyDir holds nothing anyone
		// still uses; a running pod's is lost with the eviction.
		if !finished && hasEmptyDir(p) {
			s.localData = append(s.localData, podName(p))
		}
		s.evict = append(s.evict, *p)
	}
	sort.Slice(s.evict, func(i, j int) bool { return podName(&s.evict[i]) < podName(&s.evict[j]) })
	return s
}

func hasEmptyDir(p *corev1.Pod) bool {
	for _, v := range p.Spec.Volumes {
		if v.EmptyDir != nil {
			return true
		}
	}
	return false
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

// drainOpts are the choices `kubectl drain` offers, plus the bounds.
type drainOpts struct {
	force          bool // evict pods without a controller (--force)
	deleteEmptyDir bool // evict pods with emptyDir data (--delete-emptydir-data)
	deadline       time.Time
	retry          time.Duration // between 429 retries
	logf           func(string, ...any)
}

// refusals says why a drain must not start, as kubectl drain would refuse.
func refusals(set podSet, o drainOpts) []string {
	var out []string
	if len(set.unmanaged) > 0 && !o.force {
		out = append(out, fmt.Sprintf("pods without a controller would be deleted for good: %s (set force: true to evict them anyway)", short(set.unmanaged, 10)))
	}
	if len(set.localData) > 0 && !o.deleteEmptyDir {
		out = append(out, fmt.Sprintf("pods with local data (emptyDir) would lose it: %s (set delete_emptydir_data: true to evict them anyway)", short(set.localData, 10)))
	}
	return out
}

// drain evicts every pod a drain must move, through the Eviction API
// (policy/v1), which enforces PodDisruptionBudgets: a 429 is retried every
// retry until the deadline, and the error then names the budgets and pods
// that blocked. It then waits until each evicted pod is gone (or its grace
// period is over). When ctx is cancelled (an interruption, not the drain
// deadline) it stops at once; the caller tells the two apart.
func drain(ctx context.Context, cs kubernetes.Interface, node string, o drainOpts) (int, error) {
	pods, err := listPods(ctx, cs, node)
	if err != nil {
		return 0, err
	}
	set := classify(pods)
	if r := refusals(set, o); len(r) > 0 {
		return 0, fmt.Errorf("cannot drain: %s", strings.Join(r, "; "))
	}
	if len(set.evict) == 0 {
		return 0, nil
	}
	o.logf("draining %d pod(s): %s", len(set.evict), short(names(set.evict), 10))
	dctx, cancel := context.WithDeadline(ctx, o.deadline)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, len(set.evict))
	for i := range set.evict {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs[i] = evict(dctx, cs, &set.evict[i], o.retry, o.logf)
		}(i)
	}
	wg.Wait()
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}
	if err := drainError(errs); err != nil {
		return 0, err
	}
	return len(set.evict), nil
}

// blockedError is a pod whose eviction a PodDisruptionBudget kept refusing
// until the drain timeout.
type blockedError struct {
	pod     string
	pdbs    []string // namespace/name of the budgets that cover the pod
	message string   // the API server's words (which budget, how many healthy)
	waited  time.Duration
}

func (e *blockedError) Error() string {
	by := "a PodDisruptionBudget"
	if len(e.pdbs) > 0 {
		by = "PodDisruptionBudget " + strings.Join(e.pdbs, ", ")
	}
	return fmt.Sprintf("evicting %s: refused by %s for %s: %s", e.pod, by, e.waited.Round(time.Second), e.message)
}

// drainError puts the budgets first: "blocked by PodDisruptionBudget(s) X
// (pods a, b)", then every pod's own line.
func drainError(errs []error) error {
	err := errors.Join(errs...)
	if err == nil {
		return nil
	}
	budgets := map[string][]string{}
	for _, e := range errs {
		var b *blockedError
		if errors.As(e, &b) {
			key := "an unnamed PodDisruptionBudget"
			if len(b.pdbs) > 0 {
				key = strings.Join(b.pdbs, ", ")
			}
			budgets[key] = append(budgets[key], b.pod)
		}
	}
	if len(budgets) == 0 {
		return err
	}
	keys := make([]string, 0, len(budgets))
	for k := range budgets {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("PodDisruptionBudget %s blocks pod(s) %s", k, strings.Join(budgets[k], ", ")))
	}
	return fmt.Errorf("drain timeout: %s: %w", strings.Join(parts, "; "), err)
}

// budgetsFor names the PodDisruptionBudgets whose selector matches the pod.
func budgetsFor(ctx context.Context, cs kubernetes.Interface, p *corev1.Pod) []string {
	list, err := cs.PolicyV1().PodDisruptionBudgets(p.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil
	}
	var out []string
	for _, pdb := range list.Items {
		sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		if err != nil || sel.Empty() {
			continue
		}
		if sel.Matches(labels.Set(p.Labels)) {
			out = append(out, pdb.Namespace+"/"+pdb.Name)
		}
	}
	sort.Strings(out)
	return out
}

// refusalMessage is the API server's reason for a 429, with the budget's
// own cause (e.g. "The disruption budget web needs 1 healthy pods and has
// 1 currently") when it gives one.
func refusalMessage(err error) string {
	msg := err.Error()
	var se apierrors.APIStatus
	if errors.As(err, &se) {
		st := se.Status()
		msg = st.Message
		if st.Details != nil {
			for _, c := range st.Details.Causes {
				if c.Type == policyv1.DisruptionBudgetCause && c.Message != "" {
					msg += " " + c.Message
				}
			}
		}
	}
	return msg
}

func evict(ctx context.Context, cs kubernetes.Interface, p *corev1.Pod, retry time.Duration, logf func(string, ...any)) error {
	name := podName(p)
	ev := &policyv1.Eviction{
		ObjectMeta:    metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace},
		DeleteOptions: &metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &p.UID}},
	}
	start := time.Now()
	var blocked *blockedError
	for {
		err := cs.PolicyV1().Evictions(p.Namespace).Evict(ctx, ev)
		switch {
		case err == nil:
		case apierrors.IsNotFound(err), apierrors.IsConflict(err) && ctx.Err() == nil:
			return nil // gone already (or replaced: a different UID)
		case apierrors.IsTooManyRequests(err):
			if blocked == nil {
				// Budgets are looked up on a context of their own: the
				// error must name them even when the deadline is near.
				bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
				blocked = &blockedError{pod: name, pdbs: budgetsFor(bctx, cs, p)}
				cancel()
				logf("eviction of %s refused (%s); retrying every %s", name, refusalMessage(err), retry)
			}
			blocked.message = refusalMessage(err)
			select {
			case <-ctx.Done():
				blocked.waited = time.Since(start)
				return blocked
			case <-time.After(retry):
			}
			continue
		default:
			if ctx.Err() != nil {
				// Typically "client rate limiter Wait returned an error":
				// the deadline, not the cause.
				if blocked != nil {
					blocked.waited = time.Since(start)
					return blocked
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
