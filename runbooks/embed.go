// Package runbooks holds the built-in runbooks (one YAML per guide
// section) and the files they push. They are embedded in the nksrun binary,
// so `nksrun plan logrotate` works from any directory.
package runbooks

import (
	"embed"
	"io/fs"
)

//go:embed *.yaml files
var files embed.FS

// FS is the built-in runbooks: NAME.yaml at the root, their files under files/.
func FS() fs.FS { return files }
