// Package grubarg implements the grub_arg module: ensure one kernel argument
// is present (or absent) in GRUB_CMDLINE_LINUX of /etc/default/grub, then
// regenerate the boot loader configuration the way the node's OS family does
// (grub2-mkconfig -o <live grub.cfg> on the RHEL family, update-grub on
// Debian/Ubuntu).
//
// The edit is computed in Go (Edit: idempotent, never duplicates, keeps
// quoting and the other arguments) and shown as a diff in the plan. Apply is
// one exec under a lock on /etc/default: it re-checks the file's sha256,
// backs it up, installs the new content atomically, regenerates, and checks
// the result (exit status, no leftover grub.cfg.new, the generated boot
// entries carry the argument). Any failure restores the backup byte for byte
// and fails the node, so a later reboot step never boots a half-made config.
//
// Output reboot_required is true while /proc/cmdline (host.cmdline) does not
// match the desired state: "configured, not yet booted" versus "done".
package grubarg

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"nksrun/engine/module"
	"nksrun/engine/shell"
	"nksrun/modules/modutil"
	"nksrun/modules/nodeutil"
)

// Params are grub_arg's parameters.
type Params struct {
	// Arg is one kernel argument, e.g. cgroup.memory=nokmem.
	Arg string `yaml:"arg" nks:"required"`
	// State is present (default) or absent.
	State string `yaml:"state,omitempty"`
	// Variable is the /etc/default/grub variable (default GRUB_CMDLINE_LINUX).
	Variable string `yaml:"variable,omitempty"`
	// File is the defaults file (default /etc/default/grub).
	File string `yaml:"file,omitempty"`
	// GrubCfg overrides the generated config's path (default: the live one
	// for the OS family: the EFI grub.cfg when the node boots with EFI and
	// has a full one there, else /boot/grub2/grub.cfg or /boot/grub/grub.cfg).
	GrubCfg string `yaml:"grub_cfg,omitempty"`
	// Regenerate overrides the command that regenerates GrubCfg (run as root
	// through sh -c).
	Regenerate string `yaml:"regenerate,omitempty"`
}

// Module is grub_arg.
type Module struct{}

// New is the registry factory.
func New() module.Module { return module.Adapt[Params](Module{}) }

var _ module.Typed[Params] = Module{}

func (Module) Scope() module.Scope { return module.ScopeNode }

// Outputs are the keys later steps read as steps.<id>.<key>: whether the running kernel lacks the change (reboot_required) and what was edited.
func (Module) Outputs() []string {
	return []string{"reboot_required", "config_changed", "in_cmdline", "grub_cfg"}
}

func defaults(p *Params) Params {
	d := *p
	if d.State == "" {
		d.State = "present"
	}
	if d.Variable == "" {
		d.Variable = "GRUB_CMDLINE_LINUX"
	}
	if d.File == "" {
		d.File = "/etc/default/grub"
	}
	return d
}

func (Module) Validate(params *Params) error {
	ps := defaults(params)
	if err := ValidArg(ps.Arg); err != nil {
		return err
	}
	switch {
	case ps.State != "present" && ps.State != "absent":
		return fmt.Errorf("state %q: want present or absent", ps.State)
	case !varRE.MatchString(ps.Variable):
		return fmt.Errorf("variable %q is not a shell variable name", ps.Variable)
	case !path.IsAbs(ps.File) || path.Clean(ps.File) != ps.File:
		return fmt.Errorf("file %q must be a clean absolute path", ps.File)
	case ps.GrubCfg != "" && (!path.IsAbs(ps.GrubCfg) || path.Clean(ps.GrubCfg) != ps.GrubCfg):
		return fmt.Errorf("grub_cfg %q must be a clean absolute path", ps.GrubCfg)
	}
	return nil
}

const (
	probeFile  = "file"
	probeBoot  = "boot"
	exitAbsent = 44
)

