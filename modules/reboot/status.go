package reboot

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"nksrun/engine/module"
)

// What a rollout leaves in the cluster while it runs, or after it was
// killed: reboot slots (Leases), nodes nksrun cordoned, nodes it rebooted
// that are not back. Status reads it, Unlock clears it, Findings turns it
// into pending work for plan and doctor.

// Slot is one held reboot slot.
type Slot struct {
	Namespace string    `json:"namespace"`
	Name      string    `json:"name"`
	Holder    string    `json:"holder"`
	Host      string    `json:"host,omitempty"`
	PID       int       `json:"pid,omitempty"`
	RunID     string    `json:"runId,omitempty"`
	Node      string    `json:"node,omitempty"`   // the node the holder works on
	Phase     string    `json:"phase,omitempty"`  // cordoning, draining, rebooting, waiting-ready
	Reason    string    `json:"reason,omitempty"` // why the holder reboots
	Halted    string    `json:"halted,omitempty"` // why the rollout halted with the slot held
	Since     time.Time `json:"since"`            // acquireTime
	RenewTime time.Time `json:"renewTime"`
	Duration  int       `json:"leaseDurationSeconds"`
	// Expired: renewTime + duration has passed; the holder is gone (or
	// cannot reach the API server) and the next run takes the slot over.
	Expired bool `json:"expired"`
}

// NodeState is a node carrying nksrun's marks.
type NodeState struct {
	Name         string    `json:"name"`
	Holder       string    `json:"holder,omitempty"` // the run that cordoned it
	Since        time.Time `json:"since,omitempty"`  // when
	HolderAlive  bool      `json:"holderAlive"`      // that run still renews a slot
	Cordoned     bool      `json:"cordoned"`
	Ready        bool      `json:"ready"`
	BootID       string    `json:"bootId,omitempty"`
	RebootSentAt time.Time `json:"rebootSentAt,omitempty"`
	BootIDBefore string    `json:"bootIdBefore,omitempty"`
	Why          string    `json:"why,omitempty"`
}

// State is everything rollouts left in a cluster.
type State struct {
	Slots []Slot `json:"slots"`
	// Cordoned are cordons nksrun made (see Ownership.Ours).
	Cordoned []NodeState `json:"cordoned"`
	// Rebooting are nodes whose reboot command went out and that are not
	// yet Ready with a new boot id.
	Rebooting []NodeState `json:"rebooting"`
	// Stale are nksrun annotations on nodes whose cordon is not nksrun's
	// (schedulable again, or cordoned by someone else since); Unlock
	// removes them and leaves any cordon alone.
	Stale []NodeState `json:"stale"`
	// Unverified carry nksrun's annotation on a cordon the API server
	// keeps no field owners for: nothing proves nksrun set it.
	Unverified []NodeState `json:"unverified,omitempty"`
}

// Empty reports whether no rollout left anything.
func (s State) Empty() bool {
	return len(s.Slots)+len(s.Cordoned)+len(s.Rebooting)+len(s.Stale)+len(s.Unverified) == 0
}

// listLeases lists nksrun's reboot slot Leases: in every namespace when
// allowed, else in kube-system (the default lock_namespace).
func listLeases(ctx context.Context, cs kubernetes.Interface) ([]coordinationv1.Lease, error) {
	opts := metav1.ListOptions{LabelSelector: "app.kubernetes.io/managed-by=nksrun"}
	l, err := cs.CoordinationV1().Leases("").List(ctx, opts)
	if apierrors.IsForbidden(err) {
		l, err = cs.CoordinationV1().Leases("kube-system").List(ctx, opts)
	}
	if err != nil {
		return nil, fmt.Errorf("listing reboot Leases: %w", err)
	}
	var out []coordinationv1.Lease
	for _, le := range l.Items {
		// Leases made before the lock label existed are recognised by name.
		if le.Labels[LabelLock] == "reboot" || le.Labels[LabelLock] == "" && len(le.Name) >= 13 && le.Name[:13] == "nksrun-reboot" {
			out = append(out, le)
		}
	}
	return out, nil
}

