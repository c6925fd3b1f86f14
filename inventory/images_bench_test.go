package inventory

import (
	"fmt"
	"runtime"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// BenchmarkReportedImagesRetained measures what node.images keeps per node
// once the Node list is gone: 1,000 Nodes reporting the kubelet's maximum
// (50 images of 5 names), the same images on every node as in a cluster.
// Reported as retained bytes per node (go test -bench ReportedImages
// ./inventory).
func BenchmarkReportedImagesRetained(b *testing.B) {
	const nodes, images, names = 1000, 50, 5
	for b.Loop() {
		list := make([]corev1.Node, nodes)
		for i := range list {
			n := node(fmt.Sprintf("node-%d", i), fmt.Sprintf("10.0.%d.%d", i/250, i%250), true, nil, "containerd://1.7.13")
			for j := range images {
				img := corev1.ContainerImage{SizeBytes: int64(images-j) << 20}
				for k := range names {
					// Built per node, as decoding a List does: equal, not shared.
					img.Names = append(img.Names, fmt.Sprintf("registry.example.com/team-%02d/image-%02d:v1.%d.%d-build", j, j, k, j))
				}
				n.Status.Images = append(n.Status.Images, img)
			}
			list[i] = *n
		}
		hosts := make([]Host, nodes)
		for i := range list {
			hosts[i] = FromNode(&list[i])
		}
		list = nil
		var with, without runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&with)
		runtime.KeepAlive(hosts)
		hosts = nil
		runtime.GC()
		runtime.ReadMemStats(&without)
		b.ReportMetric(float64(int64(with.HeapAlloc)-int64(without.HeapAlloc))/nodes, "retained-B/node")
	}
}