// countFunc defines `count CFG ARG`, printing "N H": how many boot entries
// CFG has and how many of them carry ARG. BLS configs (RHEL 8+: grub.cfg
// only says blscfg) are counted from /boot/loader/entries, with $kernelopts
// taken from grubenv.
const countFunc = `count() {
	[ -f "$1" ] || { echo "0 0"; return; }
	set -- "$1" "$2" "$(awk -v a="$2" '/^[[:space:]]*linux(efi|16)?[[:space:]]/ { n++; for (i = 3; i <= NF; i++) if ($i == a) { h++; break } } /^[^#]*blscfg/ { b = 1 } END { print n+0, h+0, b+0 }' "$1")"
	case $3 in
	"0 "*" 1")
		ko=$(sed -n 's/^kernelopts=//p' "$(dirname "$1")/grubenv" 2>/dev/null | head -n 1)
		cat /boot/loader/entries/*.conf 2>/dev/null | awk -v a="$2" -v ko="$ko" '/^options[[:space:]]/ { n++; s = $0; sub(/^options[[:space:]]+/, "", s); gsub(/\$kernelopts/, ko, s); m = split(s, w, /[[:space:]]+/); for (i = 1; i <= m; i++) if (w[i] == a) { h++; break } } END { print n+0, h+0 }' ;;
	*) echo "${3% *}" ;;
	esac
}
`

func candidates(p Params) []string {
	c := []string{"/boot/grub2/grub.cfg", "/boot/grub/grub.cfg"}
	if p.GrubCfg != "" {
		c = append([]string{p.GrubCfg}, c...)
	}
	return c
}

func (Module) Probes(t module.Target, _ string, params *Params) ([]module.Probe, error) {
	p := defaults(params)
	f := shell.Quote(p.File)
	var b strings.Builder
	b.WriteString(countFunc)
	fmt.Fprintf(&b, "a=%s\n", shell.Quote(p.Arg))
	b.WriteString("[ -d /sys/firmware/efi ] && echo efi=yes\n")
	// The live EFI config is a full one (RHEL 7/8); RHEL 9 and Ubuntu keep
	// a stub there that only chains to /boot/grub*/grub.cfg.
	b.WriteString("for c in /boot/efi/EFI/*/grub.cfg; do [ -f \"$c\" ] || continue; grep -q '^[[:space:]]*configfile' \"$c\" && continue; echo \"efi_cfg=$c\"; echo \"cfg:$c=$(count \"$c\" \"$a\")\"; [ -e \"$c.new\" ] && echo \"new:$c=yes\"; done\n")
	for _, c := range candidates(p) {
		q := shell.Quote(c)
		fmt.Fprintf(&b, "if [ -f %[1]s ]; then echo \"cfg:\"%[1]s\"=$(count %[1]s \"$a\")\"; [ -e %[1]s.new ] && echo \"new:\"%[1]s\"=yes\"; grep -qs '^[^#]*blscfg' %[1]s && echo \"bls:\"%[1]s\"=yes\"; fi\n", q)
	}
	b.WriteString("for c in grub2-mkconfig grub-mkconfig update-grub grubby; do p=$(command -v \"$c\" 2>/dev/null) && echo \"cmd:$c=$p\"; done\ntrue\n")
	return []module.Probe{
		{Key: probeFile, Command: fmt.Sprintf("[ -e %[1]s ] || exit %[2]d; cat %[1]s", f, exitAbsent), Sudo: true},
		{Key: probeBoot, Command: b.String(), Sudo: true},
	}, nil
}

// boot is what the boot probe found.
type boot struct {
	efi     bool
	efiCfg  string
	cfgs    map[string][2]int // path -> entries, entries with the arg
	leftNew map[string]bool
	bls     map[string]bool // grub.cfg reads the boot entries from /boot/loader/entries (BLS)
	cmds    map[string]string
}

func parseBoot(out []byte) boot {
	b := boot{cfgs: map[string][2]int{}, leftNew: map[string]bool{}, bls: map[string]bool{}, cmds: map[string]string{}}
	for _, l := range strings.Split(string(out), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(l), "=")
		if !ok {
			continue
		}
		switch {
		case k == "efi":
			b.efi = v == "yes"
		case k == "efi_cfg":
			if b.efiCfg == "" {
				b.efiCfg = v
			}
		case strings.HasPrefix(k, "cfg:"):
			f := strings.Fields(v)
			if len(f) == 2 {
				n, _ := strconv.Atoi(f[0])
				h, _ := strconv.Atoi(f[1])
				b.cfgs[k[4:]] = [2]int{n, h}
			}
		case strings.HasPrefix(k, "new:"):
			b.leftNew[k[4:]] = true
		case strings.HasPrefix(k, "bls:"):
			b.bls[k[4:]] = true
		case strings.HasPrefix(k, "cmd:"):
			b.cmds[k[4:]] = v
		}
	}
	return b
}

