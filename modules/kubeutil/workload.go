package kubeutil

import (
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// Kind is an apiVersion+kind pair.
type Kind struct{ APIVersion, Kind string }

// WorkloadKinds are the kinds with a pod template that the workload modules
// handle.
var WorkloadKinds = []Kind{
	{"apps/v1", "Deployment"}, {"apps/v1", "DaemonSet"}, {"apps/v1", "StatefulSet"},
	{"batch/v1", "CronJob"}, {"batch/v1", "Job"},
}

// KindByName finds a workload kind ("Deployment", "daemonset", ...).
func KindByName(name string) (Kind, bool) {
	for _, k := range WorkloadKinds {
		if equalFold(k.Kind, name) {
			return k, true
		}
	}
	return Kind{}, false
}

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// PodSpecPath is where a workload kind keeps its pod spec.
func PodSpecPath(kind string) ([]string, error) {
	switch kind {
	case "Deployment", "DaemonSet", "StatefulSet", "Job", "ReplicaSet":
		return []string{"spec", "template", "spec"}, nil
	case "CronJob":
		return []string{"spec", "jobTemplate", "spec", "template", "spec"}, nil
	case "Pod":
		return []string{"spec"}, nil
	}
	return nil, fmt.Errorf("%s has no pod template", kind)
}

// JSONPath joins path tokens as a JSON pointer.
func JSONPath(tokens ...string) string {
	s := ""
	for _, t := range tokens {
		s += "/" + Pointer(t)
	}
	return s
}

// Container is one container of a pod spec, with its JSON pointer.
type Container struct {
	Field string // containers | initContainers
	Index int
	Path  string // e.g. /spec/template/spec/containers/0
	Obj   map[string]any
}

// Containers lists the containers and init containers of a workload.
func Containers(obj *unstructured.Unstructured) ([]Container, error) {
	path, err := PodSpecPath(obj.GetKind())
	if err != nil {
		return nil, err
	}
	var out []Container
	for _, field := range []string{"initContainers", "containers"} {
		list, _, _ := unstructured.NestedSlice(obj.Object, append(append([]string{}, path...), field)...)
		for i, c := range list {
			m, ok := c.(map[string]any)
			if !ok {
				continue
			}
			out = append(out, Container{Field: field, Index: i, Path: fmt.Sprintf("%s/%d", JSONPath(append(append([]string{}, path...), field)...), i), Obj: m})
		}
	}
	return out, nil
}
