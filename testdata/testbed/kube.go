package testbed

import (
	"context"
	"fmt"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/client-go/util/retry"
)

// Labels NKS (Magnum) puts on worker nodes.
const (
	LabelNodeGroup = "magnum.openstack.org/nodegroup"
	LabelRole      = "magnum.openstack.org/role"
)

// WriteKubeconfig writes a self-contained kubeconfig (CA data inline, bearer
// token) for the testbed's API server to path.
func (tb *Testbed) WriteKubeconfig(path string) error {
	ca, err := os.ReadFile(tb.api.caFile)
	if err != nil {
		return fmt.Errorf("testbed: kubeconfig: %w", err)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["nksrun-testbed"] = &clientcmdapi.Cluster{Server: tb.APIServerURL, CertificateAuthorityData: ca}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{Token: tb.Token}
	cfg.Contexts["nksrun-testbed"] = &clientcmdapi.Context{Cluster: "nksrun-testbed", AuthInfo: "admin", Namespace: "default"}
	cfg.CurrentContext = "nksrun-testbed"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("testbed: writing kubeconfig %s: %w", path, err)
	}
	return nil
}

func (tb *Testbed) initClients() error {
	ca, err := os.ReadFile(tb.api.caFile)
	if err != nil {
		return err
	}
	tb.RESTConfig = &rest.Config{
		Host:            tb.APIServerURL,
		BearerToken:     tb.Token,
		TLSClientConfig: rest.TLSClientConfig{CAData: ca},
		QPS:             1000,
		Burst:           2000,
		Timeout:         30 * time.Second,
	}
	client, err := kubernetes.NewForConfig(tb.RESTConfig)
	if err != nil {
		return err
	}
	// Nodes' watch goroutines (stand-in reboots) read the client: publish it
	// under the lock they read it with.
	tb.clientMu.Lock()
	tb.Client = client
	tb.clientMu.Unlock()
	tb.Dynamic, err = dynamic.NewForConfig(tb.RESTConfig)
	return err
}

func (n *Node) nodeObject() *corev1.Node {
	labels := map[string]string{
		"kubernetes.io/hostname":           n.Name,
		"kubernetes.io/os":                 "linux",
		"kubernetes.io/arch":               "amd64",
		"beta.kubernetes.io/os":            "linux",
		"beta.kubernetes.io/arch":          "amd64",
		"node.kubernetes.io/instance-type": "m1.large",
		LabelNodeGroup:                     n.Spec.NodeGroup,
		LabelRole:                          "worker",
	}
	for k, v := range n.Spec.Labels {
		labels[k] = v
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: labels},
		Spec: corev1.NodeSpec{
			Unschedulable: n.Spec.Unschedulable,
			ProviderID:    "openstack:///" + n.machineID,
		},
	}
}

func (n *Node) fillStatus(st *corev1.NodeStatus, ready bool) {
	now := metav1.NewTime(time.Now())
	st.Addresses = []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: n.Address},
		{Type: corev1.NodeHostName, Address: n.Name},
	}
	st.NodeInfo = corev1.NodeSystemInfo{
		MachineID:               n.machineID,
		SystemUUID:              n.machineID,
		BootID:                  n.BootID(),
		KernelVersion:           n.Spec.Kernel,
		OSImage:                 n.Spec.OSImage,
		ContainerRuntimeVersion: n.Spec.Runtime,
		KubeletVersion:          n.Spec.Kubelet,
		OperatingSystem:         "linux",
		Architecture:            "amd64",
	}
	res := corev1.ResourceList{
		corev1.ResourceCPU:              resource.MustParse("4"),
		corev1.ResourceMemory:           resource.MustParse("8Gi"),
		corev1.ResourcePods:             resource.MustParse("110"),
		corev1.ResourceEphemeralStorage: resource.MustParse("40Gi"),
	}
	st.Capacity, st.Allocatable = res, res.DeepCopy()
	st.Images = n.reportedImages()
	cond := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
		c := corev1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: now}
		for _, old := range st.Conditions {
			if old.Type == t && old.Status == s {
				c.LastTransitionTime = old.LastTransitionTime
			}
		}
		return c
	}
	readyC := cond(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "kubelet is posting ready status (nksrun testbed)")
	if !ready {
		readyC = cond(corev1.NodeReady, corev1.ConditionFalse, "KubeletNotReady", "node is not ready (nksrun testbed)")
	}
	st.Conditions = []corev1.NodeCondition{
		cond(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
		cond(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
		cond(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
		readyC,
	}
}

func (n *Node) createObject(ctx context.Context) error {
	c := n.tb.kube().CoreV1().Nodes()
	obj, err := c.Create(ctx, n.nodeObject(), metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("testbed: creating Node %s: %w", n.Name, err)
	}
	n.fillStatus(&obj.Status, !n.Spec.NotReady)
	if _, err := c.UpdateStatus(ctx, obj, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("testbed: setting status of Node %s: %w", n.Name, err)
	}
	return nil
}

// reportedImages is the node's image store as a kubelet reports it in
// status.images: one entry per image (the stand-ins' store has one name per
// image, as it lists them), at most 50 (kubelet's --node-status-max-images
// default; the testbed keeps the store's order, where kubelet sorts by size).
func (n *Node) reportedImages() []corev1.ContainerImage {
	var out []corev1.ContainerImage
	for _, ref := range n.Images() {
		if len(out) == 50 {
			break
		}
		out = append(out, corev1.ContainerImage{Names: []string{ref}, SizeBytes: int64(len(ref)) << 20})
	}
	return out
}

// SetReportedImages sets the Node's status.images to names (one image
// each) whatever the node's store holds: a kubelet whose report lags the
// store, or (nil) one that reports none.
func (n *Node) SetReportedImages(ctx context.Context, names []string) error {
	c := n.tb.kube().CoreV1().Nodes()
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		obj, err := c.Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		obj.Status.Images = nil
		for _, name := range names {
			obj.Status.Images = append(obj.Status.Images, corev1.ContainerImage{Names: []string{name}})
		}
		_, err = c.UpdateStatus(ctx, obj, metav1.UpdateOptions{})
		return err
	})
}

// SetReady sets the Node's Ready condition (and nodeInfo.bootID) the way the
// kubelet would; the testbed calls it around stand-in reboots.
func (n *Node) SetReady(ctx context.Context, ready bool) error {
	c := n.tb.kube().CoreV1().Nodes()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		obj, err := c.Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		n.fillStatus(&obj.Status, ready)
		_, err = c.UpdateStatus(ctx, obj, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("testbed: setting Node %s Ready=%v: %w", n.Name, ready, err)
	}
	return nil
}

// Ready reports the Node's Ready condition as stored in the API server.
func (n *Node) Ready(ctx context.Context) (bool, error) {
	obj, err := n.tb.kube().CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
	if err != nil {
		return false, err
	}
	for _, c := range obj.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue, nil
		}
	}
	return false, nil
}

// kube is the API client for goroutines the testbed started before the API
// server was up (nil until then).
func (tb *Testbed) kube() kubernetes.Interface {
	tb.clientMu.RLock()
	defer tb.clientMu.RUnlock()
	return tb.Client
}
