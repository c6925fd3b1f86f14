package cli

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"nksrun/runbooks"
)

// Where a runbook comes from, as `nksrun list` shows it.
const (
	originBuiltin = "built-in"
	originDir     = "runbook-dir"
	originFile    = "file"
)

// runbookRef is a runbook argument resolved to a file.
type runbookRef struct {
	name   string // NAME for names, the argument for paths
	path   string
	origin string
}

// runbookDir is --runbook-dir, else $NKSRUN_RUNBOOK_DIR (config is applied
// to the flag before this runs).
func (a *app) runbookDir() string {
	if a.opts.runbookDir != "" {
		return a.opts.runbookDir
	}
	return os.Getenv("NKSRUN_RUNBOOK_DIR")
}

// looksLikePath: an argument with a slash or a .yaml/.yml suffix, or an
// existing file, is a path; anything else is a runbook name.
func looksLikePath(arg string) bool {
	if strings.ContainsRune(arg, '/') || strings.ContainsRune(arg, os.PathSeparator) {
		return true
	}
	if _, err := os.Stat(arg); err == nil {
		return true
	}
	return false
}

// resolveRunbooks turns arguments into files: a path is used as it is; a
// name (logrotate, or logrotate.yaml) is looked up in the runbook directory,
// then among the built-in runbooks. An unknown name is a usage error with
// a suggestion.
func (a *app) resolveRunbooks(args []string) ([]runbookRef, error) {
	var out []runbookRef
	for _, arg := range args {
		if looksLikePath(arg) {
			out = append(out, runbookRef{name: arg, path: arg, origin: originFile})
			continue
		}
		name := strings.TrimSuffix(strings.TrimSuffix(arg, ".yaml"), ".yml")
		if d := a.runbookDir(); d != "" {
			for _, ext := range []string{".yaml", ".yml"} {
				p := filepath.Join(d, name+ext)
				if _, err := os.Stat(p); err == nil {
					out = append(out, runbookRef{name: name, path: p, origin: originDir})
					goto next
				}
			}
		}
		if _, err := fs.Stat(runbooks.FS(), name+".yaml"); err == nil {
			dir, err := builtinDir()
			if err != nil {
				return nil, err
			}
			out = append(out, runbookRef{name: name, path: filepath.Join(dir, name+".yaml"), origin: originBuiltin})
			continue
		}
		{
			known := a.runbookNames()
			msg := fmt.Sprintf("no runbook %q: not a file, not in the runbook directory, not built in", arg)
			if s := suggest(name, known); s != "" {
				msg += fmt.Sprintf("; did you mean %q?", s)
			}
			return nil, usageError{msg + " (nksrun list shows them)"}
		}
	next:
	}
	return out, nil
}

