package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"
	yaml "go.yaml.in/yaml/v3"

	"nksrun/engine/views"
)

// A setting is one configurable flag: its key in the config file, its
// environment variable and the flag it fills. Precedence: flag >
// environment > config file > ~/.ssh/config (Host *) > default.
type setting struct {
	key  string // config file key
	flag string
	env  string
	ssh  string // ~/.ssh/config keyword, when it applies
	path bool   // a file or directory: ~/ is expanded
}

var settingsTable = []setting{
	{key: "kubeconfig", flag: "kubeconfig", env: "NKSRUN_KUBECONFIG", path: true},
	{key: "context", flag: "context", env: "NKSRUN_CONTEXT"},
	{key: "inventory", flag: "inventory", env: "NKSRUN_INVENTORY", path: true},
	{key: "identity", flag: "identity", env: "NKSRUN_IDENTITY", ssh: "identityfile", path: true},
	{key: "user", flag: "user", env: "NKSRUN_USER", ssh: "user"},
	{key: "port", flag: "port", env: "NKSRUN_PORT", ssh: "port"},
	{key: "known_hosts", flag: "known-hosts", env: "NKSRUN_KNOWN_HOSTS", ssh: "userknownhostsfile", path: true},
	{key: "host_key_policy", flag: "host-key-policy", env: "NKSRUN_HOST_KEY_POLICY"},
	{key: "jump", flag: "jump", env: "NKSRUN_JUMP", ssh: "proxyjump"},
	{key: "connect_timeout", flag: "connect-timeout", env: "NKSRUN_CONNECT_TIMEOUT"},
	{key: "command_timeout", flag: "command-timeout", env: "NKSRUN_COMMAND_TIMEOUT"},
	{key: "forks", flag: "forks", env: "NKSRUN_FORKS"},
	{key: "root_shell", flag: "root-shell", env: "NKSRUN_ROOT_SHELL"},
	{key: "max_failures", flag: "max-failures", env: "NKSRUN_MAX_FAILURES"},
	{key: "runbook_dir", flag: "runbook-dir", env: "NKSRUN_RUNBOOK_DIR", path: true},
	{key: "max_plan_age", flag: "max-plan-age", env: "NKSRUN_MAX_PLAN_AGE"},
	{key: "log_format", flag: "log-format", env: "NKSRUN_LOG_FORMAT"},
}

// ~/.ssh/config keywords nksrun reads from its "Host *" section, and those
// an OpenSSH user may expect that it does not honour (said by config view).
var sshNotHonoured = []string{"Host blocks other than 'Host *' (per-node settings)", "Match", "Include", "ProxyCommand", "IdentitiesOnly", "CertificateFile", "StrictHostKeyChecking (use host_key_policy)"}

// settings are the values from the environment, the config file and
// ~/.ssh/config, and where each effective value came from.
type settings struct {
	path string
	file map[string][]string
	// contexts are the config file's per-context SSH settings
	// (contexts: {NAME: {user, identity, known_hosts, jump}}): context ->
	// key -> values.
	contexts map[string]map[string][]string
	ssh      map[string][]string
	sshPath  string
	source   map[string]string // flag name -> flag | env NAME | file | ~/.ssh/config | default
}

// configPath is $NKSRUN_CONFIG, else $XDG_CONFIG_HOME/nksrun/config.yaml,
// else ~/.config/nksrun/config.yaml.
func configPath() string {
	if p := os.Getenv("NKSRUN_CONFIG"); p != "" {
		return p
	}
	if d := os.Getenv("XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "nksrun", "config.yaml")
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".config", "nksrun", "config.yaml")
}

// displayPath shows a path under $HOME with ~.
func displayPath(p string) string {
	if home, err := os.UserHomeDir(); err == nil && home != "" && strings.HasPrefix(p, home+string(os.PathSeparator)) {
		return "~" + p[len(home):]
	}
	return p
}

func expandHome(p string) string {
	if rest, ok := strings.CutPrefix(p, "~/"); ok {
		if home, err := os.UserHomeDir(); err == nil {
			return filepath.Join(home, rest)
		}
	}
	return p
}

// loadSettings reads the config file (missing is fine; unknown keys are
// an error with a suggestion, as in runbooks) and ~/.ssh/config.
func loadSettings() (*settings, error) {
	s := &settings{path: configPath(), file: map[string][]string{}, source: map[string]string{}}
	b, err := os.ReadFile(s.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("config %s: %w", s.path, err)
	default:
		var raw map[string]any
		if err := yaml.Unmarshal(b, &raw); err != nil {
			return nil, usageError{fmt.Sprintf("config %s: %v", s.path, err)}
		}
		var keys []string
		for _, st := range settingsTable {
			keys = append(keys, st.key)
		}
		for k, v := range raw {
			if k == "contexts" {
				if s.contexts, err = parseContextSettings(s.path, v); err != nil {
					return nil, err
				}
				continue
			}
			if !knownKey(k) {
				msg := fmt.Sprintf("config %s: unknown key %q", s.path, k)
				if sg := suggest(k, keys); sg != "" {
					msg += fmt.Sprintf("; did you mean %q?", sg)
				}
				return nil, usageError{msg + " (nksrun config view lists the keys)"}
			}
			switch v := v.(type) {
			case []any:
				for _, e := range v {
					s.file[k] = append(s.file[k], fmt.Sprint(e))
				}
			case nil:
			default:
				s.file[k] = []string{fmt.Sprint(v)}
			}
		}
	}
	s.ssh, s.sshPath = readSSHConfig()
	return s, nil
}

