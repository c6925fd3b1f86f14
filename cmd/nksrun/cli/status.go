package cli

// nksrun status and nksrun unlock: what interrupted or killed rollouts left
// in a cluster (reboot slots, nodes nksrun cordoned, nodes rebooted but not
// back), and clearing it like terraform force-unlock.

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"nksrun/engine/module"
	"nksrun/engine/views"
	"nksrun/modules/reboot"
)

func init() {
	commands = append(commands,
		command{name: "status", summary: "show what rollouts left in the cluster: reboot slots, nodes nksrun cordoned, nodes not back from a reboot", usage: "status [flags]",
			example: "  nksrun status\n  nksrun status -o json", run: runStatus, flags: statusFlags, formats: []string{"text", "json"}},
		command{name: "unlock", summary: "release reboot slots and uncordon the nodes nksrun cordoned (asks first; --force for a live holder)", usage: "unlock [flags]",
			example: "  nksrun unlock\n  nksrun unlock --auto-approve --force   # the holder is known to be dead", run: runUnlock, flags: unlockFlags, formats: []string{"text", "json"}},
	)
}

func statusFlags(fs *pflag.FlagSet, o *options) {
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (default $KUBECONFIG, then ~/.kube/config)")
	contextFlags(fs, o)
	outputFlag(fs, o, "text or json")
}

func unlockFlags(fs *pflag.FlagSet, o *options) {
	statusFlags(fs, o)
	fs.BoolVar(&o.autoApprove, "auto-approve", false, "do not ask for confirmation")
	fs.BoolVar(&o.force, "force", false, "also release slots whose holder still renews them (it may be alive: make sure it is not)")
}

func runStatus(ctx context.Context, a *app, args []string) error {
	if len(args) > 0 {
		return usageError{"status takes no arguments"}
	}
	if a.opts.format != "text" && a.opts.format != "json" {
		return usageError{fmt.Sprintf("--format %q: want text or json", a.opts.format)}
	}
	cluster, err := connectCluster(a.opts.kubeconfig, a.opts.kubeContext())
	if err != nil {
		return err
	}
	st, err := reboot.Status(ctx, cluster)
	if err != nil {
		return err
	}
	if a.opts.format == "json" {
		return views.WriteJSON(a.stdout, st)
	}
	return writeState(a.stdout, st, time.Now())
}

