package imageref

import "testing"

func TestSplit(t *testing.T) {
	tests := []struct{ in, repo, tag, digest string }{
		{"calico/node:v3.24.1", "calico/node", "v3.24.1", ""},
		{"registry:5000/a/b:v1@sha256:abc", "registry:5000/a/b", "v1", "sha256:abc"},
		{"registry:5000/a/b", "registry:5000/a/b", "", ""},
		{"docker.pkg.github.com/o/r/i@sha256:def", "docker.pkg.github.com/o/r/i", "", "sha256:def"},
	}
	for _, tc := range tests {
		repo, tag, digest := Split(tc.in)
		if repo != tc.repo || tag != tc.tag || digest != tc.digest {
			t.Errorf("Split(%q) = %q %q %q", tc.in, repo, tag, digest)
		}
	}
}

func TestFull(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"nginx", "docker.io/library/nginx:latest"},
		{"nginx:1.27", "docker.io/library/nginx:1.27"},
		{"calico/node:v3.26.1", "docker.io/calico/node:v3.26.1"},
		{"docker.io/calico/node:v3.26.1", "docker.io/calico/node:v3.26.1"},
		{"registry.k8s.io/pause:3.9", "registry.k8s.io/pause:3.9"},
		{"registry.k8s.io/pause", "registry.k8s.io/pause:latest"},
		{"localhost/pause:3.9", "localhost/pause:3.9"},
		{"localhost:5000/team/app", "localhost:5000/team/app:latest"},
		{"registry.k8s.io/coredns/coredns@sha256:1eeb", "registry.k8s.io/coredns/coredns@sha256:1eeb"},
		{"coredns/coredns@sha256:1eeb", "docker.io/coredns/coredns@sha256:1eeb"},
		{"k8s.gcr.io/pause:3.2@sha256:927d", "k8s.gcr.io/pause:3.2@sha256:927d"},
	}
	for _, tc := range tests {
		if got := Full(tc.in); got != tc.want {
			t.Errorf("Full(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
