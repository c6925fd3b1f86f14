// Package filesync implements the file_sync module: keep one file identical
// on every node (content, mode, owner, group), like Ansible's copy.
//
// Plan compares sha256 and ownership read in the engine's single fact round
// trip. Apply streams the content through one exec's stdin into a temp file
// in the destination directory, checks its hash, sets ownership and mode,
// runs `validate` on the temp file, re-checks that the destination still has
// the hash the plan saw, optionally backs it up, and renames atomically. A
// node therefore never holds a half-written file: a dropped connection, a full
// disk or a failed validation leaves the old file untouched and the temp file
// removed.
package filesync

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"nksrun/engine/module"
	"nksrun/engine/shell"
	"nksrun/modules/modutil"
)

// Params are file_sync's parameters.
type Params struct {
	// Dest is the absolute path on the node.
	Dest string `yaml:"dest" nks:"required"`
	// Src is a local file, relative to the runbook's directory.
	Src string `yaml:"src,omitempty"`
	// Content is the file content inline (exactly one of src/content).
	Content *string `yaml:"content,omitempty"`
	Mode    string  `yaml:"mode,omitempty"`  // default 0644
	Owner   string  `yaml:"owner,omitempty"` // default root
	Group   string  `yaml:"group,omitempty"` // default root
	// Backup keeps the replaced file as DEST.<timestamp>.nksrun-backup~.
	Backup bool `yaml:"backup,omitempty"`
	// Validate runs on the uploaded temp file before it replaces DEST; %s is
	// the temp file's path (e.g. "logrotate -d %s").
	Validate string `yaml:"validate,omitempty"`
	// Sensitive hides the content: no diff, and the plan stores only its hash.
	Sensitive bool `yaml:"sensitive,omitempty"`
}

// Module is file_sync.
type Module struct{}

// New is the registry factory.
func New() module.Module { return module.Adapt[Params](Module{}) }

var _ module.Typed[Params] = Module{}

func (Module) Scope() module.Scope { return module.ScopeNode }

// Outputs are the keys later steps read as steps.<id>.<key>: the file's sha256 and path, as installed.
func (Module) Outputs() []string { return []string{"sha256", "dest"} }

var (
	modeRE = regexp.MustCompile(`^0?[0-7]{3,4}$`)
	nameRE = regexp.MustCompile(`^[a-z_][a-z0-9_.-]*$`)
)

func (Module) Validate(ps *Params) error {
	switch {
	case !path.IsAbs(ps.Dest) || path.Clean(ps.Dest) != ps.Dest:
		return fmt.Errorf("dest %q must be a clean absolute path", ps.Dest)
	case (ps.Src == "") == (ps.Content == nil):
		return errors.New("set exactly one of src or content")
	case ps.Mode != "" && !modeRE.MatchString(ps.Mode):
		return fmt.Errorf("mode %q: want octal like 0644", ps.Mode)
	case ps.Owner != "" && !nameRE.MatchString(ps.Owner):
		return fmt.Errorf("owner %q is not a user name", ps.Owner)
	case ps.Group != "" && !nameRE.MatchString(ps.Group):
		return fmt.Errorf("group %q is not a group name", ps.Group)
	case ps.Validate != "" && strings.Count(ps.Validate, "%s") != 1:
		return fmt.Errorf("validate %q must contain %%s exactly once (the temp file)", ps.Validate)
	}
	return nil
}

func defaults(p *Params) (mode, owner, group string) {
	mode, owner, group = p.Mode, p.Owner, p.Group
	if mode == "" {
		mode = "0644"
	}
	mode = fmt.Sprintf("%04s", strings.TrimLeft(mode, "0"))
	if owner == "" {
		owner = "root"
	}
	if group == "" {
		group = "root"
	}
	return mode, owner, group
}