func slotOf(le *coordinationv1.Lease, now time.Time) Slot {
	s := Slot{Namespace: le.Namespace, Name: le.Name, Holder: holderOf(le), Host: le.Annotations[AnnotationHolderHost], RunID: le.Annotations[AnnotationRunID],
		Node: le.Annotations[AnnotationNode], Phase: le.Annotations[AnnotationPhase], Reason: le.Annotations[AnnotationReason], Halted: le.Annotations[AnnotationHalted],
		Duration: int(leaseDuration(le) / time.Second), Expired: lapsed(le, now)}
	s.PID, _ = strconv.Atoi(le.Annotations[AnnotationHolderPID])
	if le.Spec.AcquireTime != nil {
		s.Since = le.Spec.AcquireTime.Time
	}
	if le.Spec.RenewTime != nil {
		s.RenewTime = le.Spec.RenewTime.Time
	}
	return s
}

// alive reports whether a slot's holder is a running process: it renews
// the slot, and it has not halted (a halted run has exited).
func (s Slot) alive() bool { return s.Holder != "" && !s.Expired && s.Halted == "" }

// holderAlive reports whether holder still renews a reboot slot in the
// lock namespace (where a rollout's slots are; the module's RBAC is
// namespaced there). On an error it answers alive: nothing is taken over
// that cannot be shown abandoned.
func holderAlive(ctx context.Context, cs kubernetes.Interface, namespace, holder string) (bool, error) {
	l, err := cs.CoordinationV1().Leases(namespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/managed-by=nksrun"})
	if err != nil {
		return true, fmt.Errorf("listing reboot Leases in %s: %w", namespace, err)
	}
	now := time.Now()
	for i := range l.Items {
		if s := slotOf(&l.Items[i], now); s.Holder == holder && s.alive() {
			return true, nil
		}
	}
	return false, nil
}

// Status lists held reboot slots, nodes nksrun cordoned, nodes rebooted but
// not yet Ready, and stale marks.
func Status(ctx context.Context, c *module.Cluster) (State, error) {
	st := State{Slots: []Slot{}, Cordoned: []NodeState{}, Rebooting: []NodeState{}, Stale: []NodeState{}}
	if c == nil || c.Clientset == nil {
		return st, fmt.Errorf("reboot status needs the cluster: set --kubeconfig")
	}
	cs := c.Clientset
	leases, err := listLeases(ctx, cs)
	if err != nil {
		return st, err
	}
	now := time.Now()
	alive := map[string]bool{}
	for i := range leases {
		s := slotOf(&leases[i], now)
		if s.Holder == "" {
			continue
		}
		st.Slots = append(st.Slots, s)
		if s.alive() {
			alive[s.Holder] = true
		}
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return st, fmt.Errorf("listing nodes: %w", err)
	}
	for i := range nodes.Items {
		n := &nodes.Items[i]
		if !hasNksrunAnnotations(n) {
			continue
		}
		o := ownershipOf(n)
		ns := NodeState{Name: n.Name, Holder: o.Holder, Since: o.Since, HolderAlive: alive[o.Holder], Cordoned: n.Spec.Unschedulable, Ready: isReady(n),
			BootID: n.Status.NodeInfo.BootID, BootIDBefore: n.Annotations[AnnotationBootIDBefore], Why: o.Why}
		if t, err := time.Parse(time.RFC3339, n.Annotations[AnnotationRebootSentAt]); err == nil {
			ns.RebootSentAt = t
		}
		switch {
		case o.Ours:
			st.Cordoned = append(st.Cordoned, ns)
		case o.Stale:
			st.Stale = append(st.Stale, ns)
		case o.Unknown:
			st.Unverified = append(st.Unverified, ns)
		}
		if !ns.RebootSentAt.IsZero() && !(ns.Ready && ns.BootID != ns.BootIDBefore) {
			st.Rebooting = append(st.Rebooting, ns)
		}
	}
	sort.Slice(st.Slots, func(i, j int) bool {
		return st.Slots[i].Namespace+"/"+st.Slots[i].Name < st.Slots[j].Namespace+"/"+st.Slots[j].Name
	})
	return st, nil
}

// Result is what Unlock did, and what it left and why.
type Result struct {
	Released   []string `json:"released"`   // slots: namespace/name (holder)
	Uncordoned []string `json:"uncordoned"` // nodes
	Cleaned    []string `json:"cleaned"`    // nodes whose stale nksrun annotations were removed
	Kept       []string `json:"kept"`       // what was left, with the reason
}

// Unlock releases reboot slots and lifts nksrun's cordons, like terraform
// force-unlock. A slot whose holder may still be alive (renewal not lapsed,
// not halted), and the cordons of that holder, are kept unless force. A
// cordon is lifted only if it is nksrun's by the ownership rules; stale
// annotations are removed and the cordon under them left alone.
func Unlock(ctx context.Context, c *module.Cluster, force bool) (Result, error) {
	res := Result{Released: []string{}, Uncordoned: []string{}, Cleaned: []string{}, Kept: []string{}}
	st, err := Status(ctx, c)
	if err != nil {
		return res, err
	}
	cs := c.Clientset
	alive := map[string]bool{}
	for _, s := range st.Slots {
		id := fmt.Sprintf("%s/%s (%s)", s.Namespace, s.Name, s.Holder)
		if s.alive() {
			alive[s.Holder] = true
			if !force {
				res.Kept = append(res.Kept, fmt.Sprintf("slot %s: renewed %s ago, its holder may still be running (--force to release it anyway)", id, time.Since(s.RenewTime).Round(time.Second)))
				continue
			}
		}
		if err := releaseSlot(ctx, cs, s); err != nil {
			return res, err
		}
		res.Released = append(res.Released, id)
	}
	for _, n := range st.Cordoned {
		if alive[n.Holder] && !force {
			res.Kept = append(res.Kept, fmt.Sprintf("node %s: cordoned by %s, which may still be running (--force to uncordon it anyway)", n.Name, n.Holder))
			continue
		}
		did, err := uncordonNode(ctx, cs, n.Name, n.Holder, false)
		if err != nil {
			return res, fmt.Errorf("node %s: %w", n.Name, err)
		}
		if did {
			res.Uncordoned = append(res.Uncordoned, n.Name)
		} else {
			res.Kept = append(res.Kept, fmt.Sprintf("node %s: its cordon is no longer nksrun's; left cordoned", n.Name))
		}
	}
	for _, n := range st.Stale {
		did, err := clearStale(ctx, cs, n.Name)
		if err != nil {
			return res, fmt.Errorf("node %s: %w", n.Name, err)
		}
		if did {
			res.Cleaned = append(res.Cleaned, n.Name)
		}
	}
	for _, n := range st.Unverified {
		res.Kept = append(res.Kept, fmt.Sprintf("node %s: %s; left cordoned (kubectl uncordon it if it is yours)", n.Name, n.Why))
	}
	return res, nil
}

// releaseSlot clears a slot if it is still held as s saw it (a
// compare-and-swap on the holder, so a slot a new run just took is kept).
func releaseSlot(ctx context.Context, cs kubernetes.Interface, s Slot) error {
	c := cs.CoordinationV1().Leases(s.Namespace)
	le, err := c.Get(ctx, s.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("Lease %s/%s: %w", s.Namespace, s.Name, err)
	}
	if holderOf(le) != s.Holder {
		return nil
	}
	clearLease(le)
	if _, err := c.Update(ctx, le, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("releasing Lease %s/%s: %w", s.Namespace, s.Name, err)
	}
	return nil
}

// Findings is the rollout state as pending work for plan and doctor: held
// slots, nksrun's cordons, nodes not back, stale marks. No findings for a
// clean cluster.
func Findings(ctx context.Context, c *module.Cluster) ([]module.FindingInfo, error) {
	st, err := Status(ctx, c)
	if err != nil {
		return nil, err
	}
	return findingsOf(st, time.Now()), nil
}

func findingsOf(st State, now time.Time) []module.FindingInfo {
	var out []module.FindingInfo
	ago := func(t time.Time) string {
		if t.IsZero() {
			return "unknown"
		}
		return now.Sub(t).Round(time.Second).String() + " ago"
	}
	for _, s := range st.Slots {
		f := module.FindingInfo{Severity: "warning", Title: fmt.Sprintf("reboot slot %s/%s is held by %s", s.Namespace, s.Name, s.Holder)}
		f.Evidence = append(f.Evidence, fmt.Sprintf("since %s (%s), renewed %s, lease %ds", s.Since.UTC().Format(time.RFC3339), ago(s.Since), ago(s.RenewTime), s.Duration))
		if s.Node != "" {
			f.Evidence = append(f.Evidence, fmt.Sprintf("node %s, phase %s", s.Node, s.Phase))
		}
		if s.Reason != "" {
			f.Evidence = append(f.Evidence, "why: "+s.Reason)
		}
		switch {
		case s.Halted != "":
			f.Severity = "critical"
			f.Evidence = append(f.Evidence, "halted: "+s.Halted)
			f.Recommendation = "fix the node, then `nksrun unlock`; until then no nksrun run reboots another node"
		case s.Expired:
			f.Evidence = append(f.Evidence, "expired: the holder stopped renewing it (killed?)")
			f.Recommendation = "the next run takes it over; `nksrun unlock` releases it now"
		default:
			f.Severity = "info"
			f.Recommendation = "a rollout is running; `nksrun status` shows its progress"
		}
		out = append(out, f)
	}
	if len(st.Cordoned) > 0 {
		f := module.FindingInfo{Severity: "warning", Title: fmt.Sprintf("%d node(s) cordoned by nksrun", len(st.Cordoned)),
			Recommendation: "`nksrun unlock` uncordons them once their run is gone"}
		for _, n := range st.Cordoned {
			state := "its run is gone"
			if n.HolderAlive {
				state = "its run is still going"
			}
			f.Evidence = append(f.Evidence, fmt.Sprintf("%s: by %s since %s (%s), Ready=%v; %s", n.Name, n.Holder, n.Since.UTC().Format(time.RFC3339), ago(n.Since), n.Ready, state))
		}
		out = append(out, f)
	}
	if len(st.Rebooting) > 0 {
		f := module.FindingInfo{Severity: "critical", Title: fmt.Sprintf("%d node(s) rebooted by nksrun and not Ready with a new boot yet", len(st.Rebooting)),
			Recommendation: "check the node (console, kubelet); `nksrun unlock` once it is back"}
		for _, n := range st.Rebooting {
			f.Evidence = append(f.Evidence, fmt.Sprintf("%s: reboot sent %s, boot id before %s, now %s, Ready=%v", n.Name, ago(n.RebootSentAt), shortID(n.BootIDBefore), shortID(n.BootID), n.Ready))
		}
		out = append(out, f)
	}
	if len(st.Stale)+len(st.Unverified) > 0 {
		f := module.FindingInfo{Severity: "info", Title: fmt.Sprintf("%d node(s) carry a stale nksrun cordoned-by annotation", len(st.Stale)+len(st.Unverified)),
			Recommendation: "`nksrun unlock` removes it; the node's cordon, if any, is not nksrun's and stays"}
		for _, n := range append(append([]NodeState{}, st.Stale...), st.Unverified...) {
			f.Evidence = append(f.Evidence, fmt.Sprintf("%s: %s", n.Name, n.Why))
		}
		out = append(out, f)
	}
	return out
}
