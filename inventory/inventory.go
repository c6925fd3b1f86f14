// Package inventory resolves the hosts nksrun works on: the cluster's Nodes
// (address = InternalIP, facts from the Node object) or a static file.
package inventory

import (
	"context"
	"fmt"
	"net"
	"nksrun/engine/strictyaml"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"unique"

	"go.yaml.in/yaml/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
)

// NKS node labels.
const (
	LabelNodeGroup = "magnum.openstack.org/nodegroup"
	LabelRole      = "magnum.openstack.org/role"
)

// Host is one node nksrun can work on.
type Host struct {
	Name    string            `json:"name" yaml:"name"`
	Address string            `json:"address" yaml:"address"`
	User    string            `json:"user" yaml:"user"`
	Port    int               `json:"port" yaml:"port"`
	Labels  map[string]string `json:"labels,omitempty" yaml:"labels"`
	// Facts are the node.* expression facts (see Facts).
	Facts map[string]any `json:"facts" yaml:"-"`
	// Problem, when set, is why this host must not be connected to at all
	// (its address is shared with another node): the engine fails the
	// target with it instead of running anything.
	Problem string `json:"problem,omitempty" yaml:"-"`
}

// Ready reports the node's Ready condition (static hosts are always ready).
func (h Host) Ready() bool { r, _ := h.Facts["ready"].(bool); return r }

// FromCluster lists the cluster's Nodes once and turns each into a Host.
// Nodes without an InternalIP are reported, not silently dropped.
func FromCluster(ctx context.Context, cs kubernetes.Interface) ([]Host, error) {
	list, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing nodes: %w", err)
	}
	hosts := make([]Host, 0, len(list.Items))
	for i := range list.Items {
		hosts = append(hosts, FromNode(&list.Items[i]))
	}
	sort.Slice(hosts, func(i, j int) bool { return hosts[i].Name < hosts[j].Name })
	MarkSharedAddresses(hosts)
	return hosts, nil
}

// MarkSharedAddresses sets Problem on every host whose address (and port)
// another host also has. An InternalIP is reported by the node itself: a
// compromised kubelet can set its Node's address to another node's, and
// nksrun would then run that node's changes (a GRUB edit, a reboot) on the
// other one. No host sharing an address is trusted, whichever is genuine.
func MarkSharedAddresses(hosts []Host) {
	by := map[string][]string{}
	for _, h := range hosts {
		if h.Address == "" {
			continue
		}
		k := net.JoinHostPort(h.Address, strconv.Itoa(h.Port))
		by[k] = append(by[k], h.Name)
	}
	for i := range hosts {
		h := &hosts[i]
		names := by[net.JoinHostPort(h.Address, strconv.Itoa(h.Port))]
		if len(names) < 2 {
			continue
		}
		var others []string
		for _, n := range names {
			if n != h.Name {
				others = append(others, n)
			}
		}
		h.Problem = fmt.Sprintf("address %s is also the address of %s: refusing every node that shares it (a Node's status may have been changed to point at another node)", h.Address, strings.Join(others, ", "))
	}
}

// FromNode builds a Host and its node.* facts from a Node object.
func FromNode(n *corev1.Node) Host {
	var addr, hostname string
	for _, a := range n.Status.Addresses {
		switch a.Type {
		case corev1.NodeInternalIP:
			if addr == "" {
				addr = a.Address
			}
		case corev1.NodeHostName:
			hostname = a.Address
		}
	}
	ready := false
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			ready = c.Status == corev1.ConditionTrue
		}
	}
	info := n.Status.NodeInfo
	runtime, runtimeVersion, _ := strings.Cut(info.ContainerRuntimeVersion, "://")
	h := Host{
		Name:    n.Name,
		Address: addr,
		User:    UserForOS(info.OSImage),
		Port:    22,
		Labels:  n.Labels,
	}
	h.Facts = map[string]any{
		"name":           n.Name,
		"address":        addr,
		"hostname":       hostname,
		"labels":         stringMap(n.Labels),
		"nodegroup":      n.Labels[LabelNodeGroup],
		"role":           n.Labels[LabelRole],
		"osImage":        info.OSImage,
		"osFamily":       OSFamily(info.OSImage),
		"kernel":         info.KernelVersion,
		"runtime":        runtime,
		"runtimeVersion": runtimeVersion,
		"kubelet":        info.KubeletVersion,
		"ready":          ready,
		"unschedulable":  n.Spec.Unschedulable,
		"user":           h.User,
		"static":         false,
		// Identity the kubelet reported; the engine compares it with what
		// the host at Address says before running anything there.
		"bootID":     info.BootID,
		"machineID":  info.MachineID,
		"systemUUID": info.SystemUUID,
		// The kubelet's report of the node's image store (see
		// runbook.NodeFields): what §3 reads instead of listing the
		// store on every node.
		"images": reportedImages(n.Status.Images),
	}
	return h
}