// desired reads the content the node should have.
func desired(dir string, p *Params) ([]byte, error) {
	if p.Content != nil {
		return []byte(*p.Content), nil
	}
	src := p.Src
	if !filepath.IsAbs(src) {
		src = filepath.Join(dir, src)
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return nil, fmt.Errorf("src: %w", err)
	}
	return b, nil
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// The state probe prints one line, "<sha256> <mode> <owner> <group>
// <leftovers>" or "absent <leftovers>" (leftovers: temp files of a killed
// upload), followed by the current content when it differs from the
// desired one (for the diff; never for sensitive files). One probe, few
// processes: it runs on every node at every plan.
const probeState = "state"

func (Module) Probes(t module.Target, _ string, p *Params) ([]module.Probe, error) {
	want, err := desired(t.RunbookDir, p)
	if err != nil {
		return nil, err
	}
	content := ""
	if !p.Sensitive {
		content = fmt.Sprintf(`; [ "$h" = %s ] || head -c %d "$d"`, sum(want), modutil.MaxDiffBytes+1)
	}
	return []module.Probe{{
		Key: probeState,
		Command: fmt.Sprintf(`d=%s; set -- "${d%%/*}"/.nksrun-"${d##*/}".*~; [ -e "$1" ] && n=$# || n=0
if [ -L "$d" ]; then echo symlink "$n"; readlink "$d"; elif [ -e "$d" ]; then h=$(sha256sum "$d") && h=${h%%%% *} && printf '%%s %%s %%s\n' "$h" "$(stat -c '%%a %%U %%G' "$d")" "$n"%s; else echo absent "$n"; fi`, shell.Quote(p.Dest), content),
		Sudo: true,
	}}, nil
}

// state is what the node has.
type state struct {
	exists             bool
	hash               string
	mode, owner, group string
	leftovers          bool
	content            []byte
	// symlink: dest is a symbolic link (to linkTarget). Apply replaces
	// the link with a regular file, and the plan says so.
	symlink    bool
	linkTarget string
}

func parseState(r module.ProbeResult) (state, error) {
	line, rest, _ := strings.Cut(string(r.Output), "\n")
	line = strings.TrimSpace(line)
	if r.ExitCode != 0 {
		return state{}, fmt.Errorf("reading the destination failed (exit %d): %s", r.ExitCode, line)
	}
	f := strings.Fields(line)
	switch {
	case len(f) == 2 && f[0] == "absent":
		return state{leftovers: f[1] != "0"}, nil
	case len(f) == 2 && f[0] == "symlink":
		target, _, _ := strings.Cut(rest, "\n")
		return state{symlink: true, linkTarget: target, leftovers: f[1] != "0"}, nil
	case len(f) == 5 && len(f[0]) == 64:
		return state{exists: true, hash: f[0], mode: fmt.Sprintf("%04s", f[1]), owner: f[2], group: f[3], leftovers: f[4] != "0", content: []byte(rest)}, nil
	}
	return state{}, fmt.Errorf("unexpected state probe output %q", line)
}

// data is what a plan carries for apply: the exact content reviewed (unless
// sensitive, when apply re-reads the source and checks its hash).
type data struct {
	Content *string `json:"content,omitempty"`
	Hash    string  `json:"sha256"`
	// Cleanup: the plan saw temp files of a killed upload to remove.
	Cleanup bool `json:"cleanup,omitempty"`
}

func (Module) Plan(ctx context.Context, t module.Target, _ string, p *Params, probes map[string]module.ProbeResult) (module.Planned, error) {
	want, err := desired(t.RunbookDir, p)
	if err != nil {
		return module.Planned{}, err
	}
	wantHash := sum(want)
	mode, owner, group := defaults(p)
	cur, err := parseState(probes[probeState])
	if err != nil {
		return module.Planned{}, err
	}
	out := module.Planned{
		Outputs:     map[string]any{"sha256": wantHash, "dest": p.Dest},
		Fingerprint: map[string]string{"sha256": "absent"},
	}
	if cur.exists {
		out.Fingerprint["sha256"] = cur.hash
	}
	var why []string
	switch {
	case cur.symlink:
		out.Fingerprint["sha256"] = "symlink"
		why = append(why, fmt.Sprintf("%s is a symlink to %s: apply replaces the link with a regular file", p.Dest, cur.linkTarget))
	case !cur.exists:
		why = append(why, "missing")
	case cur.hash != wantHash:
		why = append(why, fmt.Sprintf("content differs (sha256 %s, want %s)", modutil.Short(cur.hash), modutil.Short(wantHash)))
	}
	if cur.exists && cur.mode != mode {
		why = append(why, fmt.Sprintf("mode %s, want %s", cur.mode, mode))
	}
	if cur.exists && (cur.owner != owner || cur.group != group) {
		why = append(why, fmt.Sprintf("owner %s:%s, want %s:%s", cur.owner, cur.group, owner, group))
	}
	if len(why) == 0 {
		out.Action = module.NoOp
		out.Summary = fmt.Sprintf("%s in sync (sha256 %s)", p.Dest, modutil.Short(wantHash))
		return out, nil
	}
	out.Action = module.Change
	out.Reason = strings.Join(why, "; ")
	if cur.symlink {
		out.Summary = fmt.Sprintf("replace symlink %s with a file (%s %s %s:%s)", p.Dest, modutil.Short(wantHash), mode, owner, group)
	} else if cur.exists {
		out.Summary = fmt.Sprintf("update %s (%s %s %s:%s)", p.Dest, modutil.Short(wantHash), mode, owner, group)
	} else {
		out.Summary = fmt.Sprintf("create %s (%s %s %s:%s)", p.Dest, modutil.Short(wantHash), mode, owner, group)
	}
	d := data{Hash: wantHash, Cleanup: cur.leftovers}
	if p.Sensitive {
		out.Diff = "(sensitive: content not shown)\n"
	} else {
		c := string(want)
		d.Content = &c
		old := cur.content
		if !cur.exists {
			old = nil
		}
		if len(old) > modutil.MaxDiffBytes {
			out.Diff = fmt.Sprintf("content differs (current file larger than %d bytes; not shown)\n", modutil.MaxDiffBytes)
		} else if cur.hash != wantHash {
			from := p.Dest
			if !cur.exists {
				from = "/dev/null"
			}
			out.Diff = modutil.Diff(old, want, from, p.Dest)
		}
	}
	out.Data, err = json.Marshal(d)
	return out, err
}

// Exit codes of the install script, mapped to errors.
const (
	exitCorrupt  = 93
	exitValidate = 94
	exitStale    = 95
)

// installScript is the whole apply in one exec. It reads the content on
// stdin. It runs on every changed node, so it starts as few processes as it
// can (parameter expansion instead of dirname/basename, the backup stamp
// and the temp file's random name from Go instead of date and mktemp, and
// install(1) writing the temp file with its mode and owner in one process
// instead of cat, chown and chmod).
func installScript(p *Params, d data, planned, stamp, tmpID string) string {
	mode, owner, group := defaults(p)
	var b strings.Builder
	fmt.Fprintf(&b, "set -eu\numask 077\ndest=%s\nnl='\n'\n", shell.Quote(p.Dest))
	// Temp and backup names end in "~" and contain a ".": directories read
	// as a whole (logrotate.d, sudoers.d, cron.d) skip such files, so they
	// never see a half-written temp file or a second copy of the config.
	b.WriteString(`dir=${dest%/*}; dir=${dir:-/}; base=${dest##*/}` + "\n")
	if d.Cleanup {
		// Temp files of an earlier upload killed mid-write (SIGKILL skips
		// the trap) go once they are an hour old.
		b.WriteString(`find "$dir" -maxdepth 1 -name ".nksrun-$base.*~" -mmin +60 -delete 2>/dev/null || true` + "\n")
	}
	// The temp name is unguessable (tmpID is random), and install(1) does
	// not follow a link or write into a file it finds there: it replaces
	// whatever is at the name with a new file, as mktemp's O_EXCL would
	// refuse it.
	fmt.Fprintf(&b, "tmp=\"$dir/.nksrun-$base.%s~\"\n", tmpID)
	b.WriteString(`trap 'rm -f "$tmp"' EXIT` + "\n")
	b.WriteString(`trap 'rm -f "$tmp"; exit 1' HUP INT TERM PIPE` + "\n")
	fmt.Fprintf(&b, "install -m %s -o %s -g %s /dev/stdin \"$tmp\"\n", shell.Quote(mode), shell.Quote(owner), shell.Quote(group))
	corrupt := fmt.Sprintf(`if [ "$got" != %s ]; then echo "upload incomplete or corrupted (sha256 $got)" >&2; exit %d; fi`, shell.Quote(d.Hash), exitCorrupt)
	if p.Validate != "" {
		// The validator only reads the temp file, so it runs before the
		// upload's hash is checked; when it fails, the hash says whether
		// the upload or the content is at fault.
		cmd := strings.Replace(p.Validate, "%s", `"$tmp"`, 1)
		fmt.Fprintf(&b, "if ! out=$(%s 2>&1); then\n got=$(sha256sum \"$tmp\"); got=${got%%%% *}; %s\n printf 'validate failed: %%s\\n' \"$out\" >&2; exit %d\nfi\n", cmd, corrupt, exitValidate)
	}
	// Right before the rename, one sha256sum checks the upload and
	// re-checks that the node still has what the plan saw (anything else is
	// someone else's change, not ours to overwrite). sha256sum follows
	// links: a symlink at dest is not hashed.
	b.WriteString(`if [ -L "$dest" ]; then cur=symlink; set -- "$tmp"; elif [ -e "$dest" ]; then cur=; set -- "$tmp" "$dest"; else cur=absent; set -- "$tmp"; fi` + "\n")
	b.WriteString(`sums=$(sha256sum "$@"); got=${sums%% *}; if [ -z "$cur" ]; then cur=${sums#*"$nl"}; cur=${cur%% *}; fi` + "\n")
	b.WriteString(corrupt + "\n")
	fmt.Fprintf(&b, `if [ "$cur" != %s ] && [ "$cur" != %s ]; then echo "destination changed since the plan (sha256 $cur)" >&2; exit %d; fi`+"\n", shell.Quote(planned), shell.Quote(d.Hash), exitStale)
	if p.Backup {
		fmt.Fprintf(&b, `if [ -e "$dest" ]; then cp -p "$dest" "$dest.%s.nksrun-backup~"; fi`+"\n", stamp)
	}
	b.WriteString(`mv -f "$tmp" "$dest"` + "\n")
	b.WriteString("trap - EXIT\n")
	return b.String()
}

var hexDigestRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

func (m Module) Apply(ctx context.Context, t module.Target, _ string, p *Params, pl module.Planned) (module.Applied, error) {
	// Every value that reaches the root shell is checked for its format
	// here, whatever the plan says: params as at load time, digests as hex.
	if err := m.Validate(p); err != nil {
		return module.Applied{}, fmt.Errorf("params in plan: %w", err)
	}
	var d data
	if err := json.Unmarshal(pl.Data, &d); err != nil {
		return module.Applied{}, fmt.Errorf("plan data: %w", err)
	}
	if !hexDigestRE.MatchString(d.Hash) {
		return module.Applied{}, fmt.Errorf("plan data for %s: sha256 %q is not a hex digest", p.Dest, d.Hash)
	}
	if fp := pl.Fingerprint["sha256"]; fp != "absent" && fp != "symlink" && !hexDigestRE.MatchString(fp) {
		return module.Applied{}, fmt.Errorf("%w: %s: planned sha256 %q is neither a hex digest nor absent", module.ErrStale, p.Dest, fp)
	}
	var content []byte
	if d.Content != nil {
		content = []byte(*d.Content)
	} else {
		b, err := desired(t.RunbookDir, p)
		if err != nil {
			return module.Applied{}, err
		}
		if sum(b) != d.Hash {
			return module.Applied{}, fmt.Errorf("%w: source of %s changed since the plan", module.ErrStale, p.Dest)
		}
		content = b
	}
	if sum(content) != d.Hash {
		return module.Applied{}, fmt.Errorf("plan data for %s does not match its hash", p.Dest)
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	script := installScript(p, d, pl.Fingerprint["sha256"], time.Now().UTC().Format("20060102150405"), hex.EncodeToString(id[:]))
	res, err := t.Node.Runner.Run(ctx, script, module.RunOpts{Sudo: true, Stdin: bytes.NewReader(content)})
	if err != nil {
		return module.Applied{}, fmt.Errorf("installing %s: %w", p.Dest, err)
	}
	msg := strings.TrimSpace(string(res.Stderr))
	switch res.ExitCode {
	case 0:
	case exitStale:
		return module.Applied{}, fmt.Errorf("%w: %s: %s", module.ErrStale, p.Dest, msg)
	case exitValidate:
		return module.Applied{}, fmt.Errorf("%s: %s (file left unchanged)", p.Dest, msg)
	default:
		return module.Applied{}, fmt.Errorf("installing %s: exit %d: %s (file left unchanged)", p.Dest, res.ExitCode, msg)
	}
	return module.Applied{Changed: true, Summary: pl.Summary, Outputs: map[string]any{"sha256": d.Hash, "dest": p.Dest}}, nil
}
