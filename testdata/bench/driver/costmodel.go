package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"strings"

	"nksrun/testdata/testbed"
)

// The cost model: what one more exec, sudo, or shell command costs on the
// nodes, measured with the floor program (-cmd/-execs/-stdin) over the same
// 200 connections. The scripts mirror, line for line, what nksrun sends
// today (engine/facts.go runProbes, modules/filesync installScript), plus
// leaner variants, so a proposed change can be priced before it is made.

func q(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// probeScript is engine/facts.go's one-exec fact script for these commands.
func probeScript(cmds []string) string {
	const boundary = "--nksrun-0123456789abcdef01234567"
	var b strings.Builder
	for i, c := range cmds {
		fmt.Fprintf(&b, "printf '%%s\\n' '%s %d'\n( %s\n) </dev/null 2>/dev/null\nprintf '\\n%s rc=%%d\\n' $?\n", boundary, i, c, boundary)
	}
	return b.String()
}

var (
	builtinCmds = []string{"cat /proc/sys/kernel/random/boot_id", "cat /proc/cmdline", "uname -r", ". /etc/os-release 2>/dev/null && echo \"$ID\""}
	factCmd     = "sha256sum /etc/logrotate.d/docker | cut -d' ' -f1"
	stateCmd    = `if [ -e '/etc/logrotate.d/docker' ]; then h=$(sha256sum '/etc/logrotate.d/docker') && printf '%s %s\n' "${h%% *}" "$(stat -c '%a %U %G' '/etc/logrotate.d/docker')"; else echo absent; fi`
	contentCmd  = "head -c 65537 '/etc/logrotate.d/docker'"
)

// installScript mirrors filesync.installScript before the install(1)
// change (validate logrotate -d %s, backup true, 0644 root:root).
func installScript(hash string) string {
	return `set -eu
umask 077
dest='/etc/logrotate.d/docker'
dir=${dest%/*}; dir=${dir:-/}; base=${dest##*/}
tmp=$(mktemp --suffix='~' "$dir/.nksrun-$base.XXXXXX")
trap 'rm -f "$tmp"' EXIT
trap 'rm -f "$tmp"; exit 1' HUP INT TERM PIPE
cat > "$tmp"
got=$(sha256sum "$tmp"); if [ "${got%% *}" != ` + hash + ` ]; then echo "upload incomplete or corrupted (sha256 ${got%% *})" >&2; exit 93; fi
chown 'root':'root' "$tmp"
chmod '0644' "$tmp"
if ! out=$(logrotate -d "$tmp" 2>&1); then printf 'validate failed: %s\n' "$out" >&2; exit 94; fi
cur=absent; if [ -L "$dest" ]; then cur=symlink; elif [ -e "$dest" ]; then cur=$(sha256sum "$dest"); cur=${cur%% *}; fi
if [ "$cur" != ` + hash + ` ] && [ "$cur" != ` + hash + ` ]; then echo "destination changed since the plan (sha256 $cur)" >&2; exit 95; fi
if [ -e "$dest" ]; then cp -p "$dest" "$dest.20260101000000.nksrun-backup~"; fi
mv -f "$tmp" "$dest"
trap - EXIT
`
}

// installOneStep is installScript with install(1) writing the temp file
// with its mode and owner (instead of mktemp, cat, chown and chmod).
func installOneStep(hash string) string {
	s := installScript(hash)
	s = strings.Replace(s, `tmp=$(mktemp --suffix='~' "$dir/.nksrun-$base.XXXXXX")`, `tmp="$dir/.nksrun-$base.0123456789ab~"`, 1)
	s = strings.Replace(s, "cat > \"$tmp\"\n", "install -m '0644' -o 'root' -g 'root' /dev/stdin \"$tmp\"\n", 1)
	s = strings.Replace(s, "chown 'root':'root' \"$tmp\"\nchmod '0644' \"$tmp\"\n", "", 1)
	return s
}

// leanInstallScript is the same contract with fewer processes: no
// dirname/basename/$(...) subshells (parameter expansion instead), one
// sha256sum for tmp and dest together, chown+chmod via install(1)-free
// builtins where possible.
func leanInstallScript(hash string) string {
	return `set -eu
umask 077
dest='/etc/logrotate.d/docker'
tmp=$(mktemp "${dest%/*}/.nksrun-${dest##*/}.XXXXXX")
trap 'rm -f "$tmp"' EXIT
trap 'rm -f "$tmp"; exit 1' HUP INT TERM PIPE
cat > "$tmp"
chown 'root':'root' "$tmp"; chmod 0644 "$tmp"
if ! out=$(logrotate -d "$tmp" 2>&1); then printf 'validate failed: %s\n' "$out" >&2; exit 94; fi
[ -e "$dest" ] || : >/dev/null
set -- $(sha256sum "$tmp" "$dest" 2>/dev/null || true)
[ "${1:-}" = ` + hash + ` ] || { echo "upload incomplete or corrupted (sha256 ${1:-})" >&2; exit 93; }
cur=${3:-absent}
if [ "$cur" != absent ] && [ "$cur" != ` + hash + ` ]; then echo "destination changed since the plan (sha256 $cur)" >&2; exit 95; fi
[ "$cur" = absent ] || cp -p "$dest" "$dest.nksrun-bak"
mv -f "$tmp" "$dest"
trap - EXIT
`
}

func sudoSh(script string) string { return "sudo -n -- sh -c " + q(script) }

func costModel(tb *testbed.Testbed, floorArgs func(string) []string, src string) error {
	content, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(content)
	hash := hex.EncodeToString(sum[:])
	planProbes := append(append(append([]string{}, builtinCmds...), factCmd, stateCmd), contentCmd)
	cases := []struct {
		name  string
		cmd   string
		execs int
		stdin bool
		then  string // a second command on the same connection (gets the stdin)
	}{
		{"conn + exec `true` (no sudo)", "true", 1, false, ""},
		{"conn + exec `sudo -n true`", "sudo -n true", 1, false, ""},
		{"conn + 2 × `sudo -n true`", "sudo -n true", 2, false, ""},
		{"conn + 3 × `sudo -n true`", "sudo -n true", 3, false, ""},
		{"floor plan: conn + `sudo -n sha256sum`", "sudo -n sha256sum /etc/logrotate.d/docker", 1, false, ""},
		{"nksrun plan exec: 7 probes", sudoSh(probeScript(planProbes)), 1, false, ""},
		{"nksrun verify exec: 4 built-ins + 1 fact", sudoSh(probeScript(append(append([]string{}, builtinCmds...), factCmd))), 1, false, ""},
		{"verify, lean: the 1 fact only", sudoSh(probeScript([]string{factCmd})), 1, false, ""},
		{"floor apply: conn + cat > tmp && mv", "sudo -n sh -c 'cat > /etc/logrotate.d/.floor-docker.tmp && mv -f /etc/logrotate.d/.floor-docker.tmp /etc/logrotate.d/docker'", 1, true, ""},
		{"install exec before install(1): mktemp, cat, chown, chmod", sudoSh(installScript(hash)), 1, true, ""},
		{"install, lean variant", sudoSh(leanInstallScript(hash)), 1, true, ""},
		{"nksrun install exec (install(1), validate, backup)", sudoSh(installOneStep(hash)), 1, true, ""},
		{"apply as two execs: plan exec, then install exec", sudoSh(probeScript(planProbes)), 1, true, sudoSh(installScript(hash))},
		{"apply in one sudo: plan, then install (a root shell kept open)", sudoSh(probeScript(planProbes) + "\nsh -c " + q(installScript(hash))), 1, true, ""},
		{"install without `logrotate -d`", sudoSh(strings.Replace(installScript(hash), "logrotate -d", "true", 1)), 1, true, ""},
	}
	fmt.Printf("\nCost model, %d nodes: node-side CPU (sshd, sudo, shells, commands) per node; the first rows give the price of a connection, an exec and a sudo.\n\n", len(tb.Nodes))
	fmt.Println("| what each node runs | node CPU / node | wall |")
	fmt.Println("|---|---:|---:|")
	for _, c := range cases {
		args := append(floorArgs("plan"), "-cmd", c.cmd, "-execs", fmt.Sprint(c.execs))
		if c.stdin {
			args = append(args, "-stdin")
		}
		if c.then != "" {
			args = append(args, "-then", c.then)
		}
		var cpu, wall []float64
		for range 3 {
			s, err := measureNodes(tb, *floorBin, args)
			if err == nil && s.exit != 0 {
				err = fmt.Errorf("exit %d:\n%s", s.exit, lastLines(string(s.stderr), 10))
			}
			if err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			cpu = append(cpu, s.nodes.Seconds()*1000/float64(len(tb.Nodes)))
			wall = append(wall, s.wall.Seconds())
		}
		fmt.Printf("| %s | %.1f ms | %.2f s |\n", c.name, statOf(cpu).med, statOf(wall).med)
	}
	return nil
}
