package cli

import (
	"time"

	"github.com/spf13/pflag"
)

// options are every flag of every command; each command registers the
// groups it uses.
type options struct {
	// cluster and inventory
	kubeconfig      string
	contexts        []string // --context, repeatable on plan and doctor
	allContexts     bool     // --all-contexts
	inventory       string
	limit           []string
	selector        string
	includeNotReady bool
	runbookDir      string

	// ssh
	identities    []string
	user          string
	knownHosts    string
	hostKeyPolicy string
	rootShell     bool
	jump          string
	port          int
	connectTO     time.Duration
	commandTO     time.Duration
	maxOutput     string
	forks         int

	// run
	set         []string
	setFiles    []string
	timeout     time.Duration
	maxFailures int
	format      string
	out         string
	verbose     bool

	// plan
	detailedExitcode bool

	// apply
	autoApprove bool
	force       bool // unlock: also a live holder's slots
	maxPlanAge  time.Duration
	lockFile    string
	noLock      bool
	onStale     string

	// saved-plan signatures and pinning (integrity.go)
	integrity integrityOptions

	// logging and metrics
	logFormat   string
	logFile     string
	metricsFile string

	// cron (cronFlags in cron.go); flags is the parsed flag set, so cron
	// can pass every connection and selection flag on to the line it prints
	flags         *pflag.FlagSet
	cronLogFormat string
	cronLogFile   string
	secretEnv     []string
	schedule      string
	kubernetes    bool
	image         string
	namespace     string
}

func clusterFlags(fs *pflag.FlagSet, o *options) {
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (default $KUBECONFIG, then ~/.kube/config; in-cluster config inside a pod)")
	contextFlags(fs, o)
	fs.StringVar(&o.inventory, "inventory", "", "static inventory YAML instead of the cluster's nodes")
	fs.StringArrayVar(&o.limit, "limit", nil, "only these nodes, Ansible-style: 'a,b,!c' (names, globs like *-node-1, label selectors key=value; ! excludes); repeatable")
	fs.StringVarP(&o.selector, "selector", "l", "", "only nodes with these labels, kubectl-style (-l 'key=value,key2!=value2': all must match)")
	fs.BoolVar(&o.includeNotReady, "include-not-ready", false, "work on NotReady nodes too (skipped by default)")
}

// contextFlags are --context and --all-contexts. Every command that talks
// to a cluster has both, so that two contexts or --all-contexts given to a
// one-cluster command is refused with a clear reason (validate), not as an
// unknown flag; plan and doctor (manyContexts) show and honour them.
func contextFlags(fs *pflag.FlagSet, o *options) {
	fs.StringArrayVar(&o.contexts, "context", nil, "`NAME` of the kubeconfig context to use")
	fs.BoolVar(&o.allContexts, "all-contexts", false, "every context of the kubeconfig (plan and doctor only)")
	_ = fs.MarkHidden("all-contexts")
}

// manyContexts makes --context repeatable and shows --all-contexts.
func manyContexts(fs *pflag.FlagSet) {
	fs.Lookup("context").Usage = "`NAME` of the kubeconfig context to use; repeatable: one run over several clusters, in parallel, one report grouped by cluster (the config file's context is the default, used when none is given)"
	fs.Lookup("all-contexts").Usage = "every context of the kubeconfig, sorted by name, as if each were given with --context"
	fs.Lookup("all-contexts").Hidden = false
}

// kubeContext is the one context of a one-cluster run ("" = the
// kubeconfig's current context).
func (o *options) kubeContext() string {
	if len(o.contexts) == 0 {
		return ""
	}
	return o.contexts[0]
}

func sshFlags(fs *pflag.FlagSet, o *options) {
	fs.StringArrayVarP(&o.identities, "identity", "i", nil, "SSH private key (OpenSSH or PEM, e.g. the NKS keypair .pem); repeatable; ssh-agent is used when SSH_AUTH_SOCK is set")
	fs.StringVar(&o.user, "user", "", "SSH user for every node (default: from the node's OS image: centos, rocky, ubuntu, debian)")
	fs.StringVar(&o.knownHosts, "known-hosts", "", "known_hosts file (default ~/.ssh/known_hosts)")
	fs.StringVar(&o.hostKeyPolicy, "host-key-policy", "strict", "unknown host keys: strict (refuse), accept-new (trust on first use and record), insecure (accept anything; warns)")
	fs.StringVar(&o.jump, "jump", "", "bastion [user@]host[:port] to reach the nodes through")
	fs.IntVar(&o.port, "port", 0, "SSH port of the nodes (default 22)")
	fs.DurationVar(&o.connectTO, "connect-timeout", 10*time.Second, "limit for TCP connect and, separately, the SSH handshake")
	fs.DurationVar(&o.commandTO, "command-timeout", 10*time.Minute, "limit for one command on a node")
	fs.StringVar(&o.maxOutput, "max-output", "16MiB", "most output (stdout+stderr) kept from one command on a node; more fails that node")
	fs.IntVar(&o.forks, "forks", 256, "nodes worked on at once")
}

