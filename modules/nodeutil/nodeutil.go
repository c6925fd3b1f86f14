// Package nodeutil holds what the node-level modules (grub_arg, reboot,
// systemd_restart) share: reading a node's facts and the OS family.
package nodeutil

import (
	"fmt"
	"strings"

	"nksrun/engine/module"
)

// Host returns the node's host.* facts (bootID, cmdline, kernel, os), read
// by the engine in its one fact round trip.
func Host(n *module.Node) map[string]any {
	if n == nil {
		return nil
	}
	h, _ := n.Facts["host"].(map[string]any)
	return h
}

// HostString returns one host.* fact as a string ("" when unknown).
func HostString(n *module.Node, key string) string {
	s, _ := Host(n)[key].(string)
	return strings.TrimSpace(s)
}

// FactString returns one node.* fact as a string ("" when unknown).
func FactString(n *module.Node, key string) string {
	if n == nil {
		return ""
	}
	s, _ := n.Facts[key].(string)
	return s
}

// GrubFlavor is how a node's GRUB is laid out and regenerated: "rhel"
// (CentOS, Rocky, RHEL, Alma, Fedora, Oracle: grub2-mkconfig, /boot/grub2)
// or "debian" (Debian, Ubuntu: update-grub, /boot/grub), "" when unknown.
// (Not node.osFamily, which is the distribution itself.) It prefers
// /etc/os-release's ID (host.os) over the Node's osImage.
func GrubFlavor(n *module.Node) string {
	for _, id := range []string{HostString(n, "os"), FactString(n, "osFamily")} {
		if f := familyOf(id); f != "" {
			return f
		}
	}
	return familyOf(FactString(n, "osImage"))
}

func familyOf(s string) string {
	s = strings.ToLower(s)
	for _, w := range []string{"centos", "rocky", "rhel", "red hat", "almalinux", "fedora", "ol", "oracle"} {
		if s == w || (len(w) > 2 && strings.Contains(s, w)) {
			return "rhel"
		}
	}
	for _, w := range []string{"ubuntu", "debian"} {
		if strings.Contains(s, w) {
			return "debian"
		}
	}
	return ""
}

// HasWord reports whether the whitespace-separated list s contains w.
func HasWord(s, w string) bool {
	for _, f := range strings.Fields(s) {
		if f == w {
			return true
		}
	}
	return false
}

// NodeName names a target in messages.
func NodeName(t module.Target) string {
	if t.Node == nil {
		return "cluster"
	}
	return t.Node.Name
}

// Logf logs through the target's progress log when there is one.
func Logf(t module.Target, format string, args ...any) {
	if t.Log != nil {
		t.Log(format, args...)
	}
}

// Errorf prefixes an error with the node's name.
func Errorf(t module.Target, format string, args ...any) error {
	return fmt.Errorf("node %s: "+format, append([]any{NodeName(t)}, args...)...)
}
