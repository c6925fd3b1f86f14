package cli

import (
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/labels"

	"nksrun/engine/transport"
	"nksrun/inventory"
)

// validate checks every flag value of cmd before anything is contacted or
// written: a mistake in the command line is a usage error (exit 64) whether
// it is a format, a number, a policy or a pattern.
func (a *app) validate(cmd *command, fs *pflag.FlagSet) error {
	o := &a.opts
	has := func(name string) bool { return fs.Lookup(name) != nil }
	if cmd.formats != nil && !slices.Contains(cmd.formats, o.format) {
		msg := fmt.Sprintf("-o/--output %q: want %s", o.format, strings.Join(cmd.formats, ", "))
		if s := suggest(o.format, cmd.formats); s != "" {
			msg += fmt.Sprintf(" (did you mean %q?)", s)
		}
		if strings.Contains(o.format, ".") || strings.Contains(o.format, "/") {
			// -o used to save the plan file.
			msg += "; -o is the output format, the plan file is --out FILE"
		}
		return usageError{msg}
	}
	if has("forks") && o.forks < 1 {
		return usageError{fmt.Sprintf("--forks %d: want at least 1", o.forks)}
	}
	if has("max-failures") && o.maxFailures < 0 {
		return usageError{fmt.Sprintf("--max-failures %d: want 0 (no limit) or more", o.maxFailures)}
	}
	if has("connect-timeout") && o.connectTO <= 0 {
		return usageError{fmt.Sprintf("--connect-timeout %s: want a positive duration", o.connectTO)}
	}
	if has("command-timeout") && o.commandTO <= 0 {
		return usageError{fmt.Sprintf("--command-timeout %s: want a positive duration", o.commandTO)}
	}
	if has("timeout") && o.timeout < 0 {
		return usageError{fmt.Sprintf("--timeout %s: want 0 (none) or a positive duration", o.timeout)}
	}
	if has("max-plan-age") && o.maxPlanAge < 0 {
		return usageError{fmt.Sprintf("--max-plan-age %s: want 0 (no limit) or a positive duration", o.maxPlanAge)}
	}
	if has("port") && (o.port < 0 || o.port > 65535) {
		return usageError{fmt.Sprintf("--port %d: want 1-65535", o.port)}
	}
	if has("host-key-policy") {
		if _, err := transport.ParseHostKeyPolicy(o.hostKeyPolicy); err != nil {
			return usageError{"--host-key-policy: " + err.Error()}
		}
	}
	if has("log-format") && cmd.name != "cron" && o.logFormat != "text" && o.logFormat != "json" { // cron checks its own
		return usageError{fmt.Sprintf("--log-format %q: want text or json", o.logFormat)}
	}
	if has("on-stale") && o.onStale != "continue" && o.onStale != "stop" {
		return usageError{fmt.Sprintf("--on-stale %q: want continue or stop", o.onStale)}
	}
	for _, kv := range o.set {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return usageError{fmt.Sprintf("--set %q: want name=value", kv)}
		}
	}
	if has("limit") {
		if _, _, err := limitPatterns(o.limit); err != nil {
			return err
		}
	}
	if has("context") {
		if err := a.checkContexts(cmd, fs); err != nil {
			return err
		}
	}
	if o.selector != "" {
		if _, err := labels.Parse(o.selector); err != nil {
			return usageError{fmt.Sprintf("-l/--selector %q: %v", o.selector, err)}
		}
	}
	return nil
}

// limitPatterns splits --limit values the way Ansible does: 'a,b,!c' is
// a or b, but not c. A comma inside parentheses belongs to a label
// selector ("key in (a,b)"). Each pattern is checked here, before any node
// is looked up.
func limitPatterns(values []string) (include, exclude []string, err error) {
	for _, v := range values {
		depth, start := 0, 0
		var parts []string
		for i, r := range v {
			switch r {
			case '(':
				depth++
			case ')':
				depth--
			case ',':
				if depth == 0 {
					parts = append(parts, v[start:i])
					start = i + 1
				}
			}
		}
		parts = append(parts, v[start:])
		for _, p := range parts {
			p = strings.TrimSpace(p)
			neg := strings.HasPrefix(p, "!")
			if neg {
				p = strings.TrimSpace(p[1:])
			}
			if p == "" {
				return nil, nil, usageError{fmt.Sprintf("--limit %q: empty pattern", v)}
			}
			if strings.ContainsAny(p, "=!()") || strings.Contains(p, " in ") {
				if _, err := labels.Parse(p); err != nil {
					return nil, nil, usageError{fmt.Sprintf("--limit %q: %v", p, err)}
				}
			} else if _, err := path.Match(p, ""); err != nil {
				return nil, nil, usageError{fmt.Sprintf("--limit %q: %v", p, err)}
			}
			if neg {
				exclude = append(exclude, p)
			} else {
				include = append(include, p)
			}
		}
	}
	return include, exclude, nil
}

// selectHosts applies --limit (Ansible patterns) and -l (a kubectl label
// selector). An include or exclude pattern that matches no node is an
// error: a typo must never mean "all nodes" nor "this node after all".
func selectHosts(hosts []inventory.Host, limit []string, selector string) ([]inventory.Host, error) {
	include, exclude, err := limitPatterns(limit)
	if err != nil {
		return nil, err
	}
	if len(include) > 0 {
		if hosts, err = inventory.Limit(hosts, include); err != nil {
			return nil, err
		}
	}
	for _, ex := range exclude {
		drop, err := inventory.Limit(hosts, []string{ex})
		if err != nil {
			return nil, fmt.Errorf("--limit '!%s' matches no node", ex)
		}
		gone := map[string]bool{}
		for _, h := range drop {
			gone[h.Name] = true
		}
		hosts = slices.DeleteFunc(slices.Clone(hosts), func(h inventory.Host) bool { return gone[h.Name] })
	}
	if selector != "" {
		sel, err := labels.Parse(selector)
		if err != nil {
			return nil, usageError{fmt.Sprintf("-l/--selector %q: %v", selector, err)}
		}
		kept := hosts[:0:0]
		for _, h := range hosts {
			if sel.Matches(labels.Set(h.Labels)) {
				kept = append(kept, h)
			}
		}
		if len(kept) == 0 {
			return nil, fmt.Errorf("-l/--selector %q matches no node", selector)
		}
		hosts = kept
	}
	if len(hosts) == 0 {
		return nil, fmt.Errorf("--limit %q leaves no node", strings.Join(limit, " "))
	}
	return hosts, nil
}
