package cli

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/spf13/pflag"
	"k8s.io/client-go/tools/clientcmd"
)

// Many clusters in one run (plan and doctor): --context repeated, or
// --all-contexts. Everything else works on one cluster at a time.

// manyClusterCommands take several contexts.
var manyClusterCommands = []string{"plan", "doctor"}

// many reports whether this run covers several clusters. --all-contexts
// always does, even when the kubeconfig has one context, so that a script
// gets the grouped shape whatever the kubeconfig holds.
func (o *options) many() bool { return o.allContexts || len(o.contexts) > 1 }

// checkContexts refuses, before anything is contacted, what several
// clusters cannot mean: a one-cluster command, a static inventory, a saved
// plan (it belongs to one cluster), a context given twice.
func (a *app) checkContexts(cmd *command, fs *pflag.FlagSet) error {
	o := &a.opts
	if o.allContexts && fs.Changed("context") {
		return usageError{"--context and --all-contexts: give one or the other"}
	}
	if o.allContexts {
		// The config file's or environment's context is a default for one
		// cluster; --all-contexts replaces it.
		o.contexts = nil
	}
	seen := map[string]bool{}
	for _, c := range o.contexts {
		if c == "" {
			return usageError{"--context \"\": want a context name"}
		}
		if seen[c] {
			return usageError{fmt.Sprintf("--context %q given twice", c)}
		}
		seen[c] = true
	}
	if !o.many() {
		return nil
	}
	if !slices.Contains(manyClusterCommands, cmd.name) {
		if cmd.name == "apply" {
			return usageError{"apply works on one cluster at a time: review and apply each cluster's plan (nksrun plan takes several --context; apply one --context at a time)"}
		}
		return usageError{fmt.Sprintf("%s works on one cluster at a time: give one --context (only plan and doctor take several, or --all-contexts)", cmd.name)}
	}
	if o.inventory != "" {
		return usageError{"--inventory is one static set of nodes: it does not combine with several contexts"}
	}
	if o.out != "" {
		return usageError{"--out saves one cluster's plan (a saved plan belongs to one cluster): with several contexts, plan each cluster with its own --context and --out"}
	}
	return nil
}

// clusterRef is one cluster of a many-cluster run: its kubeconfig context
// and the API server that context names ("" when the kubeconfig's cluster
// entry is missing: the run reports that as the cluster's error).
type clusterRef struct {
	context string
	server  string
	problem string // what is wrong with the context's kubeconfig entries
}

// resolveContexts reads the kubeconfig (contacts nothing) and returns the
// clusters of a many-cluster run: the --context names in the order given,
// or every context sorted by name. An unknown name is refused with a
// suggestion, before any cluster is contacted.
func (a *app) resolveContexts() ([]clusterRef, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if a.opts.kubeconfig != "" {
		rules.ExplicitPath = a.opts.kubeconfig
	}
	cfg, err := rules.Load()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	var known []string
	for name := range cfg.Contexts {
		known = append(known, name)
	}
	sort.Strings(known)
	names := a.opts.contexts
	if a.opts.allContexts {
		if len(known) == 0 {
			return nil, usageError{"--all-contexts: the kubeconfig has no contexts (pass --kubeconfig, set $KUBECONFIG or create ~/.kube/config)"}
		}
		names = known
	}
	var unknown []string
	for _, n := range names {
		if _, ok := cfg.Contexts[n]; !ok {
			msg := fmt.Sprintf("%q", n)
			if s := suggest(n, known); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			unknown = append(unknown, msg)
		}
	}
	if len(unknown) > 0 {
		return nil, usageError{fmt.Sprintf("--context: no context %s in the kubeconfig (it has: %s)", strings.Join(unknown, ", "), strings.Join(known, ", "))}
	}
	refs := make([]clusterRef, len(names))
	for i, n := range names {
		refs[i] = clusterRef{context: n}
		kc := cfg.Contexts[n]
		if c := cfg.Clusters[kc.Cluster]; c != nil {
			refs[i].server = c.Server
		} else {
			refs[i].problem = fmt.Sprintf("kubeconfig: context %q names cluster %q, which the kubeconfig does not have", n, kc.Cluster)
		}
		if _, ok := cfg.AuthInfos[kc.AuthInfo]; kc.AuthInfo != "" && !ok && refs[i].problem == "" {
			refs[i].problem = fmt.Sprintf("kubeconfig: context %q names user %q, which the kubeconfig does not have", n, kc.AuthInfo)
		}
	}
	return refs, nil
}
