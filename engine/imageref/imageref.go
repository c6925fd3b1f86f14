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
