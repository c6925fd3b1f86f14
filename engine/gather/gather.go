// Package gather reads facts: a node's built-in host.* facts, a runbook's
// command facts and every step's probes in one exec per node, and a
// runbook's Kubernetes facts in one list per fact.
package gather

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"nksrun/engine/module"
	"nksrun/engine/runbook"
	"nksrun/engine/shell"
)

// BuiltinProbes are the host.* facts, read over SSH in the same round trip
// as everything else a node needs.
var BuiltinProbes = []module.Probe{{Key: hostProbeKey, Command: hostScript, Sudo: true}}

const hostProbeKey = "host"

// hostScript reads every host.* fact with shell builtins only: no process
// is started for them on the node (the kernel release is
// /proc/sys/kernel/osrelease, what `uname -r` prints). One key=value line
// each; a file that cannot be read gives an empty value. machineID and
// productUUID are the host's identity, compared with the Node's nodeInfo
// before anything runs.
const hostScript = `r() { v=; read -r v < "$2" 2>/dev/null; printf '%s=%s\n' "$1" "$v"; }
r bootID /proc/sys/kernel/random/boot_id
r cmdline /proc/cmdline
r kernel /proc/sys/kernel/osrelease
r machineID /etc/machine-id
r productUUID /sys/class/dmi/id/product_uuid
ID=; . /etc/os-release 2>/dev/null; printf 'os=%s\n' "$ID"`

// hostFields are the host.* names, in the order hostScript prints them.
var hostFields = []string{"bootID", "cmdline", "kernel", "machineID", "productUUID", "os"}

// IdentityMismatch compares what a host reports about itself (host.* facts)
// with what its Node (or static inventory entry) says: boot id, machine id
// and product uuid, each only where both sides have it. A difference means
// the address leads to another machine than the one planned for.
func IdentityMismatch(node, host map[string]any) string {
	var why []string
	for _, c := range []struct{ node, host, what string }{
		{"bootID", "bootID", "boot id"},
		{"machineID", "machineID", "machine id"},
		{"systemUUID", "productUUID", "system uuid"},
	} {
		want, _ := node[c.node].(string)
		got, _ := host[c.host].(string)
		if want == "" || got == "" || strings.EqualFold(strings.TrimSpace(want), strings.TrimSpace(got)) {
			continue
		}
		why = append(why, fmt.Sprintf("%s: Node says %s, host says %s", c.what, want, got))
	}
	if len(why) == 0 {
		return ""
	}
	return "identity mismatch: the host at this address is not this Node (" + strings.Join(why, "; ") + ")"
}

// Run runs every probe of a node in one exec and splits the output. Root
// probes run through sudo; probes that asked not to be root run first, as
// the login user, in the same exec (RunOpts.UserScript), so that they cost
// no sudo of their own.
func Run(ctx context.Context, r module.Runner, probes []module.Probe) (map[string]module.ProbeResult, error) {
	if len(probes) == 0 {
		return map[string]module.ProbeResult{}, nil
	}
	var user, root []module.Probe
	for _, p := range probes {
		if p.Sudo {
			root = append(root, p)
		} else {
			user = append(user, p)
		}
	}
	boundary := newBoundary()
	userScript := script(boundary, user, 0)
	opts := module.RunOpts{Sudo: true, UserScript: userScript}
	command := script(boundary, root, len(user))
	if len(root) == 0 {
		opts, command = module.RunOpts{}, userScript
	}
	res, err := r.Run(ctx, command, opts)
	if err != nil {
		return nil, err
	}
	rootStarted := len(root) == 0 || bytes.Contains(res.Stdout, frameStart(boundary, len(user)))
	if res.ExitCode != 0 && (len(res.Stdout) == 0 || !rootStarted) {
		// Nothing ran as root: sudo (or the shell) refused.
		return nil, fmt.Errorf("gathering facts: exit %d: %s", res.ExitCode, firstLine(res.Stderr))
	}
	out, err := ParseOutput(res.Stdout, boundary, append(user, root...))
	if err != nil {
		return nil, fmt.Errorf("gathering facts: %w (exit %d: %s)", err, res.ExitCode, firstLine(res.Stderr))
	}
	return out, nil
}

// Script is one sh script, run as root, running every probe (a probe that
// asked not to be root runs through `sudo -u` the login user). Each probe's
// output is framed by a random boundary line, so no file content can forge
// a frame.
func Script(probes []module.Probe) (string, string) {
	all := make([]module.Probe, len(probes))
	for i, p := range probes {
		all[i] = asRoot(p)
	}
	boundary := newBoundary()
	return script(boundary, all, 0), boundary
}

// asRoot is p as a command of a root script: as root, or, when it asked
// not to be root, as the login user through sudo.
func asRoot(p module.Probe) module.Probe {
	if !p.Sudo {
		p.Command = fmt.Sprintf("sudo -n -u \"${SUDO_USER:-$(id -un)}\" -- sh -c %s", shell.Quote(p.Command))
		p.Sudo = true
	}
	return p
}

func newBoundary() string {
	var nonce [12]byte
	_, _ = rand.Read(nonce[:])
	return "--nksrun-" + hex.EncodeToString(nonce[:])
}

func frameStart(boundary string, i int) []byte {
	return []byte(fmt.Sprintf("%s %d\n", boundary, i))
}

