// Package imageref splits container image references; runbook expressions
// and the set_image module read them the same way.
package imageref

import "strings"

// Split splits an image reference into repository, tag and digest:
// "reg:5000/a/b:v1@sha256:..." → ("reg:5000/a/b", "v1", "sha256:...").
func Split(image string) (repo, tag, digest string) {
	repo = image
	if i := strings.Index(repo, "@"); i >= 0 {
		repo, digest = repo[:i], repo[i+1:]
	}
	if i := strings.LastIndex(repo, ":"); i >= 0 && !strings.Contains(repo[i+1:], "/") {
		repo, tag = repo[:i], repo[i+1:]
	}
	return repo, tag, digest
}

// Full is image as a full reference, the way container runtimes store it:
// the registry host docker.io when the first part names none, library/ for
// a Docker Hub image without an owner, and :latest when neither a tag nor a
// digest is given. "nginx" → "docker.io/library/nginx:latest",
// "calico/node:v3.26.1" → "docker.io/calico/node:v3.26.1"; a reference that
// names a registry ("registry.k8s.io/pause:3.9", "localhost:5000/x") keeps
// it. "" stays "".
func Full(image string) string {
	if image == "" {
		return ""
	}
	first, _, found := strings.Cut(image, "/")
	switch {
	case !found:
		image = "docker.io/library/" + image
	case strings.ContainsAny(first, ".:") || first == "localhost":
	default:
		image = "docker.io/" + image
	}
	if _, tag, digest := Split(image); tag == "" && digest == "" {
		image += ":latest"
	}
	return image
}
