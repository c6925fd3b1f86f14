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