// allRunbooks is every runbook by name: built-in ones, replaced or added to
// by the runbook directory.
func (a *app) allRunbooks() ([]runbookRef, error) {
	byName := map[string]runbookRef{}
	entries, _ := fs.ReadDir(runbooks.FS(), ".")
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), ".yaml"); ok && !e.IsDir() {
			byName[n] = runbookRef{name: n, origin: originBuiltin}
		}
	}
	if d := a.runbookDir(); d != "" {
		paths, err := runbookFiles(d)
		if err != nil {
			return nil, err
		}
		for _, p := range paths {
			n := strings.TrimSuffix(strings.TrimSuffix(filepath.Base(p), ".yaml"), ".yml")
			byName[n] = runbookRef{name: n, path: p, origin: originDir}
		}
	}
	if len(byName) == 0 {
		return nil, errors.New("no runbooks")
	}
	var out []runbookRef
	for _, r := range byName {
		if r.origin == originBuiltin {
			dir, err := builtinDir()
			if err != nil {
				return nil, err
			}
			r.path = filepath.Join(dir, r.name+".yaml")
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out, nil
}

// runbookNames are the names completion and suggestions offer.
func (a *app) runbookNames() []string {
	names := map[string]bool{}
	entries, _ := fs.ReadDir(runbooks.FS(), ".")
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), ".yaml"); ok {
			names[n] = true
		}
	}
	if d := a.runbookDir(); d != "" {
		if paths, err := runbookFiles(d); err == nil {
			for _, p := range paths {
				names[strings.TrimSuffix(strings.TrimSuffix(filepath.Base(p), ".yaml"), ".yml")] = true
			}
		}
	}
	out := make([]string, 0, len(names))
	for n := range names {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// builtinDir is the built-in runbooks written out once to the user's cache,
// in a directory named by their content hash: a runbook's files (src:) are
// read from its directory at plan and at apply (also of a saved plan), and
// a new binary with other runbooks gets a directory of its own.
func builtinDir() (string, error) {
	h := sha256.New()
	var paths []string
	err := fs.WalkDir(runbooks.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		paths = append(paths, p)
		b, err := fs.ReadFile(runbooks.FS(), p)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s\x00%d\x00", p, len(b))
		h.Write(b)
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("built-in runbooks: %w", err)
	}
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	dir := filepath.Join(base, "nksrun", "runbooks", hex.EncodeToString(h.Sum(nil))[:16])
	if _, err := os.Stat(filepath.Join(dir, ".complete")); err == nil {
		return dir, nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", fmt.Errorf("built-in runbooks: %w", err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".tmp-")
	if err != nil {
		return "", fmt.Errorf("built-in runbooks: %w", err)
	}
	defer os.RemoveAll(tmp)
	for _, p := range paths {
		b, _ := fs.ReadFile(runbooks.FS(), p)
		dst := filepath.Join(tmp, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return "", fmt.Errorf("built-in runbooks: %w", err)
		}
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			return "", fmt.Errorf("built-in runbooks: %w", err)
		}
	}
	if err := os.WriteFile(filepath.Join(tmp, ".complete"), nil, 0o644); err != nil {
		return "", fmt.Errorf("built-in runbooks: %w", err)
	}
	// Another nksrun may have written the same directory meanwhile; its
	// content is the same (same hash), so losing the race is fine.
	if err := os.Rename(tmp, dir); err != nil {
		if _, serr := os.Stat(filepath.Join(dir, ".complete")); serr != nil {
			return "", fmt.Errorf("built-in runbooks: %w", err)
		}
	}
	return dir, nil
}

// writeBuiltin copies a built-in runbook and the files it refers to into
// dir, for a local variant (`nksrun cat NAME --to DIR`).
func writeBuiltin(name, dir string) ([]string, error) {
	src, err := fs.ReadFile(runbooks.FS(), name+".yaml")
	if err != nil {
		return nil, usageError{fmt.Sprintf("no built-in runbook %q", name)}
	}
	var written []string
	dst := filepath.Join(dir, name+".yaml")
	if _, err := os.Stat(dst); err == nil {
		return nil, fmt.Errorf("%s exists: not overwriting it", dst)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(dst, src, 0o644); err != nil {
		return nil, err
	}
	written = append(written, dst)
	// The runbook's files: every file under files/ the YAML names.
	err = fs.WalkDir(runbooks.FS(), "files", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.Contains(string(src), p) {
			return err
		}
		b, err := fs.ReadFile(runbooks.FS(), p)
		if err != nil {
			return err
		}
		out := filepath.Join(dir, filepath.FromSlash(p))
		if _, err := os.Stat(out); err == nil {
			return nil // keep the operator's own copy
		}
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			return err
		}
		written = append(written, out)
		return os.WriteFile(out, b, 0o644)
	})
	return written, err
}

// builtinNames are the built-in runbooks' names.
func builtinNames() []string {
	var out []string
	entries, _ := fs.ReadDir(runbooks.FS(), ".")
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), ".yaml"); ok && !e.IsDir() {
			out = append(out, n)
		}
	}
	return out
}

// runbookArg is how a command line printed for the operator (doctor's FIX,
// a crontab line) names a loaded runbook: built-in and runbook-dir ones by
// name, so the line keeps working after an upgrade; others by path.
func (a *app) runbookArg(path string) string {
	name := strings.TrimSuffix(strings.TrimSuffix(filepath.Base(path), ".yaml"), ".yml")
	if dir, err := builtinDir(); err == nil && filepath.Dir(path) == dir {
		return name
	}
	if d := a.runbookDir(); d != "" {
		ad, _ := filepath.Abs(d)
		if pd, _ := filepath.Abs(filepath.Dir(path)); pd == ad {
			return name
		}
	}
	return relPath(path)
}