// target decides the live grub.cfg and the command that regenerates it.
//
// A RHEL-family config in the BLS layout (RHEL/Rocky 8 and later: grub.cfg
// only says blscfg, the kernel arguments live in /boot/loader/entries/*.conf,
// which grub2-mkconfig does not rewrite on RHEL 9) is updated with grubby,
// the distribution's tool for it, on every installed kernel's entry; the
// edited /etc/default/grub still carries the argument for kernels installed
// later.
func target(p Params, family string, b boot) (cfg, regen string, err error) {
	cfg = p.GrubCfg
	if cfg == "" {
		switch family {
		case "rhel":
			cfg = "/boot/grub2/grub.cfg"
			if b.efi && b.efiCfg != "" {
				cfg = b.efiCfg
			}
		case "debian":
			cfg = "/boot/grub/grub.cfg"
		default:
			return "", "", errors.New("unknown OS family (neither RHEL-like nor Debian-like): set grub_cfg and regenerate")
		}
	}
	regen = p.Regenerate
	if regen == "" {
		switch {
		case family == "debian" && cfg == "/boot/grub/grub.cfg" && b.cmds["update-grub"] != "":
			regen = "update-grub"
		case family == "debian" && b.cmds["grub-mkconfig"] != "":
			regen = "grub-mkconfig -o " + shell.Quote(cfg)
		case family == "debian":
			return "", "", errors.New("neither update-grub nor grub-mkconfig is installed (set regenerate)")
		case b.bls[cfg] && b.cmds["grubby"] != "":
			flag := "--args="
			if p.State == "absent" {
				flag = "--remove-args="
			}
			regen = "grubby --update-kernel=ALL " + shell.Quote(flag+p.Arg)
		case b.bls[cfg]:
			return "", "", fmt.Errorf("%s uses the BLS layout (blscfg) but grubby is not installed (set regenerate)", cfg)
		case b.cmds["grub2-mkconfig"] != "":
			regen = "grub2-mkconfig -o " + shell.Quote(cfg)
		default:
			return "", "", errors.New("grub2-mkconfig is not installed (set regenerate)")
		}
	}
	return cfg, regen, nil
}

