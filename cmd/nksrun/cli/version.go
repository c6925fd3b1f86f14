package cli

import (
	"runtime/debug"
	"strings"
)

// buildInfo is the version, commit and build time: Version from -ldflags
// when given, otherwise the module version and VCS stamp that `go build`
// records in the binary (so a plain build in a checkout says which commit).
type buildInfo struct {
	Version  string `json:"version"`
	Commit   string `json:"commit,omitempty"`
	Time     string `json:"time,omitempty"`
	Modified bool   `json:"modified,omitempty"`
	Go       string `json:"go"`
}

func readBuildInfo() buildInfo {
	bi, _ := debug.ReadBuildInfo()
	return fromBuildInfo(bi, Version)
}

// fromBuildInfo is readBuildInfo for a given build record and -ldflags
// version ("dev" when none was given).
func fromBuildInfo(bi *debug.BuildInfo, ldVersion string) buildInfo {
	b := buildInfo{Version: ldVersion}
	if bi == nil {
		return b
	}
	b.Go = bi.GoVersion
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			b.Commit = s.Value
		case "vcs.time":
			b.Time = s.Value
		case "vcs.modified":
			b.Modified = s.Value == "true"
		}
	}
	if b.Version == "dev" {
		if v := bi.Main.Version; v != "" && v != "(devel)" {
			b.Version = v
		} else if b.Commit != "" {
			b.Version = "dev-" + short(b.Commit)
			if b.Modified {
				b.Version += "-dirty"
			}
		}
	}
	return b
}

func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

// versionString is what `nksrun --version` prints.
func versionString() string {
	b := readBuildInfo()
	parts := []string{"nksrun " + b.Version}
	if b.Commit != "" && !strings.Contains(b.Version, short(b.Commit)) {
		c := "commit " + short(b.Commit)
		if b.Modified {
			c += " (modified)"
		}
		parts = append(parts, c)
	}
	if b.Time != "" {
		parts = append(parts, "built from "+b.Time)
	}
	if b.Go != "" {
		parts = append(parts, b.Go)
	}
	return strings.Join(parts, ", ")
}