// rootShellFlag is apply's (and cron's, for the line it prints): plan and
// doctor make one sudo exec per node, which a shell kept open would not
// make cheaper.
func rootShellFlag(fs *pflag.FlagSet, o *options) {
	fs.BoolVar(&o.rootShell, "root-shell", true, "run a node's root commands, one at a time, through one sudo shell kept open for the run: one sudo per node, not one per command (the node's auth log shows that shell once); false: one sudo per command")
}

func runFlags(fs *pflag.FlagSet, o *options) {
	fs.StringArrayVar(&o.set, "set", nil, "runbook param name=value; repeatable (secrets: --set-file or NKSRUN_SET_<NAME>, never on a command line)")
	fs.StringArrayVar(&o.setFiles, "set-file", nil, "runbook param name=PATH: the value is the file's content (one trailing newline dropped); repeatable. NKSRUN_SET_<NAME> in the environment also sets a param")
	fs.DurationVar(&o.timeout, "timeout", 0, "limit for the whole run (0 = none); Ctrl-C/SIGTERM also cancel cleanly")
	fs.IntVar(&o.maxFailures, "max-failures", 0, "stop starting new nodes once this many failed or were unreachable (0 = no limit)")
	fs.StringVar(&o.logFormat, "log-format", "text", "progress/log events on stderr (or --log-file): text or json (one object per line)")
	fs.StringVar(&o.logFile, "log-file", "", "write log events to this file (reopened on SIGHUP, for logrotate)")
	fs.StringVar(&o.metricsFile, "metrics-file", "", "write Prometheus textfile-collector metrics here at the end of the run")
	fs.BoolVarP(&o.verbose, "verbose", "v", false, "per-node event lines on stderr and every node of a group listed")
	runbookDirFlag(fs, o)
}

func planFlags(fs *pflag.FlagSet, o *options) {
	clusterFlags(fs, o)
	manyContexts(fs)
	sshFlags(fs, o)
	runFlags(fs, o)
	fs.StringVar(&o.out, "out", "", "save the plan file (JSON) for \"nksrun apply FILE\" and \"nksrun show FILE\" (one cluster: refused with several contexts)")
	outputFlag(fs, o, "text, markdown (for change reviews), json or yaml")
	fs.BoolVar(&o.detailedExitcode, "detailed-exitcode", false, "exit 0 = no changes, 1 = error, 2 = changes pending (several clusters: 1 if any had an error, else 2 if any has changes)")
	signFlags(fs, o)
}

func applyFlags(fs *pflag.FlagSet, o *options) {
	clusterFlags(fs, o)
	sshFlags(fs, o)
	rootShellFlag(fs, o)
	runFlags(fs, o)
	outputFlag(fs, o, "text, markdown, json or yaml (json and yaml: the apply report only)")
	fs.BoolVar(&o.autoApprove, "auto-approve", false, "do not ask for confirmation (cron, CI); without a terminal apply refuses unless this is set. Over more nodes than --forks (runbooks without cluster steps), each node is then applied as soon as it is planned: at most --forks connections open")
	fs.DurationVar(&o.maxPlanAge, "max-plan-age", 24*time.Hour, "refuse a saved plan older than this (0 = no limit)")
	fs.StringVar(&o.lockFile, "lock-file", "", "lock that keeps two applies from overlapping (default one per runbook: ~/.cache/nksrun/RUNBOOK.lock, else $XDG_RUNTIME_DIR/nksrun)")
	fs.BoolVar(&o.noLock, "no-lock", false, "do not take the lock")
	verifyFlags(fs, o)
	fs.StringVar(&o.onStale, "on-stale", "continue", "a saved plan whose target changed since: continue (refuse that target, apply the others) or stop (re-check everything first; apply nothing if any target is stale)")
}

func showFlags(fs *pflag.FlagSet, o *options) {
	outputFlag(fs, o, "text, markdown, json or yaml")
}

func inventoryFlags(fs *pflag.FlagSet, o *options) {
	clusterFlags(fs, o)
	fs.StringVar(&o.user, "user", "", "SSH user for every node (default: from the node's OS image)")
	outputFlag(fs, o, "text, json or yaml")
}

func doctorFlags(fs *pflag.FlagSet, o *options) {
	clusterFlags(fs, o)
	manyContexts(fs)
	sshFlags(fs, o)
	runFlags(fs, o)
	outputFlag(fs, o, "text, markdown, json or yaml")
	fs.BoolVar(&o.detailedExitcode, "detailed-exitcode", false, "exit 0 = no problem found, 1 = error, 2 = a problem was found (several clusters: the worst of them)")
}

// outputFlag is -o/--output, as in kubectl. --format, its old name, is kept
// hidden so that scripts written for it keep working.
func outputFlag(fs *pflag.FlagSet, o *options, values string) {
	fs.StringVarP(&o.format, "output", "o", "text", "output format: "+values)
	fs.StringVar(&o.format, "format", "text", "old name of --output")
	_ = fs.MarkHidden("format")
}

// runbookDirFlag is where runbook names are looked up before the built-in ones.
func runbookDirFlag(fs *pflag.FlagSet, o *options) {
	fs.StringVar(&o.runbookDir, "runbook-dir", "", "look runbook names up in this directory before the built-in runbooks (env NKSRUN_RUNBOOK_DIR)")
}

func validateFlags(fs *pflag.FlagSet, o *options) {
	runbookDirFlag(fs, o)
	outputFlag(fs, o, "text, json or yaml")
}