type data struct {
	Content string `json:"content"`
	Hash    string `json:"sha256"`
	GrubCfg string `json:"grub_cfg"`
	Regen   string `json:"regenerate"`
	// Undo puts the boot entries back after a failed check when Regen
	// edits them in place (grubby); empty: Regen from the restored file.
	Undo string `json:"undo,omitempty"`
	Edit bool   `json:"edit"`
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func (Module) Plan(ctx context.Context, t module.Target, _ string, params *Params, probes map[string]module.ProbeResult) (module.Planned, error) {
	p := defaults(params)
	present := p.State == "present"
	fr := probes[probeFile]
	if fr.ExitCode == exitAbsent {
		if !present {
			return module.Planned{Action: module.NoOp, Summary: fmt.Sprintf("%s absent: %s not set", p.File, p.Arg),
				Outputs: map[string]any{"reboot_required": nodeutil.HasWord(nodeutil.HostString(t.Node, "cmdline"), p.Arg), "config_changed": false}}, nil
		}
		return module.Planned{}, fmt.Errorf("%s does not exist (is this node booted by GRUB?)", p.File)
	}
	if fr.ExitCode != 0 {
		return module.Planned{}, fmt.Errorf("reading %s failed (exit %d)", p.File, fr.ExitCode)
	}
	old := fr.Output
	if !present {
		// GRUB puts both cmdline variables on the kernel's line: removing
		// an argument from one while the other still sets it can never
		// converge (every apply would fail its check and restore).
		other := "GRUB_CMDLINE_LINUX_DEFAULT"
		if p.Variable == other {
			other = "GRUB_CMDLINE_LINUX"
		}
		if words, err := Words(old, other); err == nil && slices.Contains(words, p.Arg) {
			return module.Planned{}, fmt.Errorf("%s: %s is also set in %s, which this step does not edit: removing it from %s alone cannot take effect (add a step with variable: %s)", p.File, p.Arg, other, p.Variable, other)
		}
	}
	newContent, err := Edit(old, p.Variable, p.Arg, present)
	if err != nil {
		return module.Planned{}, fmt.Errorf("%s: %w", p.File, err)
	}
	b := parseBoot(probes[probeBoot].Output)
	cfg, regen, err := target(p, nodeutil.GrubFlavor(t.Node), b)
	if err != nil {
		return module.Planned{}, err
	}
	counts, cfgExists := b.cfgs[cfg]
	cfgOK := cfgExists && (present && counts[0] > 0 && counts[1] == counts[0] || !present && counts[1] == 0)
	cmdline := nodeutil.HostString(t.Node, "cmdline")
	inCmdline := nodeutil.HasWord(cmdline, p.Arg)
	rebootRequired := inCmdline != present
	edit := !bytes.Equal(old, newContent)

	out := module.Planned{
		Fingerprint: map[string]string{"sha256": sum(old)},
		Outputs: map[string]any{
			"reboot_required": rebootRequired,
			"config_changed":  edit || !cfgOK,
			"in_cmdline":      inCmdline,
			"grub_cfg":        cfg,
		},
	}
	verb, prep := "add", "to"
	if !present {
		verb, prep = "remove", "from"
	}
	booted := "booted (in /proc/cmdline)"
	if rebootRequired {
		booted = "not yet booted: reboot required"
	}
	if !edit && cfgOK {
		out.Action = module.NoOp
		has := "has"
		if !present {
			has = "lacks"
		}
		out.Summary = fmt.Sprintf("%s %s %s and %s; %s", p.File, has, p.Arg, cfg, booted)
		return out, nil
	}
	out.Action = module.Change
	switch {
	case edit:
		out.Summary = fmt.Sprintf("%s %s %s %s in %s, then %s", verb, p.Arg, prep, p.Variable, p.File, regen)
		out.Diff = modutil.Diff(old, newContent, p.File, p.File)
		out.Reason = fmt.Sprintf("%s %s %s", p.Variable, map[bool]string{true: "lacks", false: "has"}[present], p.Arg)
	case !cfgExists:
		out.Summary = fmt.Sprintf("%s is configured; %s (%s does not exist)", p.File, regen, cfg)
		out.Reason = cfg + " is missing"
	default:
		out.Summary = fmt.Sprintf("%s is configured; %s (%d of %d boot entries have %s)", p.File, regen, counts[1], counts[0], p.Arg)
		out.Reason = cfg + " does not match " + p.File
	}
	if b.leftNew[cfg] {
		out.Reason += fmt.Sprintf("; %s.new is left over from an earlier failed run (removed before regenerating)", cfg)
	}
	undo := ""
	if strings.HasPrefix(regen, "grubby ") {
		undo = strings.Replace(strings.Replace(regen, "'--args=", "'--UNDO=", 1), "'--remove-args=", "'--args=", 1)
		undo = strings.Replace(undo, "'--UNDO=", "'--remove-args=", 1)
	}
	out.Data, err = json.Marshal(data{Content: string(newContent), Hash: sum(newContent), GrubCfg: cfg, Regen: regen, Edit: edit, Undo: undo})
	return out, err
}

// Exit codes of the apply script.
const (
	exitCorrupt = 93
	exitStale   = 95
	exitLock    = 96
	exitRegen   = 97
	exitRestore = 98
)

func applyScript(p Params, d data, planned string) string {
	var b strings.Builder
	want := "present"
	if p.State == "absent" {
		want = "absent"
	}
	b.WriteString("set -u\numask 022\n")
	b.WriteString(countFunc)
	fmt.Fprintf(&b, "f=%s\ncfg=%s\na=%s\nwant=%s\nplanned=%s\nnew=%s\n", shell.Quote(p.File), shell.Quote(d.GrubCfg), shell.Quote(p.Arg), want, planned, d.Hash)
	fmt.Fprintf(&b, "regen() { %s\n}\n", d.Regen)
	undo := d.Undo
	if undo == "" {
		undo = "regen"
	}
	fmt.Fprintf(&b, "undo() { %s\n}\n", undo)
	b.WriteString(`cfg_ok() {
	set -- $(count "$cfg" "$a")
	if [ "$want" = present ]; then [ "$1" -gt 0 ] && [ "$2" = "$1" ]; else [ "$2" = 0 ]; fi
}
`)
	// One apply per node at a time, whoever runs it (two nksrun processes).
	fmt.Fprintf(&b, `exec 9<"$(dirname "$f")"
if command -v flock >/dev/null 2>&1 && ! flock -w 120 9; then echo "another process holds the lock on $(dirname "$f") for 120s" >&2; exit %d; fi
`, exitLock)
	fmt.Fprintf(&b, `tmp=$(mktemp "$f.nksrun.XXXXXX") || exit 1
bak=
trap 'rm -f "$tmp"' EXIT
trap 'rm -f "$tmp"; exit 1' HUP INT TERM PIPE
cat >"$tmp" || exit 1
got=$(sha256sum <"$tmp"); got=${got%%%% *}
if [ "$got" != "$new" ]; then echo "upload incomplete or corrupted (sha256 $got)" >&2; exit %d; fi
cur=absent; if [ -e "$f" ]; then cur=$(sha256sum <"$f"); cur=${cur%%%% *}; fi
if [ "$cur" != "$planned" ] && [ "$cur" != "$new" ]; then echo "$f changed since the plan (sha256 $cur)" >&2; exit %d; fi
edited=no
if [ "$cur" != "$new" ]; then
	bak="$f.nksrun-$(date +%%Y%%m%%d%%H%%M%%S).bak"
	cp -p "$f" "$bak" || { echo "backing up $f failed; nothing changed" >&2; bak=; exit 1; }
	chmod --reference="$f" "$tmp" && chown --reference="$f" "$tmp" || exit 1
	mv -f "$tmp" "$f" || { rm -f "$bak"; exit 1; }
	edited=yes
fi
restore() {
	[ -n "$bak" ] || return 0
	if cp -p "$bak" "$f.nksrun-restore" && mv -f "$f.nksrun-restore" "$f"; then rm -f "$bak"; return 0; fi
	echo "RESTORING $f FAILED: the original is in $bak" >&2
	exit %d
}
rm -f "$cfg.new"
out=$(regen 2>&1 </dev/null); rc=$?
why=
if [ $rc -ne 0 ]; then why="the command exited $rc"
elif [ -e "$cfg.new" ]; then why="it left $cfg.new behind"
elif ! cfg_ok; then why="the generated $cfg does not have $a $want in every boot entry ($(count "$cfg" "$a") entries/matching)"
fi
if [ -n "$why" ]; then
	restore
	rm -f "$cfg.new"
	if [ $rc -eq 0 ] && [ "$edited" = yes ]; then undo >/dev/null 2>&1 </dev/null; rm -f "$cfg.new"; fi
	msg="regenerating $cfg failed: $why"
	[ "$edited" = yes ] && msg="$msg; $f restored from its backup"
	printf '%%s\n%%s\n' "$msg" "$out" >&2
	exit %d
fi
echo "edited=$edited"
echo "backup=$bak"
`, exitCorrupt, exitStale, exitRestore, exitRegen)
	return b.String()
}

func (Module) Apply(ctx context.Context, t module.Target, _ string, params *Params, pl module.Planned) (module.Applied, error) {
	p := defaults(params)
	var d data
	if err := json.Unmarshal(pl.Data, &d); err != nil {
		return module.Applied{}, fmt.Errorf("plan data: %w", err)
	}
	if sum([]byte(d.Content)) != d.Hash {
		return module.Applied{}, errors.New("plan data does not match its hash")
	}
	res, err := t.Node.Runner.Run(ctx, applyScript(p, d, pl.Fingerprint["sha256"]), module.RunOpts{Sudo: true, Stdin: strings.NewReader(d.Content), Timeout: 5 * time.Minute})
	if err != nil {
		return module.Applied{}, fmt.Errorf("editing %s: %w", p.File, err)
	}
	msg := strings.TrimSpace(string(res.Stderr))
	switch res.ExitCode {
	case 0:
	case exitStale:
		return module.Applied{}, fmt.Errorf("%w: %s", module.ErrStale, msg)
	case exitRegen:
		return module.Applied{}, errors.New(msg)
	case exitRestore:
		return module.Applied{}, fmt.Errorf("CRITICAL: %s", msg)
	default:
		return module.Applied{}, fmt.Errorf("editing %s: exit %d: %s", p.File, res.ExitCode, msg)
	}
	kv := map[string]string{}
	for _, l := range strings.Split(string(res.Stdout), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			kv[k] = v
		}
	}
	summary := pl.Summary
	if kv["edited"] == "no" && d.Edit {
		summary = fmt.Sprintf("%s already had the change (made concurrently); regenerated %s", p.File, d.GrubCfg)
	} else if kv["backup"] != "" {
		summary += " (backup " + kv["backup"] + ")"
	}
	outs := map[string]any{}
	for k, v := range pl.Outputs {
		outs[k] = v
	}
	return module.Applied{Changed: true, Summary: summary, Outputs: outs}, nil
}
