package reboot

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// Node annotations. nksrun records on every node it cordons who did it and
// when, and, once the reboot command is sent, the boot it left; `nksrun
// status` and `unlock` read them, and a later run uses them to finish what a
// killed run left.
const (
	// AnnotationCordonedBy is the holder identity of the run that cordoned
	// the node (nksrun@host/pid/run-id).
	AnnotationCordonedBy = "nksrun.io/cordoned-by"
	// AnnotationCordonedAt is when it did (RFC 3339, UTC).
	AnnotationCordonedAt = "nksrun.io/cordoned-at"
	// AnnotationRebootSentAt is when the reboot command was sent.
	AnnotationRebootSentAt = "nksrun.io/reboot-sent-at"
	// AnnotationBootIDBefore is the boot id the node had before that reboot.
	AnnotationBootIDBefore = "nksrun.io/boot-id-before"
)

// FieldManager is the field manager of every cordon nksrun makes. The API
// server then records in metadata.managedFields who set spec.unschedulable
// last: an administrator who uncordons and cordons the node again becomes
// its owner, so a cordoned-by annotation left on that node is recognised as
// stale and never trusted to uncordon it.
const FieldManager = "nksrun-reboot"

var nodeAnnotations = []string{AnnotationCordonedBy, AnnotationCordonedAt, AnnotationRebootSentAt, AnnotationBootIDBefore}

// Ownership is what nksrun may do with a node's cordon, read from the node
// alone (annotations and managedFields).
type Ownership struct {
	Cordoned bool
	Holder   string    // the cordoned-by annotation ("" when none)
	Since    time.Time // the cordoned-at annotation
	// Ours: the node is cordoned, carries nksrun's annotation, and the API
	// server records nksrun's field manager as the only owner of
	// spec.unschedulable. Only such a cordon is nksrun's to lift.
	Ours bool
	// Stale: the annotation is there but the cordon is not nksrun's (the
	// node is schedulable again, or someone else cordoned it since). The
	// annotation is removed; the cordon, if any, is left alone.
	Stale bool
	// Unknown: the server keeps no managedFields, so who set the cordon
	// cannot be proven; nothing is uncordoned on the annotation's word.
	Unknown bool
	Why     string // one line for messages
}

// ownershipOf applies the ownership rules to one node.
func ownershipOf(n *corev1.Node) Ownership {
	o := Ownership{Cordoned: n.Spec.Unschedulable, Holder: n.Annotations[AnnotationCordonedBy]}
	if t, err := time.Parse(time.RFC3339, n.Annotations[AnnotationCordonedAt]); err == nil {
		o.Since = t
	}
	owners, known := unschedulableOwners(n)
	switch {
	case o.Holder == "" && o.Cordoned:
		o.Why = "cordoned, not by nksrun"
	case o.Holder == "":
		o.Why = "schedulable"
	case !o.Cordoned:
		o.Stale, o.Why = true, "schedulable again, yet it carries nksrun's annotation (stale)"
	case !known:
		o.Unknown, o.Why = true, "cordoned with nksrun's annotation, but the API server records no field owners to confirm nksrun set the cordon"
	case len(owners) == 1 && owners[0] == FieldManager:
		o.Ours, o.Why = true, "cordoned by nksrun ("+o.Holder+")"
	default:
		o.Stale, o.Why = true, fmt.Sprintf("cordoned by %v since nksrun's cordon: nksrun's annotation is stale", owners)
	}
	return o
}

// unschedulableOwners lists the field managers that own spec.unschedulable.
// known is false when the object carries no managedFields at all.
func unschedulableOwners(n *corev1.Node) (owners []string, known bool) {
	for _, mf := range n.ManagedFields {
		known = true
		if mf.Subresource != "" || mf.FieldsV1 == nil {
			continue
		}
		var f map[string]json.RawMessage
		if json.Unmarshal(mf.FieldsV1.GetRawBytes(), &f) != nil {
			continue
		}
		var spec map[string]json.RawMessage
		if json.Unmarshal(f["f:spec"], &spec) != nil {
			continue
		}
		if _, ok := spec["f:unschedulable"]; ok {
			owners = append(owners, mf.Manager)
		}
	}
	return owners, known
}

// annotationsPatch is a merge patch of nksrun's node annotations: set holds
// values, every other nksrun annotation is removed.
func annotationsPatch(set map[string]string) map[string]any {
	ann := map[string]any{}
	for _, k := range nodeAnnotations {
		if v, ok := set[k]; ok {
			ann[k] = v
		} else {
			ann[k] = nil
		}
	}
	return ann
}