// writeState prints a reboot State for people; "nothing" when clean.
func writeState(w io.Writer, st reboot.State, now time.Time) error {
	if st.Empty() {
		_, err := fmt.Fprintln(w, "No reboot slot held, no node cordoned by nksrun, no node waiting to come back.")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	ago := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return now.Sub(t).Round(time.Second).String() + " ago"
	}
	if len(st.Slots) > 0 {
		fmt.Fprintln(tw, "REBOOT SLOT\tHOLDER\tNODE\tPHASE\tSINCE\tRENEWED\tSTATE")
		for _, s := range st.Slots {
			state := "held (holder alive)"
			switch {
			case s.Halted != "":
				state = "halted: " + s.Halted
			case s.Expired:
				state = "expired: the next run takes it over"
			}
			fmt.Fprintf(tw, "%s/%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Namespace, s.Name, s.Holder, dash(s.Node), dash(s.Phase), ago(s.Since), ago(s.RenewTime), state)
		}
		fmt.Fprintln(tw)
	}
	nodes := func(title string, ns []reboot.NodeState) {
		if len(ns) == 0 {
			return
		}
		fmt.Fprintf(tw, "%s\tHOLDER\tSINCE\tREADY\tWHY\n", title)
		for _, n := range ns {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\n", n.Name, dash(n.Holder), ago(n.Since), n.Ready, dash(n.Why))
		}
		fmt.Fprintln(tw)
	}
	nodes("CORDONED BY NKSRUN", st.Cordoned)
	nodes("REBOOTED, NOT BACK", st.Rebooting)
	nodes("STALE NKSRUN MARK", st.Stale)
	nodes("UNVERIFIED CORDON", st.Unverified)
	fmt.Fprintln(tw, "`nksrun unlock` releases the slots and uncordons what nksrun cordoned (a live holder's only with --force).")
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func runUnlock(ctx context.Context, a *app, args []string) error {
	if len(args) > 0 {
		return usageError{"unlock takes no arguments"}
	}
	if a.opts.format != "text" && a.opts.format != "json" {
		return usageError{fmt.Sprintf("--format %q: want text or json", a.opts.format)}
	}
	if !a.opts.autoApprove && !isTerminal(a.stdin) {
		return exitError{ExitError, "nksrun unlock: no terminal to confirm on; pass --auto-approve"}
	}
	cluster, err := connectCluster(a.opts.kubeconfig, a.opts.kubeContext())
	if err != nil {
		return err
	}
	st, err := reboot.Status(ctx, cluster)
	if err != nil {
		return err
	}
	if st.Empty() {
		_, err := fmt.Fprintln(a.stdout, "Nothing to unlock.")
		return err
	}
	if err := writeState(a.stdout, st, time.Now()); err != nil {
		return err
	}
	if !a.opts.autoApprove {
		ok, err := ask(a.stdin, a.stderr, "\nRelease these slots and uncordon the nodes nksrun cordoned? Only 'yes' is accepted: ")
		if err != nil || !ok {
			return exitError{ExitError, "unlock canceled; nothing was changed"}
		}
	}
	res, err := reboot.Unlock(ctx, cluster, a.opts.force)
	if err != nil {
		return err
	}
	if a.opts.format == "json" {
		return views.WriteJSON(a.stdout, res)
	}
	for _, l := range []struct {
		what  string
		items []string
	}{{"released", res.Released}, {"uncordoned", res.Uncordoned}, {"cleaned", res.Cleaned}, {"kept", res.Kept}} {
		if len(l.items) > 0 {
			fmt.Fprintf(a.stdout, "%s: %s\n", l.what, strings.Join(l.items, ", "))
		}
	}
	if len(res.Kept) > 0 && !a.opts.force {
		return exitError{ExitError, "nksrun unlock: some slots are held by a run that still renews them (see kept); stop it, or pass --force if it is gone"}
	}
	return nil
}

// leftovers are what earlier rollouts left in the cluster (held reboot
// slots, nodes nksrun cordoned, nodes not back from a reboot): pending work
// that plan and doctor show next to the plan. Nil without a cluster or when
// the state cannot be read (it is reported, never fatal).
func (a *app) leftovers(ctx context.Context) []module.FindingInfo {
	return a.leftoversOf(ctx, lastCluster.Load(), "")
}

// leftoversOf is leftovers of cluster c; where names the cluster in the
// warning of a many-cluster run ("" for one cluster).
func (a *app) leftoversOf(ctx context.Context, c *module.Cluster, where string) []module.FindingInfo {
	if c == nil || ctx.Err() != nil {
		return nil
	}
	fs, err := reboot.Findings(ctx, c)
	if err != nil {
		fmt.Fprintf(a.stderr, "WARNING: %scould not read what earlier rollouts left (%v); `nksrun status` shows it\n", where, err)
		return nil
	}
	return fs
}

// writeLeftovers prints leftovers after a plan or doctor table.
func writeLeftovers(w io.Writer, fs []module.FindingInfo) {
	if len(fs) == 0 {
		return
	}
	fmt.Fprintln(w, "\nLeft by earlier runs (pending; `nksrun status`, `nksrun unlock`):")
	for _, f := range fs {
		fmt.Fprintf(w, "  ! %s: %s\n", f.Severity, f.Title)
		for _, e := range f.Evidence {
			fmt.Fprintf(w, "      - %s\n", e)
		}
		if f.Recommendation != "" {
			fmt.Fprintf(w, "      → %s\n", f.Recommendation)
		}
	}
}
