package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"nksrun/engine/module"
	"nksrun/engine/transport"
	"nksrun/inventory"
)

// The completion scripts ask the binary (`nksrun __complete WORDS...`) for
// candidates, so they always match the installed version: commands, the
// flags of a command, the values of -o and the other enumerated flags, and
// runbook names (built-in and --runbook-dir), node names after --limit
// (see nodeNames). Files are completed by the shell as usual.
const bashCompletion = `# bash completion for nksrun: source <(nksrun completion bash)
_nksrun() {
    local cur="${COMP_WORDS[COMP_CWORD]}"
    local IFS=$'\n'
    COMPREPLY=($(compgen -W "$(nksrun __complete "${COMP_WORDS[@]:1:COMP_CWORD-1}" 2>/dev/null)" -- "$cur"))
}
complete -o default -o bashdefault -F _nksrun nksrun
`

const zshCompletion = `#compdef nksrun
# zsh completion for nksrun: nksrun completion zsh > "${fpath[1]}/_nksrun"
_nksrun() {
    local -a cands
    cands=("${(@f)$(nksrun __complete "${(@)words[2,CURRENT-1]}" 2>/dev/null)}")
    compadd -a cands
    _files
}
if [ "$funcstack[1]" = "_nksrun" ]; then
    _nksrun "$@"
else
    compdef _nksrun nksrun
fi
`

const fishCompletion = `# fish completion for nksrun: nksrun completion fish > ~/.config/fish/completions/nksrun.fish
complete -c nksrun -a '(nksrun __complete (commandline -opc)[2..-1] 2>/dev/null)'
`

func runCompletion(_ context.Context, a *app, args []string) error {
	if len(args) != 1 {
		return usageError{"want one shell: bash, zsh or fish"}
	}
	switch args[0] {
	case "bash":
		fmt.Fprint(a.stdout, bashCompletion)
	case "zsh":
		fmt.Fprint(a.stdout, zshCompletion)
	case "fish":
		fmt.Fprint(a.stdout, fishCompletion)
	default:
		return usageError{fmt.Sprintf("shell %q: want bash, zsh or fish", args[0])}
	}
	return nil
}

// nodeNames are the nodes --limit can name, where that is cheap: a static
// inventory file, or one list of the cluster's Nodes (bounded by 3 s, as
// kubectl's completion does), with the connection settings of the words
// typed so far, the environment and the config file. Nothing on error.
func (a *app) nodeNames(cmd *command, words []string) []string {
	fs := newFlagSet(cmd, &a.opts)
	fs.ParseErrorsAllowlist.UnknownFlags = true
	_ = fs.Parse(words)
	a.fs = fs
	if a.configure(cmd, fs) != nil {
		return nil
	}
	var hosts []inventory.Host
	var err error
	if a.opts.inventory != "" {
		hosts, err = inventory.FromFile(a.opts.inventory)
	} else {
		var c *module.Cluster
		if c, err = connectCluster(a.opts.kubeconfig, a.opts.kubeContext()); err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			hosts, err = inventory.FromCluster(ctx, c.Clientset)
		}
	}
	if err != nil {
		return nil
	}
	var names []string
	for _, h := range hosts {
		names = append(names, h.Name)
	}
	return names
}

// runComplete prints candidates for the word after args, one a line.
func runComplete(_ context.Context, a *app, args []string) error {
	out := func(c []string) error {
		fmt.Fprintln(a.stdout, strings.Join(c, "\n"))
		return nil
	}
	if len(args) == 0 {
		return out(commandNames())
	}
	cmd := findCommand(args[0])
	if cmd == nil || cmd.hidden {
		return nil
	}
	if cmd.name == "help" {
		return out(commandNames())
	}
	if cmd.name == "completion" {
		return out([]string{"bash", "zsh", "fish"})
	}
	if cmd.name == "config" {
		return out([]string{"view", "path"})
	}
	var o options
	fs := newFlagSet(cmd, &o)
	// The value of the flag just before the cursor.
	if len(args) > 1 {
		prev := args[len(args)-1]
		var f *pflag.Flag
		if name, ok := strings.CutPrefix(prev, "--"); ok {
			f = fs.Lookup(name)
		} else if len(prev) == 2 && prev[0] == '-' {
			f = fs.ShorthandLookup(prev[1:])
		}
		if f != nil && f.Value.Type() != "bool" {
			switch f.Name {
			case "output", "format":
				return out(cmd.formats)
			case "host-key-policy":
				return out([]string{string(transport.PolicyStrict), string(transport.PolicyAcceptNew), string(transport.PolicyInsecure)})
			case "log-format":
				return out([]string{"text", "json"})
			case "on-stale":
				return out([]string{"continue", "stop"})
			case "limit":
				return out(a.nodeNames(cmd, args[1:len(args)-1]))
			}
			return nil // a file or a free value: the shell completes files
		}
	}
	var c []string
	fs.VisitAll(func(f *pflag.Flag) {
		if !f.Hidden {
			c = append(c, "--"+f.Name)
		}
	})
	switch cmd.name {
	case "plan", "apply", "validate", "doctor", "cron":
		c = append(a.runbookNames(), c...)
	case "cat":
		c = append(builtinNames(), c...)
	}
	return out(c)
}