// contextKeys are the settings a context may override in the config file:
// what differs between clusters on the SSH side.
var contextKeys = []string{"user", "identity", "known_hosts", "jump"}

// parseContextSettings reads the config file's contexts: section.
func parseContextSettings(path string, v any) (map[string]map[string][]string, error) {
	m, ok := v.(map[string]any)
	if !ok && v != nil {
		return nil, usageError{fmt.Sprintf("config %s: contexts: want a map of context name to settings (%s)", path, strings.Join(contextKeys, ", "))}
	}
	out := map[string]map[string][]string{}
	for name, sv := range m {
		sm, ok := sv.(map[string]any)
		if !ok && sv != nil {
			return nil, usageError{fmt.Sprintf("config %s: contexts.%s: want settings (%s)", path, name, strings.Join(contextKeys, ", "))}
		}
		out[name] = map[string][]string{}
		for k, val := range sm {
			if !slices.Contains(contextKeys, k) {
				msg := fmt.Sprintf("config %s: contexts.%s: unknown key %q (a context may set %s)", path, name, k, strings.Join(contextKeys, ", "))
				if sg := suggest(k, contextKeys); sg != "" {
					msg += fmt.Sprintf("; did you mean %q?", sg)
				}
				return nil, usageError{msg}
			}
			switch val := val.(type) {
			case []any:
				for _, e := range val {
					out[name][k] = append(out[name][k], fmt.Sprint(e))
				}
			case nil:
			default:
				out[name][k] = []string{fmt.Sprint(val)}
			}
		}
	}
	return out, nil
}

func knownKey(k string) bool {
	for _, st := range settingsTable {
		if st.key == k {
			return true
		}
	}
	return false
}

// readSSHConfig reads the "Host *" section (and lines before any Host) of
// ~/.ssh/config: the defaults that apply to every node. Per-host sections
// name hosts, and nodes are addressed by InternalIP; they are not honoured
// (config view says so).
func readSSHConfig() (map[string][]string, string) {
	home, err := os.UserHomeDir()
	if err != nil {
		return nil, ""
	}
	path := filepath.Join(home, ".ssh", "config")
	if p := os.Getenv("NKSRUN_SSH_CONFIG"); p != "" {
		path = p
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, ""
	}
	defer f.Close()
	out := map[string][]string{}
	global := true
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, _ := strings.Cut(strings.Replace(line, "=", " ", 1), " ")
		k, v = strings.ToLower(strings.TrimSpace(k)), strings.Trim(strings.TrimSpace(v), `"`)
		switch k {
		case "host":
			global = strings.TrimSpace(v) == "*"
			continue
		case "match":
			global = false
			continue
		}
		if !global {
			continue
		}
		// OpenSSH: the first value of a keyword wins; IdentityFile adds up.
		if k == "identityfile" || len(out[k]) == 0 {
			out[k] = append(out[k], expandHome(v))
		}
	}
	return out, path
}

// configure fills the flags that were not given from the environment, the
// config file and ~/.ssh/config, in that order, and records each source.
func (a *app) configure(cmd *command, fs *pflag.FlagSet) error {
	uses := false
	for _, st := range settingsTable {
		uses = uses || fs.Lookup(st.flag) != nil
	}
	if !uses {
		// help, version, cat, completion: a broken config file must not
		// keep them from working.
		return nil
	}
	s, err := loadSettings()
	if err != nil {
		return err
	}
	a.cfg = s
	for _, st := range settingsTable {
		f := fs.Lookup(st.flag)
		if f == nil {
			continue
		}
		if f.Changed {
			s.source[st.flag] = "flag --" + st.flag
			continue
		}
		var vals []string
		var src string
		if v, ok := os.LookupEnv(st.env); ok && v != "" {
			src = "env " + st.env
			if st.key == "identity" {
				vals = strings.Split(v, ",")
			} else {
				vals = []string{v}
			}
		} else if v, ok := s.file[st.key]; ok && len(v) > 0 {
			src, vals = "file "+displayPath(s.path), v
		} else if v, ok := s.ssh[st.ssh]; ok && st.ssh != "" && len(v) > 0 {
			if st.key == "jump" && strings.EqualFold(v[0], "none") {
				continue
			}
			src, vals = displayPath(s.sshPath)+" (Host *)", v
			if st.key == "jump" {
				// ProxyJump may list several hops; nksrun takes one bastion.
				vals = []string{strings.Split(v[0], ",")[0]}
			}
		}
		if vals == nil {
			s.source[st.flag] = "default"
			continue
		}
		for _, v := range vals {
			v = strings.TrimSpace(v)
			if st.path {
				v = expandHome(v) // no shell expanded it
			}
			if err := fs.Set(st.flag, v); err != nil {
				return usageError{fmt.Sprintf("%s: %s=%q: %v", src, st.key, v, err)}
			}
		}
		// Set marks the flag changed; it was not given on the command line.
		f.Changed = false
		s.source[st.flag] = src
	}
	// One cluster: its context's settings from the config file apply now
	// (a many-cluster run applies each cluster's in contextOptions).
	if c := fs.Lookup("context"); c != nil && !a.opts.allContexts && len(a.opts.contexts) == 1 {
		if err := a.applyContextSettings(&a.opts, fs, a.opts.contexts[0], true); err != nil {
			return err
		}
	}
	return nil
}

