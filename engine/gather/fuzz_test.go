package gather

import (
	"testing"

	"nksrun/engine/module"
)

// FuzzParseOutput: whatever a node prints (its files, its errors, forged
// frame lines), parsing never panics and never returns a result for a probe
// that has no complete frame.
func FuzzParseOutput(f *testing.F) {
	probes := []module.Probe{{Key: "a"}, {Key: "b"}}
	const boundary = "--nksrun-0123456789abcdef01234567"
	f.Add([]byte(boundary + " 0\nhello\n\n" + boundary + " rc=0\n" + boundary + " 1\n\n" + boundary + " rc=3\n"))
	f.Add([]byte(boundary + " 0\n" + boundary + " 1\nx rc=0\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := ParseOutput(data, boundary, probes)
		if err != nil {
			return
		}
		for k := range out {
			if k != "a" && k != "b" {
				t.Fatalf("result for unknown probe %q", k)
			}
		}
	})
}