// reportedImages is every name of a Node's status.images, in the kubelet's
// order. The nodes of a cluster mostly hold the same images: each name is
// kept once for all of them (unique.Make), so a Node keeps 16 bytes per
// name (see BenchmarkReportedImagesRetained).
func reportedImages(images []corev1.ContainerImage) []string {
	out := []string{}
	for _, img := range images {
		for _, name := range img.Names {
			out = append(out, unique.Make(name).Value())
		}
	}
	return out
}

func stringMap(m map[string]string) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// OSFamily is the lower-case distribution of an osImage: centos, rocky,
// ubuntu, debian, rhel, ... ("" when unknown).
func OSFamily(osImage string) string {
	s := strings.ToLower(osImage)
	for _, f := range []string{"centos", "rocky", "ubuntu", "debian", "red hat", "almalinux"} {
		if strings.Contains(s, f) {
			if f == "red hat" {
				return "rhel"
			}
			return f
		}
	}
	return ""
}

// UserForOS is the SSH login user NKS images use.
func UserForOS(osImage string) string {
	switch OSFamily(osImage) {
	case "centos":
		return "centos"
	case "rocky":
		return "rocky"
	case "ubuntu":
		return "ubuntu"
	case "debian":
		return "debian"
	}
	return ""
}

// staticFile is the --inventory format.
type staticFile struct {
	Hosts []staticHost `yaml:"hosts" nks:"required"`
}

type staticHost struct {
	Name    string            `yaml:"name" nks:"required"`
	Address string            `yaml:"address" nks:"required"`
	User    string            `yaml:"user"`
	Port    int               `yaml:"port"`
	Labels  map[string]string `yaml:"labels"`
	// Facts lets a static host declare node.* facts the cluster would give
	// (osImage, kernel, runtime, ...).
	Facts map[string]any `yaml:"facts"`
}

// FromFile reads a static inventory (YAML, strict, positioned errors).
func FromFile(file string) ([]Host, error) {
	src, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading inventory: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if len(doc.Content) == 0 {
		return nil, fmt.Errorf("%s: empty inventory", file)
	}
	var sf staticFile
	if err := strictyaml.DecodeStrict(file, doc.Content[0], &sf); err != nil {
		return nil, err
	}
	hosts := make([]Host, 0, len(sf.Hosts))
	seen := map[string]bool{}
	for _, s := range sf.Hosts {
		if seen[s.Name] {
			return nil, fmt.Errorf("%s: host %q listed twice", file, s.Name)
		}
		seen[s.Name] = true
		h := Host{Name: s.Name, Address: s.Address, User: s.User, Port: s.Port, Labels: s.Labels}
		if h.Port == 0 {
			h.Port = 22
		}
		h.Facts = map[string]any{
			"name": s.Name, "address": s.Address, "hostname": s.Name,
			"labels": stringMap(s.Labels), "nodegroup": s.Labels[LabelNodeGroup], "role": s.Labels[LabelRole],
			"osImage": "", "osFamily": "", "kernel": "", "runtime": "", "runtimeVersion": "", "kubelet": "",
			"ready": true, "unschedulable": false, "user": s.User, "static": true,
			"bootID": "", "machineID": "", "systemUUID": "", "images": []string{},
		}
		for k, v := range s.Facts {
			h.Facts[k] = v
		}
		if h.User == "" {
			img, _ := h.Facts["osImage"].(string)
			h.User = UserForOS(img)
			h.Facts["user"] = h.User
			h.Facts["osFamily"] = OSFamily(img)
		}
		hosts = append(hosts, h)
	}
	MarkSharedAddresses(hosts)
	return hosts, nil
}

// Limit keeps the hosts matched by any pattern: a node name, a glob
// (`*-node-1*`) or a label selector (`key=value`, `key!=value`, `key in (a,b)`).
// No patterns keeps all. A pattern matching nothing is an error, so a typo
// never silently means "no nodes".
func Limit(hosts []Host, patterns []string) ([]Host, error) {
	if len(patterns) == 0 {
		return hosts, nil
	}
	keep := make([]bool, len(hosts))
	for _, p := range patterns {
		matched := false
		if strings.ContainsAny(p, "=!()") || strings.Contains(p, " in ") {
			sel, err := labels.Parse(p)
			if err != nil {
				return nil, fmt.Errorf("--limit %q: %w", p, err)
			}
			for i, h := range hosts {
				if sel.Matches(labels.Set(h.Labels)) {
					keep[i], matched = true, true
				}
			}
		} else {
			for i, h := range hosts {
				if ok, err := path.Match(p, h.Name); err != nil {
					return nil, fmt.Errorf("--limit %q: %w", p, err)
				} else if ok || p == h.Address {
					keep[i], matched = true, true
				}
			}
		}
		if !matched {
			return nil, fmt.Errorf("--limit %q matches no node", p)
		}
	}
	var out []Host
	for i, h := range hosts {
		if keep[i] {
			out = append(out, h)
		}
	}
	return out, nil
}