// applyContextSettings sets in o the config file's settings for context
// name, except those given as a flag or in the environment, which win.
// record notes the source (config view) for the run's own options.
func (a *app) applyContextSettings(o *options, fs *pflag.FlagSet, name string, record bool) error {
	if a.cfg == nil {
		return nil
	}
	over := a.cfg.contexts[name]
	for _, st := range settingsTable {
		vals, ok := over[st.key]
		if !ok || fs.Lookup(st.flag) == nil {
			continue
		}
		if src := a.cfg.source[st.flag]; strings.HasPrefix(src, "flag ") || strings.HasPrefix(src, "env ") {
			continue
		}
		for i := range vals {
			if st.path {
				vals[i] = expandHome(strings.TrimSpace(vals[i]))
			}
		}
		switch st.key {
		case "user":
			o.user = vals[0]
		case "identity":
			o.identities = append([]string(nil), vals...)
		case "known_hosts":
			o.knownHosts = vals[0]
		case "jump":
			o.jump = vals[0]
		}
		if record {
			a.cfg.source[st.flag] = "file " + displayPath(a.cfg.path) + " (contexts." + name + ")"
		}
	}
	return nil
}

func configFlags(fs *pflag.FlagSet, o *options) {
	// config view shows what plan and apply would use: their flags.
	clusterFlags(fs, o)
	sshFlags(fs, o)
	fs.IntVar(&o.maxFailures, "max-failures", 0, "as for plan and apply")
	fs.DurationVar(&o.maxPlanAge, "max-plan-age", 24*time.Hour, "as for apply")
	rootShellFlag(fs, o)
	fs.StringVar(&o.logFormat, "log-format", "text", "as for plan and apply")
	runbookDirFlag(fs, o)
	outputFlag(fs, o, "text, json or yaml")
}

type configRow struct {
	Key    string `json:"key"`
	Flag   string `json:"flag"`
	Env    string `json:"env"`
	Value  string `json:"value"`
	Source string `json:"source"`
}

func runConfig(_ context.Context, a *app, args []string) error {
	if len(args) == 1 && args[0] == "path" {
		fmt.Fprintln(a.stdout, a.cfg.path)
		return nil
	}
	if len(args) != 1 || args[0] != "view" {
		return usageError{"want: config view | config path"}
	}
	var rows []configRow
	for _, st := range settingsTable {
		f := a.fs.Lookup(st.flag)
		if f == nil {
			continue
		}
		v := f.Value.String()
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			v = strings.Join(sv.GetSlice(), ",")
		}
		rows = append(rows, configRow{st.key, "--" + st.flag, st.env, v, a.cfg.source[st.flag]})
	}
	if done, err := a.writeData(map[string]any{"config_file": a.cfg.path, "ssh_config": a.cfg.sshPath, "settings": rows, "contexts": a.cfg.contexts, "ssh_config_not_honoured": sshNotHonoured}); done {
		return err
	}
	w := views.RedactingWriter(a.stdout, a.secrets)
	exists := "not found"
	if _, err := os.Stat(a.cfg.path); err == nil {
		exists = "found"
	}
	fmt.Fprintf(w, "config file: %s (%s)\n", a.cfg.path, exists)
	if a.cfg.sshPath != "" {
		fmt.Fprintf(w, "ssh config:  %s (Host * section: IdentityFile, User, Port, ProxyJump, UserKnownHostsFile)\n", a.cfg.sshPath)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tVALUE\tSOURCE\tFLAG\tENV")
	for _, r := range rows {
		v := r.Value
		if v == "" || v == "[]" {
			v = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Key, views.Escape(v), r.Source, r.Flag, r.Env)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, name := range sortedKeys(a.cfg.contexts) {
		var kv []string
		for _, k := range sortedKeys(a.cfg.contexts[name]) {
			kv = append(kv, k+"="+strings.Join(a.cfg.contexts[name][k], ","))
		}
		fmt.Fprintf(w, "context %s: %s\n", views.Escape(name), views.Escape(strings.Join(kv, " ")))
	}
	fmt.Fprintf(w, "\nPrecedence: flag > environment > config file (contexts.NAME, then top level) > ~/.ssh/config (Host *) > default.\nNot honoured from ~/.ssh/config: %s.\n", strings.Join(sshNotHonoured, "; "))
	return nil
}