// patchNode sends a merge patch guarded by resourceVersion, so it applies
// only to the node as check saw it: between reading a node and patching it,
// an administrator's cordon must not be mistaken for nothing. check returns
// the patch for the current node, or nil for nothing to do.
func patchNode(ctx context.Context, cs kubernetes.Interface, name string, check func(*corev1.Node) (map[string]any, error)) (*corev1.Node, error) {
	var last error
	for i := 0; i < 8; i++ {
		n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("Node %s: %w", name, err)
		}
		patch, err := check(n)
		if err != nil || patch == nil {
			return n, err
		}
		md, _ := patch["metadata"].(map[string]any)
		if md == nil {
			md = map[string]any{}
			patch["metadata"] = md
		}
		md["resourceVersion"] = n.ResourceVersion
		b, err := json.Marshal(patch)
		if err != nil {
			return nil, err
		}
		out, err := cs.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, b, metav1.PatchOptions{FieldManager: FieldManager})
		if err == nil {
			return out, nil
		}
		last = err
		if !apierrors.IsConflict(err) {
			if ctx.Err() != nil {
				break
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
	return nil, fmt.Errorf("patching Node %s: %w", name, last)
}

// cordonNode cordons a schedulable node for holder and records it. It
// returns false (and changes nothing) if the node is cordoned already.
func cordonNode(ctx context.Context, cs kubernetes.Interface, name, holder string, now time.Time) (bool, error) {
	did := false
	_, err := patchNode(ctx, cs, name, func(n *corev1.Node) (map[string]any, error) {
		did = false
		if n.Spec.Unschedulable {
			return nil, nil
		}
		did = true
		return map[string]any{
			"spec":     map[string]any{"unschedulable": true},
			"metadata": map[string]any{"annotations": annotationsPatch(map[string]string{AnnotationCordonedBy: holder, AnnotationCordonedAt: now.UTC().Format(time.RFC3339)})},
		}, nil
	})
	if err != nil {
		return false, fmt.Errorf("cordoning: %w", err)
	}
	return did, nil
}

// adoptNode makes a cordon nksrun's run from holder `from` (a run that died)
// this run's, so this run finishes it. It refuses if the cordon is no longer
// that run's.
func adoptNode(ctx context.Context, cs kubernetes.Interface, name, from, holder string) (bool, error) {
	did := false
	_, err := patchNode(ctx, cs, name, func(n *corev1.Node) (map[string]any, error) {
		o := ownershipOf(n)
		did = o.Ours && o.Holder == from
		if !did {
			return nil, nil
		}
		keep := map[string]string{AnnotationCordonedBy: holder}
		for _, k := range nodeAnnotations[1:] {
			if v, ok := n.Annotations[k]; ok {
				keep[k] = v
			}
		}
		return map[string]any{"metadata": map[string]any{"annotations": annotationsPatch(keep)}}, nil
	})
	return did, err
}

// uncordonNode lifts holder's cordon, and only that: the node must still
// carry holder's annotation and nksrun's field manager must still own the
// cordon (inRun: or the server keeps no field owners and this very run
// cordoned it). Any other cordon stays; nksrun's annotations are removed
// either way. It returns whether the node was uncordoned.
func uncordonNode(ctx context.Context, cs kubernetes.Interface, name, holder string, inRun bool) (bool, error) {
	did := false
	_, err := patchNode(ctx, cs, name, func(n *corev1.Node) (map[string]any, error) {
		did = false
		o := ownershipOf(n)
		mine := o.Holder == holder && (o.Ours || (inRun && o.Unknown))
		if mine {
			did = true
			return map[string]any{"spec": map[string]any{"unschedulable": nil}, "metadata": map[string]any{"annotations": annotationsPatch(nil)}}, nil
		}
		if hasNksrunAnnotations(n) && (o.Holder == holder || o.Stale) {
			return map[string]any{"metadata": map[string]any{"annotations": annotationsPatch(nil)}}, nil
		}
		return nil, nil
	})
	if err != nil {
		return false, fmt.Errorf("uncordoning: %w", err)
	}
	return did, nil
}

// clearStale removes nksrun's annotations from a node whose cordon is not
// nksrun's (see Ownership.Stale). It reports whether it removed any.
func clearStale(ctx context.Context, cs kubernetes.Interface, name string) (bool, error) {
	did := false
	_, err := patchNode(ctx, cs, name, func(n *corev1.Node) (map[string]any, error) {
		did = hasNksrunAnnotations(n) && ownershipOf(n).Stale
		if !did {
			return nil, nil
		}
		return map[string]any{"metadata": map[string]any{"annotations": annotationsPatch(nil)}}, nil
	})
	return did, err
}

// markRebootSent records on holder's node that the reboot command is about
// to go out, and from which boot.
func markRebootSent(ctx context.Context, cs kubernetes.Interface, name, holder, bootID string, now time.Time) error {
	_, err := patchNode(ctx, cs, name, func(n *corev1.Node) (map[string]any, error) {
		if n.Annotations[AnnotationCordonedBy] != holder {
			return nil, nil
		}
		return map[string]any{"metadata": map[string]any{"annotations": map[string]any{
			AnnotationRebootSentAt: now.UTC().Format(time.RFC3339), AnnotationBootIDBefore: bootID,
		}}}, nil
	})
	return err
}

func hasNksrunAnnotations(n *corev1.Node) bool {
	for _, k := range nodeAnnotations {
		if _, ok := n.Annotations[k]; ok {
			return true
		}
	}
	return false
}
