package cli

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"nksrun/engine/runbook"
)

// Runbook params come from three places, so that a secret never has to be
// on a command line (where ps, shell history, a crontab or a CronJob's args
// would show it):
//
//	--set name=value        on the command line (not for secrets in cron)
//	--set-file name=PATH    the file's content (one trailing newline dropped)
//	NKSRUN_SET_<NAME>       the environment (lowest precedence)
//
// A name given both by --set and --set-file is a usage error.

// maxSetFile bounds a --set-file: a param is a value, not a payload.
const maxSetFile = 1 << 20

// paramEnv is the environment variable that carries param name:
// NKSRUN_SET_ and the name in upper case, anything but letters and digits
// as '_' (token → NKSRUN_SET_TOKEN, api-key → NKSRUN_SET_API_KEY).
func paramEnv(name string) string {
	b := []byte(strings.ToUpper(name))
	for i, c := range b {
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			b[i] = '_'
		}
	}
	return "NKSRUN_SET_" + string(b)
}

// paramInput is one param value and where it came from.
type paramInput struct {
	value string
	flag  bool   // from --set
	file  string // from --set-file: the path as given
	env   string // from the environment: the variable
}

// paramInputs collects --set, --set-file and NKSRUN_SET_* for the params
// the runbooks declare.
func (a *app) paramInputs(rbs []*runbook.Runbook) (map[string]paramInput, error) {
	out := map[string]paramInput{}
	for _, kv := range a.opts.set {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, usageError{fmt.Sprintf("--set %q: want name=value", kv)}
		}
		out[k] = paramInput{value: v, flag: true}
	}
	for _, kv := range a.opts.setFiles {
		k, p, ok := strings.Cut(kv, "=")
		if !ok || k == "" || p == "" {
			return nil, usageError{fmt.Sprintf("--set-file %q: want name=PATH", kv)}
		}
		if prev, dup := out[k]; dup && prev.flag {
			return nil, usageError{fmt.Sprintf("param %s given by both --set and --set-file", k)}
		}
		v, err := readSetFile(p)
		if err != nil {
			return nil, usageError{fmt.Sprintf("--set-file %s: %v", k, err)}
		}
		out[k] = paramInput{value: v, file: p}
	}
	for _, rb := range rbs {
		for name := range rb.Params {
			if _, ok := out[name]; ok {
				continue
			}
			// Empty counts as unset: `NKSRUN_SET_X= nksrun ...` clears it.
			if v := os.Getenv(paramEnv(name)); v != "" {
				out[name] = paramInput{value: v, env: paramEnv(name)}
			}
		}
	}
	return out, nil
}

// sets is the name=value map the engine resolves params from.
func (a *app) sets(rbs []*runbook.Runbook) (map[string]string, error) {
	in, err := a.paramInputs(rbs)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(in))
	for k, v := range in {
		out[k] = v.value
	}
	return out, nil
}

// readSetFile reads a --set-file value. One trailing newline is dropped:
// `echo secret > file` must give "secret".
func readSetFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSetFile+1))
	if err != nil {
		return "", err
	}
	if len(b) > maxSetFile {
		return "", fmt.Errorf("%s is larger than %d bytes", path, maxSetFile)
	}
	s := strings.TrimSuffix(string(b), "\n")
	return strings.TrimSuffix(s, "\r"), nil
}

// secretParams are the params any of rbs declares secret.
func secretParams(rbs []*runbook.Runbook) map[string]bool {
	out := map[string]bool{}
	for _, rb := range rbs {
		for _, n := range rb.SecretParams() {
			out[n] = true
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// absPath makes a path absolute for a crontab line or a saved setting
// (cron runs in $HOME, not where the command was typed).
func absPath(p string) string {
	if p == "" {
		return ""
	}
	if ap, err := filepath.Abs(p); err == nil {
		return ap
	}
	return p
}