// script frames probes, numbered from first on.
func script(boundary string, probes []module.Probe, first int) string {
	var b strings.Builder
	for i, p := range probes {
		fmt.Fprintf(&b, "printf '%%s\\n' '%s %d'\n( %s\n) </dev/null 2>/dev/null\nprintf '\\n%s rc=%%d\\n' $?\n", boundary, first+i, p.Command, boundary)
	}
	return b.String()
}

// ParseOutput splits the output of Script.
func ParseOutput(data []byte, boundary string, probes []module.Probe) (map[string]module.ProbeResult, error) {
	out := make(map[string]module.ProbeResult, len(probes))
	for i, p := range probes {
		start := frameStart(boundary, i)
		j := bytes.Index(data, start)
		if j < 0 {
			return nil, fmt.Errorf("output of %q is missing", p.Command)
		}
		data = data[j+len(start):]
		end := []byte("\n" + boundary + " rc=")
		k := bytes.Index(data, end)
		if k < 0 {
			return nil, fmt.Errorf("output of %q is truncated", p.Command)
		}
		body := data[:k]
		rest := data[k+len(end):]
		nl := bytes.IndexByte(rest, '\n')
		if nl < 0 {
			nl = len(rest)
		}
		rc, _ := strconv.Atoi(string(rest[:nl]))
		out[p.Key] = module.ProbeResult{Output: body, ExitCode: rc}
		data = rest[nl:]
	}
	return out, nil
}

func firstLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

// HostFacts turns the built-in probe results into the host.* map.
func HostFacts(res map[string]module.ProbeResult) map[string]any {
	h := make(map[string]any, len(hostFields))
	for _, name := range hostFields {
		h[name] = ""
	}
	r, ok := res[hostProbeKey]
	if !ok {
		return h
	}
	for _, line := range strings.Split(string(r.Output), "\n") {
		k, v, found := strings.Cut(line, "=")
		if _, known := h[k]; found && known {
			h[k] = strings.TrimSpace(v)
		}
	}
	return h
}

// FactProbes are the declared command facts of a runbook's first read, as
// probes. env (params, node, cluster) decides facts with a when; nil reads
// them all. only, if not nil, narrows them to those names
// (runbook.PlanReads). Follow-up facts are left to FollowUpProbes.
func FactProbes(rb *runbook.Runbook, env map[string]any, only map[string]bool) []module.Probe {
	return factProbes(rb, env, only, false)
}

// FollowUpProbes are the follow-up facts (runbook.FollowUp) whose when
// holds in env, which must hold the first read's facts, host and
// runbook.FollowUpVars. A condition that cannot be evaluated reads the
// fact: reading too much costs CPU, deciding on an error could hide a
// problem.
func FollowUpProbes(rb *runbook.Runbook, env map[string]any, only map[string]bool) []module.Probe {
	return factProbes(rb, env, only, true)
}

func factProbes(rb *runbook.Runbook, env map[string]any, only map[string]bool, followUps bool) []module.Probe {
	var out []module.Probe
	for _, name := range sortedKeys(rb.Facts) {
		f := rb.Facts[name]
		if f.Command == "" || (only != nil && !only[name]) || rb.FollowUp(name) != followUps {
			continue
		}
		if f.When.IsSet() && env != nil {
			if ok, err := f.When.EvalBool(env); err == nil && !ok {
				continue
			}
		}
		// A fact that asked not to be root runs as the login user.
		out = append(out, module.Probe{Key: "fact." + name, Command: f.Command, Sudo: f.Sudo})
	}
	return out
}

// parseFact converts a command fact's output as its `parse` says. A command
// that exits non-zero yields nil (except parse: exitcode, which yields the code).
func parseFact(name string, f runbook.Fact, r module.ProbeResult) (any, error) {
	if f.Parse == "exitcode" {
		return r.ExitCode, nil
	}
	if r.ExitCode != 0 {
		return nil, nil
	}
	text := string(r.Output)
	switch f.Parse {
	case "", "text":
		return strings.TrimSpace(text), nil
	case "lines":
		lines := []any{}
		for _, l := range strings.Split(text, "\n") {
			if l = strings.TrimSpace(l); l != "" {
				lines = append(lines, l)
			}
		}
		return lines, nil
	case "int":
		n, err := strconv.Atoi(strings.TrimSpace(text))
		if err != nil {
			return nil, fmt.Errorf("fact %s: %q is not an integer", name, strings.TrimSpace(text))
		}
		return n, nil
	case "json":
		var v any
		if err := json.Unmarshal(r.Output, &v); err != nil {
			return nil, fmt.Errorf("fact %s: output is not JSON: %v", name, err)
		}
		return v, nil
	case "kv":
		m := map[string]any{}
		for _, l := range strings.Split(text, "\n") {
			k, v, ok := strings.Cut(l, "=")
			if ok {
				m[strings.TrimSpace(k)] = strings.Trim(strings.TrimSpace(v), `"`)
			}
		}
		return m, nil
	}
	return nil, fmt.Errorf("fact %s: unknown parser %q", name, f.Parse)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// ParseFacts fills facts with the runbook's command facts found in results.
func ParseFacts(rb *runbook.Runbook, results map[string]module.ProbeResult, facts map[string]any) error {
	for _, name := range sortedKeys(rb.Facts) {
		f := rb.Facts[name]
		if f.Command == "" {
			continue
		}
		r, ok := results["fact."+name]
		if !ok {
			continue
		}
		v, err := parseFact(name, f, r)
		if err != nil {
			return err
		}
		facts[name] = v
	}
	return nil
}
